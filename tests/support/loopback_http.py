"""The plumbing our fake outside services share: a threaded HTTP/1.1 server on 127.0.0.1 that hands every
request to one function, `handle(request_handler, method)`, which answers it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# stop() (shutdown) waits up to one poll interval of the serving thread.
POLL_INTERVAL_S = 0.05


class LoopbackServer:
    def __init__(self, handle: Callable[[BaseHTTPRequestHandler, str], None], *, methods: Iterable[str],
                 name: str) -> None:
        self._handle, self._methods, self._name = handle, tuple(methods), name
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        assert self._server is not None, f"start() the {self._name} first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, port: int = 0) -> LoopbackServer:
        handle = self._handle

        def method_of(verb: str) -> Callable[[BaseHTTPRequestHandler], None]:
            return lambda request: handle(request, verb)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

        for verb in self._methods:
            setattr(Handler, f"do_{verb}", method_of(verb))
        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": POLL_INTERVAL_S},
                                        name=self._name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._server is not None
