"""The SSRF guard's address ranges and what `ssrf.fetch` sends on a redirect (apps/basic/ssrf.py)."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from apps.basic import ssrf


@pytest.mark.parametrize("url", [
    # Counted as global by Python 3.11.7's tables (before the CVE-2024-4032 fix).
    "http://192.0.0.192/", "http://192.0.0.8/", "http://[fec0::1]/", "http://[fef0::1]/",
    # Special-purpose ranges refused whatever the Python version says.
    "http://100.64.0.1/", "http://100.100.100.200/", "http://198.18.0.1/", "http://198.19.255.254/",
    "http://240.0.0.1/", "http://255.255.255.255/", "http://0.1.2.3/", "http://192.88.99.1/",
    "http://192.0.2.1/", "http://198.51.100.7/", "http://203.0.113.9/", "http://224.0.0.1/",
    "http://[ff02::1]/", "http://[ff0e::1]/", "http://[fd00:ec2::254]/", "http://[fe80::1]/", "http://[3fff::1]/",
    "http://[2001:db8::1]/", "http://[100::1]/", "http://[::127.0.0.1]/", "http://[64:ff9b:1::a00:1]/",
    "http://[5f00::1]/", "http://[2001:2::1]/",
    # IPv4 inside IPv6 is checked as the IPv4 address it reaches.
    "http://[::ffff:192.0.0.192]/", "http://[64:ff9b::c000:c0]/", "http://[2002:c000:c0::]/",
    "http://[64:ff9b::6440:1]/",
])
def test_special_purpose_addresses_are_refused(url: str) -> None:
    with pytest.raises(ssrf.SSRFError, match="not a public address"):
        ssrf.check_url(url)  # a literal address resolves to itself, offline
    # Without resolving too: a refused IPv6 literal raised SSRFError, a ValueError, inside `except ValueError`.
    with pytest.raises(ssrf.SSRFError, match="not a public address"):
        ssrf.check_url(url, resolve=False)


@pytest.mark.parametrize("url, host", [
    ("https://93.184.216.34/x", "93.184.216.34"), ("http://1.1.1.1/", "1.1.1.1"),
    ("http://192.0.1.1/", "192.0.1.1"), ("http://100.128.0.1/", "100.128.0.1"), ("http://198.20.0.1/", "198.20.0.1"),
    ("https://[2606:4700:4700::1111]/", "2606:4700:4700::1111"), ("http://[64:ff9b::5db8:d822]/", "64:ff9b::5db8:d822"),
])
def test_public_addresses_are_accepted(url: str, host: str) -> None:
    assert ssrf.check_url(url, resolve=False) == host


class _Recorder(http.server.BaseHTTPRequestHandler):
    """GET /go?<url> redirects there; any other path answers 200 and records the request's headers."""

    seen: list[tuple[int, str, dict[str, str]]]

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        if self.path.startswith("/go?"):
            self.send_response(302)
            self.send_header("Location", self.path[len("/go?"):])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.seen.append((self.server.server_address[1], self.path, {k.lower(): v for k, v in self.headers.items()}))
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def two_servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[list, int, int]]:
    seen: list = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) for _ in range(2)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    # Both servers are on loopback, which the guard refuses: accept every URL here, and let the connection go to
    # the address as given (the ranges are tested above, connecting only to checked addresses in
    # test_ssrf_rebinding.py).
    monkeypatch.setattr(ssrf, "check_url", lambda url, resolve=True: "127.0.0.1")
    monkeypatch.setattr(ssrf, "resolve_checked", lambda host, port: [(socket.AF_INET, (host, port))])
    try:
        yield seen, servers[0].server_address[1], servers[1].server_address[1]
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


CREDENTIALS = {"Authorization": "Bearer secret", "Cookie": "sid=1", "Proxy-Authorization": "Basic x",
               "X-Api-Key": "k"}


def test_a_redirect_to_another_origin_drops_the_credential_headers(two_servers: tuple[list, int, int]) -> None:
    seen, a, b = two_servers
    result = ssrf.fetch("GET", f"http://127.0.0.1:{a}/go?http://127.0.0.1:{b}/landed", headers=CREDENTIALS)
    assert result["status"] == 200 and result["data"] == {"ok": True}
    [(port, path, headers)] = seen
    assert (port, path) == (b, "/landed")
    assert "authorization" not in headers and "cookie" not in headers and "proxy-authorization" not in headers
    assert headers["x-api-key"] == "k"  # other headers still go (they are the script's, not credentials)


def test_once_dropped_credentials_stay_dropped_and_same_origin_redirects_keep_them(
        two_servers: tuple[list, int, int]) -> None:
    seen, a, b = two_servers
    back = f"http://127.0.0.1:{a}/home"
    ssrf.fetch("GET", f"http://127.0.0.1:{a}/go?http://127.0.0.1:{b}/go?{back}", headers=CREDENTIALS)
    ssrf.fetch("GET", f"http://127.0.0.1:{a}/go?/same", headers=CREDENTIALS)
    [(_, first_path, first), (_, second_path, second)] = seen
    assert first_path == "/home" and "authorization" not in first and "cookie" not in first
    assert second_path == "/same" and second["authorization"] == "Bearer secret" and second["cookie"] == "sid=1"


def test_only_a_same_host_upgrade_to_https_keeps_credentials() -> None:
    keeps = ssrf._keeps_credentials
    assert keeps("http://api.example.com/a", "https://api.example.com/b")
    assert keeps("https://api.example.com:8443/a", "https://API.example.com:8443/b")
    assert not keeps("https://api.example.com/a", "http://api.example.com/b")
    assert not keeps("https://api.example.com/a", "https://api.example.com:8443/b")
    assert not keeps("https://api.example.com/a", "https://evil.example.net/b")
