"""OIDC_TIMEOUT bounds a call to an https provider as a whole: the deadline must end the TLS connection itself.

The deadline shut down the plain TCP socket urllib3 opened, which TLS wrapping detaches from the connection (its
descriptor moves to the SSL socket): on https the shutdown failed silently and a provider trickling its answer
held the call as long as it liked. Tenant providers must be https, so this is the case that matters. The
provider here is a real TLS server on loopback with a certificate from a test CA, trickling its answer.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

import pytest

from apps.accounts import oidc
from tests.support.rebinding import tls_files

# The answer's body, sent a byte every BYTE_DELAY_S: 400 bytes take 40 s, far past the 1 s timeout.
BODY = b'{"keys": [' + b" " * 380 + b"]}"
BYTE_DELAY_S = 0.1
TIMEOUT_S = 1


class _TricklingTLSServer:
    """Answers each request over TLS with a 200 whose bytes come one at a time, until the client goes."""

    def __init__(self, cert: str, key: str) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.bytes_sent = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(raw,), daemon=True).start()

    def _answer(self, raw: socket.socket) -> None:
        try:
            with self.context.wrap_socket(raw, server_side=True) as conn:
                conn.recv(65536)
                answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(BODY)) + BODY
                for byte in answer:
                    conn.sendall(bytes([byte]))
                    self.bytes_sent += 1
                    time.sleep(BYTE_DELAY_S)
        except OSError:
            return  # the client went (its deadline): what this test wants

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("trusted", [True, False], ids=["platform-provider", "tenant-provider"])
def test_a_provider_trickling_its_answer_over_https_fails_within_the_timeout(tmp_path, settings, monkeypatch,
                                                                             trusted):
    ca, cert, key = tls_files(tmp_path, "localhost")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
    settings.OIDC_TIMEOUT = TIMEOUT_S
    settings.OIDC_ALLOW_PRIVATE_HOSTS = True  # a tenant's provider on loopback: checked only by the deadline here
    server = _TricklingTLSServer(str(cert), str(key))
    try:
        with pytest.raises(oidc.OidcProviderUnavailable, match=f"did not answer within {TIMEOUT_S:g} s"):
            oidc._get_json(f"https://localhost:{server.port}/jwks", "key set", trusted=trusted)
        # Cut off at the deadline: far from the whole answer (the old code read all of it, then went on).
        assert server.bytes_sent < len(BODY)
    finally:
        server.close()
