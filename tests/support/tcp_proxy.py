"""A TCP forwarder on a loopback port that a test can cut and restore: a storage outage on demand.

Put between a client and a real server (SeaweedFS's S3 gateway), it forwards bytes both ways until the test
cuts it. Cut "refuse": the listening socket is closed and every live connection dropped, so new connections
are refused (what a server that went down looks like: botocore's EndpointConnectionError). Cut "503": live
connections are dropped and every new request is answered `503 Slow Down` with S3's XML error body, without
reaching the server (an overloaded or failing gateway). `restore()` forwards again, on the same port.

Protocol-agnostic except for the "503" answer, which reads one HTTP request's head (and body, by its
Content-Length) per connection and closes it after answering.
"""

from __future__ import annotations

import contextlib
import socket
import threading

# How often the accept loop looks up from accept() to notice a cut or a close.
ACCEPT_POLL_S = 0.05
RECV_BYTES = 64 * 1024
# The largest request head the "503" answer reads before giving up on a connection.
HEAD_MAX_BYTES = 64 * 1024
SLOW_DOWN_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
                  b"<Message>Please reduce your request rate.</Message></Error>")
MODES = ("forward", "refuse", "503")


class TcpProxy:
    """Forwards 127.0.0.1:<port> to (target_host, target_port); start() first, close() at the end."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.mode = "forward"
        # Requests answered 503 since the proxy started (the "503" cut).
        self.answered_503 = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self._live: set[socket.socket] = set()
        self._closed = False

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        self._listen()
        return self

    def cut(self, mode: str = "refuse") -> None:
        """Drop every live connection; then refuse new ones ("refuse") or answer them 503 ("503")."""
        if mode not in MODES[1:]:
            raise ValueError(f"cut mode must be 'refuse' or '503', not {mode!r}")
        with self._lock:
            self.mode = mode
        if mode == "refuse":
            self._stop_listening()
        self._drop_live()

    def restore(self) -> None:
        """Forward again (listening again on the same port after a "refuse" cut)."""
        with self._lock:
            self.mode = "forward"
        if self._listener is None:
            self._listen()

    def close(self) -> None:
        self._closed = True
        self._stop_listening()
        self._drop_live()

    # --- internals ---------------------------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # The same port again after a cut, with the cut's connections still in TIME_WAIT.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(ACCEPT_POLL_S)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._accepting = threading.Thread(target=self._accept_loop, args=(listener,), daemon=True,
                                           name=f"tcp-proxy-{self.port}")
        self._accepting.start()

    def _stop_listening(self) -> None:
        listener, accepting = self._listener, self._accepting
        self._listener = self._accepting = None
        if listener is not None:
            listener.close()
        if accepting is not None:
            accepting.join(timeout=5)

    def _drop_live(self) -> None:
        with self._lock:
            live, self._live = self._live, set()
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _track(self, *socks: socket.socket) -> bool:
        """Register sockets as live; False (and closed) when a cut came in meanwhile."""
        with self._lock:
            if self.mode == "forward" and not self._closed:
                self._live.update(socks)
                return True
        for sock in socks:
            sock.close()
        return False

    def _accept_loop(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by a cut or close()
            client.settimeout(None)
            with self._lock:
                mode = self.mode
            handler = self._answer_503 if mode == "503" else self._forward
            threading.Thread(target=handler, args=(client,), daemon=True).start()

    def _forward(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        server.settimeout(None)
        if not self._track(client, server):
            return
        threading.Thread(target=self._pump, args=(server, client), daemon=True).start()
        self._pump(client, server)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(RECV_BYTES):
                sink.sendall(data)
        except OSError:
            pass  # dropped by a cut, or the other side went away
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _answer_503(self, client: socket.socket) -> None:
        with client:
            client.settimeout(5)
            try:
                head = b""
                while b"\r\n\r\n" not in head and len(head) < HEAD_MAX_BYTES:
                    chunk = client.recv(RECV_BYTES)
                    if not chunk:
                        return
                    head += chunk
                header, _, body = head.partition(b"\r\n\r\n")
                lines = header.split(b"\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in lines[1:]
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    chunk = client.recv(RECV_BYTES)
                    if not chunk:
                        break
                    body += chunk
                is_head = lines[0].upper().startswith(b"HEAD ")
                payload = b"" if is_head else SLOW_DOWN_BODY
                client.sendall(b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                               + f"Content-Length: {len(SLOW_DOWN_BODY) if is_head else len(payload)}\r\n".encode()
                               + b"Connection: close\r\n\r\n" + payload)
                with self._lock:
                    self.answered_503 += 1
            except (OSError, ValueError):
                return
