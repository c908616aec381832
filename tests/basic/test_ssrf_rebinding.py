"""DNS rebinding against the HTTP keywords' guard (apps/basic/ssrf.py), and SET HEADER values it cannot send.

The resolver answers a public address to the check and 127.0.0.1 to the connection, where a honeypot plays the
cloud metadata service. `ssrf.fetch` connects only to an address checked in the same resolution, so the
honeypot is never reached; a name that resolves consistently to a public address still works, TLS included
(the certificate is checked for the name while the socket goes to the checked address).
"""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator

import pytest

from apps.basic import ssrf
from apps.basic.host import InMemoryHost
from tests.basic.conftest import run
from tests.support.rebinding import LOOPBACK, PUBLIC_ADDRESS, Honeypot, Resolver, Route, tls_files

REBINDING = [PUBLIC_ADDRESS, LOOPBACK]  # first lookup (the check), then every later one (the connection)


@pytest.fixture
def honeypot() -> Iterator[Honeypot]:
    with Honeypot("http") as pot:
        yield pot


class _Server:
    """A real HTTP(S) server on loopback, standing for a public site reached through `Route`; records requests
    (path, Host header) and, with TLS, the name the client sent as SNI."""

    def __init__(self, routes: dict[str, tuple[int, dict[str, str], bytes]],
                 tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[tuple[str, str]] = []
        self.sni: list[str | None] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                server.requests.append((self.path, self.headers.get("Host", "")))
                status, headers, body = routes.get(self.path, (404, {}, b"not here"))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: self.sni.append(name)
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_name_rebinding_to_loopback_between_check_and_connect_is_refused(monkeypatch, honeypot) -> None:
    resolver = Resolver(monkeypatch, {"meta.rebind.test": REBINDING})
    with pytest.raises(ssrf.SSRFError, match=r"address 127\.0\.0\.1 of 'meta\.rebind\.test' is not a public address"):
        ssrf.fetch("GET", f"http://meta.rebind.test:{honeypot.port}/latest/meta-data")
    assert honeypot.hits == []
    assert resolver.lookups == ["meta.rebind.test", "meta.rebind.test"]  # the check's, then the connection's


def test_a_redirect_hop_rebinding_to_loopback_is_refused(monkeypatch, honeypot) -> None:
    """Each hop is checked, and each hop's connection goes only to an address checked when connecting."""
    target = f"http://hop.rebind.test:{honeypot.port}/latest/meta-data"
    with _Server({"/start": (302, {"Location": target}, b"")}) as public:
        Resolver(monkeypatch, {"start.public.test": [PUBLIC_ADDRESS], "hop.rebind.test": REBINDING})
        Route(monkeypatch, {(PUBLIC_ADDRESS, public.port): (LOOPBACK, public.port)})
        with pytest.raises(ssrf.SSRFError, match=r"address 127\.0\.0\.1 of 'hop\.rebind\.test'"):
            ssrf.fetch("GET", f"http://start.public.test:{public.port}/start")
    assert public.requests == [("/start", f"start.public.test:{public.port}")]
    assert honeypot.hits == []


def test_a_script_get_of_a_rebinding_name_is_a_refused_request(monkeypatch, honeypot) -> None:
    """Through BASIC: the VM checks the URL, `fetch` checks it again, the connection resolves a third time."""
    Resolver(monkeypatch, {"meta.rebind.test": [PUBLIC_ADDRESS, PUBLIC_ADDRESS, LOOPBACK]})
    url = f"http://meta.rebind.test:{honeypot.port}/latest/meta-data"
    result = run(f'x = GET "{url}"\nTALK x', host=InMemoryHost(allow_network=True)).result
    assert result.status == "error"
    assert "refused" in result.error["message"] and "127.0.0.1" in result.error["message"]
    assert honeypot.hits == []


def test_a_name_resolving_consistently_to_a_public_address_still_connects(monkeypatch) -> None:
    with _Server({"/data": (200, {"Content-Type": "application/json"}, b'{"ok": true}')}) as public:
        resolver = Resolver(monkeypatch, {"api.public.test": [PUBLIC_ADDRESS]})
        route = Route(monkeypatch, {(PUBLIC_ADDRESS, public.port): (LOOPBACK, public.port)})
        result = ssrf.fetch("GET", f"http://api.public.test:{public.port}/data")
    assert result["status"] == 200 and result["data"] == {"ok": True}
    assert public.requests == [("/data", f"api.public.test:{public.port}")]  # the Host header keeps the name
    assert route.connects == [(PUBLIC_ADDRESS, public.port)]  # the checked address, nothing else
    assert resolver.lookups == ["api.public.test", "api.public.test"]


def test_https_to_a_checked_address_verifies_the_certificate_for_the_name(monkeypatch, tmp_path) -> None:
    ca_file, cert_file, key_file = tls_files(tmp_path, "api.public.test")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert_file, key_file)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # the client's default context trusts the test CA
    with _Server({"/data": (200, {}, b"secure")}, tls=server_tls) as public:
        Resolver(monkeypatch, {"api.public.test": [PUBLIC_ADDRESS], "other.public.test": [PUBLIC_ADDRESS]})
        Route(monkeypatch, {(PUBLIC_ADDRESS, public.port): (LOOPBACK, public.port)})
        assert ssrf.fetch("GET", f"https://api.public.test:{public.port}/data")["data"] == "secure"
        # The same address under a name the certificate does not cover: verification is for the name.
        with pytest.raises(OSError, match="certificate"):
            ssrf.fetch("GET", f"https://other.public.test:{public.port}/data")
    assert public.sni[0] == "api.public.test"
    assert public.requests == [("/data", f"api.public.test:{public.port}")]


@pytest.mark.parametrize(("header", "shown"), [
    ('"X-Test", "a" + CHR(13) + CHR(10) + "Host: evil"', "the value of header 'X-Test' contains a line break"),
    ('"X-Test" + CHR(10) + "Host", "evil"', "header name 'X-Test\\nHost' is not valid"),
    ('"X-Test", "price " + CHR(8364)', "the value of header 'X-Test' has characters HTTP headers cannot carry"),
])
def test_a_header_http_cannot_send_is_a_script_error_naming_it(monkeypatch, header: str, shown: str) -> None:
    route = Route(monkeypatch, {})  # records connections; there must be none
    result = run(f'SET HEADER {header}\nx = GET "http://{PUBLIC_ADDRESS}/api"',
                 host=InMemoryHost(allow_network=True)).result
    assert result.status == "error"
    assert shown in result.error["message"] and "internal error" not in result.error["message"]
    assert route.connects == []  # refused before connecting
