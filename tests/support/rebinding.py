"""DNS rebinding, offline: a resolver whose answer changes between lookups, a network route, and honeypots.

* `Resolver(monkeypatch, {"api.rebind.test": ["93.184.216.34", "127.0.0.1"]})` replaces `socket.getaddrinfo`:
  each lookup of a listed name gets the next answer of its list (the last one repeats), which is what a
  rebinding DNS server with a TTL of 0 does; `lookups` records the names asked for. Numeric hosts and other
  names go to the real resolver (a numeric host is never looked up anywhere: it is its own answer).
* `Route(monkeypatch, {("93.184.216.34", 443): ("127.0.0.1", port)})` replaces `socket.socket.connect` so a
  connection to that public address reaches a loopback server instead: the network a positive test needs.
  `connects` records every address a socket connected to (before routing).
* `Honeypot("http" | "smtp" | "imap")`: a loopback listener that counts every connection (`hits`, with what the
  client sent) and answers enough of the protocol for a client to go on: HTTP gets cloud-metadata-like JSON,
  SMTP accepts a whole message, IMAP says OK to everything. Zero hits is the whole point of a rebinding test.
* `tls_files(directory, name)`: a CA and a server certificate for `name` (cryptography), for TLS positive tests
  (set SSL_CERT_FILE to the CA file: OpenSSL's default verify paths and httpx2 read it).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

PUBLIC_ADDRESS = "93.184.216.34"  # what the check sees (example.com's old address: public, never connected to)
LOOPBACK = "127.0.0.1"  # what the connection would get


def _is_numeric(host: object) -> bool:
    if not isinstance(host, str):
        return True  # None, bytes: leave to the real resolver
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


class Resolver:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, answers: Mapping[str, Sequence[str]]) -> None:
        self.answers = {name.lower(): list(values) for name, values in answers.items()}
        self.lookups: list[str] = []
        self._count: dict[str, int] = {}
        self._lock = threading.Lock()
        self._real = socket.getaddrinfo
        monkeypatch.setattr(socket, "getaddrinfo", self.getaddrinfo)

    def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002 - socket's names
        name = host.rstrip(".").lower() if isinstance(host, str) else host
        if _is_numeric(host) or name not in self.answers:
            return self._real(host, port, family, type, proto, flags)
        with self._lock:
            self.lookups.append(name)
            n = self._count.get(name, 0)
            self._count[name] = n + 1
            address = self.answers[name][min(n, len(self.answers[name]) - 1)]
        port_number = int(port) if port not in (None, "") else 0
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port_number))]


class Route:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, routes: Mapping[tuple[str, int], tuple[str, int]]) -> None:
        self.routes = dict(routes)
        self.connects: list[tuple] = []
        real_connect = socket.socket.connect
        route = self

        def connect(sock: socket.socket, address) -> None:  # type: ignore[no-untyped-def]
            if isinstance(address, tuple):
                route.connects.append(tuple(address[:2]))
                address = route.routes.get(tuple(address[:2]), address)
            return real_connect(sock, address)

        monkeypatch.setattr(socket.socket, "connect", connect)


_HTTP_BODY = b'{"Code": "Success", "AccessKeyId": "HONEYPOT", "SecretAccessKey": "leaked"}'


class Honeypot:
    def __init__(self, protocol: str) -> None:
        assert protocol in ("http", "smtp", "imap")
        self.protocol = protocol
        self.hits: list[bytes] = []
        self._lock = threading.Lock()
        self._sock = socket.create_server((LOOPBACK, 0))
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Honeypot:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            index = self._record(b"")
            threading.Thread(target=self._talk, args=(conn, index), daemon=True).start()

    def _record(self, data: bytes, index: int | None = None) -> int:
        with self._lock:
            if index is None:
                self.hits.append(data)
                return len(self.hits) - 1
            self.hits[index] = (self.hits[index] + data)[:65536]
            return index

    def _talk(self, conn: socket.socket, index: int) -> None:
        conn.settimeout(5)
        try:
            with conn, conn.makefile("rwb") as stream:
                if self.protocol == "http":
                    while (line := stream.readline(65536)) not in (b"", b"\r\n", b"\n"):
                        self._record(line, index)
                    stream.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                                 b"Content-Length: " + str(len(_HTTP_BODY)).encode() + b"\r\n\r\n" + _HTTP_BODY)
                elif self.protocol == "smtp":
                    self._smtp(stream, index)
                else:
                    self._imap(stream, index)
                stream.flush()
        except OSError:
            pass

    def _smtp(self, stream, index: int) -> None:  # type: ignore[no-untyped-def]
        stream.write(b"220 honeypot.test ESMTP\r\n")
        stream.flush()
        while line := stream.readline(65536):
            self._record(line, index)
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb == b"DATA":
                stream.write(b"354 go ahead\r\n")
                stream.flush()
                while (body := stream.readline(65536)) not in (b"", b".\r\n"):
                    self._record(body, index)
                stream.write(b"250 2.0.0 queued\r\n")
            elif verb == b"QUIT":
                stream.write(b"221 bye\r\n")
                return
            else:
                stream.write(b"250 honeypot.test\r\n")
            stream.flush()

    def _imap(self, stream, index: int) -> None:  # type: ignore[no-untyped-def]
        stream.write(b"* OK honeypot IMAP4rev1 ready\r\n")
        stream.flush()
        while line := stream.readline(65536):
            self._record(line, index)
            tag, _, rest = line.strip().partition(b" ")
            command = rest.split(b" ", 1)[0].upper()
            if command == b"CAPABILITY":
                stream.write(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n")
            elif command == b"LOGOUT":
                stream.write(b"* BYE\r\n" + tag + b" OK bye\r\n")
                return
            stream.write(tag + b" OK done\r\n")
            stream.flush()


def tls_files(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) files, the server's certificate for `name` only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rebinding test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_file, cert_file, key_file
