"""The one SSRF guard every HTTP keyword goes through (GET/POST/PUT/PATCH/DELETE HTTP/GRAPHQL/SOAP).

Scripts are written by tenant admins and run inside our network, so a URL must never reach loopback,
private, link-local (cloud metadata lives at 169.254.169.254), multicast, reserved or unspecified
addresses, nor a metadata host name. Besides Python's address properties, `_DENIED_NETWORKS` lists the
special-purpose ranges explicitly (their tables differ between Python patch releases). Every address a host
name resolves to is checked, and redirects are followed by hand so each hop is checked again (urllib's
automatic redirects would bypass it); a redirect to another origin drops the credential headers
(Authorization, Cookie) a script set.

DNS rebinding: checking a URL and then letting a client library connect resolves the name twice, and a name
whose DNS answers a public address to the check and 127.0.0.1 (or 169.254.169.254) to the connection got
through. So a connection is made only to an address checked in the same resolution: `resolve_checked(host,
port)` resolves once and checks every address, `connect_checked` connects to one of those addresses (never
to the name), and `fetch` (each hop of it) connects that way; TLS (SNI, the certificate check) and the Host
header keep the name. The other outbound paths to hosts a tenant chooses (a bot's `llm-url`, `embedding-url`,
mail servers) connect through `apps.core.outbound`, which uses the same two functions. `fetch` ignores the
HTTP(S)_PROXY environment variables: a proxy would resolve the name again itself, on its side of the network.

A header name or value that would change the request's framing (a line break, a ':' or a space in a name) or
that HTTP cannot carry (a value outside Latin-1) is refused before anything is sent, naming the header
(`RequestHeaderError`); http.client raised a bare ValueError for it.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import re
import socket
import urllib.error
import urllib.parse
import urllib.request

from apps.basic.limits import HTTP_TIMEOUT_SECONDS, MAX_HTTP_REDIRECTS, MAX_HTTP_RESPONSE_BYTES

# Host names that resolve to instance metadata on the common clouds.
_BLOCKED_NAMES = frozenset({"localhost", "metadata", "metadata.google.internal", "metadata.goog",
                            "instance-data", "instance-data.ec2.internal"})
_ALLOWED_SCHEMES = frozenset({"http", "https"})


class SSRFError(ValueError):
    """The URL points somewhere a script must not reach."""


class SSRFResolveError(SSRFError):
    """The URL's host could not be resolved (now): nothing is known about where it points. Still an SSRFError
    (the request is refused), but callers that retry may treat it as temporary (a DNS outage, EAI_AGAIN)."""


class RequestHeaderError(SSRFError):
    """A request header a script set cannot be sent as it is (a line break would inject headers): the request
    is refused before anything is sent."""


# NAT64's well-known prefix (RFC 6052): its last 32 bits are the IPv4 address a NAT64 gateway connects to.
_NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and reaches through a gateway: mapped (::ffff:a.b.c.d), 6to4
    (2002::/16), Teredo (2001::/32, its client) or NAT64 (64:ff9b::/96)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64_PREFIX:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


# Refused whatever Python's `is_global` says: its address tables changed between patch releases (CVE-2024-4032;
# on 3.11.7 192.0.0.192, Oracle Cloud's metadata address, and site-local fec0::/10 counted as global) and they
# list a few special-purpose ranges as global that no script has any business reaching.
_DENIED_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # private
    "100.64.0.0/10",  # shared address space (carrier NAT; Alibaba Cloud metadata is 100.100.100.200)
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local (cloud metadata 169.254.169.254)
    "192.0.0.0/24",  # IETF protocol assignments (Oracle Cloud metadata 192.0.0.192)
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",  # documentation
    "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
    "198.18.0.0/15",  # benchmarking
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, and the broadcast 255.255.255.255
    "::/8",  # unspecified, loopback, IPv4-compatible, local-use NAT64 64:ff9b:1::/48 (mapped and the
    #          well-known NAT64 prefix are checked as the IPv4 address they carry, before this)
    "100::/64",  # discard-only
    "2001::/23",  # IETF protocol assignments (Teredo is checked as its client's IPv4 address, before this)
    "2001:db8::/32", "3fff::/20",  # documentation
    "5f00::/16",  # segment routing (SRv6) identifiers
    "fc00::/7",  # unique local (AWS metadata over IPv6 is fd00:ec2::254)
    "fe80::/10",  # link-local
    "fec0::/10",  # site-local (deprecated, still routed inside some networks)
    "ff00::/8",  # multicast
))


def _check_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, host: str) -> None:
    if isinstance(ip, ipaddress.IPv6Address) and (embedded := _embedded_ipv4(ip)) is not None:
        ip = embedded  # a 6to4 or NAT64 route would take the request to this IPv4 address
    if (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_reserved
            or ip.is_unspecified or not ip.is_global or any(ip in net for net in _DENIED_NETWORKS)):
        raise SSRFError(f"address {ip} of '{host}' is not a public address")


def _check_name(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The checks that need no resolver: a blocked name raises; a literal address (in any form the resolver reads
    as one) is checked and returned. None: `host` is a name, to be resolved."""
    if host in _BLOCKED_NAMES or host.endswith(".localhost") or host.endswith(".internal"):
        raise SSRFError(f"host '{host}' is not allowed")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:  # checked outside the try: SSRFError is a ValueError (a refused IPv6 literal passed)
        _check_ip(literal, host)
        return literal
    # Forms like "2130706433" or "0x7f.1" are IPv4 to the resolver; inet_aton catches them.
    try:
        packed = socket.inet_aton(host)
    except OSError:
        return None
    address = ipaddress.IPv4Address(packed)
    _check_ip(address, host)
    return address


def _host_name(host: str) -> str:
    """A host as the checks compare it: lower case, without a trailing dot or an IPv6 literal's brackets."""
    name = host.strip().rstrip(".").lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name


def resolve_checked(host: str, port: int) -> list[tuple[socket.AddressFamily, tuple]]:
    """Resolve `host` once and check every address it has (one refused address refuses the host); returns
    (family, socket address) pairs in the resolver's order. Connect only to these, never to the name again (a
    second lookup may answer something else: DNS rebinding). A literal address is checked as itself, with no
    lookup. Raises SSRFError; SSRFResolveError when the name does not resolve (now)."""
    name = _host_name(host)
    if not name:
        raise SSRFError("the URL has no host")
    literal = _check_name(name)
    if literal is not None:
        if literal.version == 4:
            return [(socket.AF_INET, (str(literal), port))]
        return [(socket.AF_INET6, (str(ipaddress.IPv6Address(int(literal))), port, 0, 0))]
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise SSRFResolveError(f"cannot resolve host '{name}': {exc}") from None
    except UnicodeError as exc:  # a host no resolver could take (malformed IDNA): the value is wrong
        raise SSRFError(f"cannot resolve host '{name}': {exc}") from None
    addresses: list[tuple[socket.AddressFamily, tuple]] = []
    for family, _type, _proto, _canonical, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise SSRFError(f"host '{name}' resolves to a non-IP address")
        _check_ip(ipaddress.ip_address(sockaddr[0]), name)
        if (family, sockaddr) not in addresses:
            addresses.append((family, sockaddr))
    if not addresses:
        raise SSRFResolveError(f"cannot resolve host '{name}': no address")
    return addresses


def connect_checked(host: str, port: int, timeout: object = socket._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
                    source_address: tuple[str, int] | None = None) -> socket.socket:
    """A TCP connection to `host`:`port` made only to an address `resolve_checked` checked, trying them in turn
    (as socket.create_connection does); the arguments are socket.create_connection's. Raises SSRFError when the
    host is refused, OSError when no checked address accepts the connection."""
    error: OSError | None = None
    for _family, sockaddr in resolve_checked(host, port):
        try:
            # A numeric address: create_connection looks nothing up, it connects to this very address.
            return socket.create_connection(sockaddr[:2], timeout, source_address)
        except OSError as exc:
            error = exc
    assert error is not None  # resolve_checked returns at least one address
    raise error


def check_url(url: str, resolve: bool = True) -> str:
    """Raise SSRFError unless `url` is an http(s) URL whose host is public; returns the host.

    A passed check says where the name pointed then: connect with `connect_checked` (or the adapters of
    apps.core.outbound), which checks the addresses it connects to."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise SSRFError(f"invalid URL: {exc}") from None
    if parts.scheme.lower() not in _ALLOWED_SCHEMES:
        raise SSRFError(f"only http and https URLs are allowed, not '{parts.scheme or url}'")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise SSRFError("the URL has no host")
    if resolve:
        resolve_checked(host, parts.port or 443)
    else:
        _check_name(host)
    return host


# Request headers that carry credentials: not sent on to another origin after a redirect (browsers and requests
# drop them too), or a script's `SET HEADER "Authorization"` for one API would be handed to whatever host
# that API redirects to.
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").rstrip(".").lower(), port


def _keeps_credentials(first: str, target: str) -> bool:
    """May a redirect from `first` (the URL the script asked for) to `target` keep the credential headers: the
    same origin, or the same host upgraded from http to https on the default ports (as requests allows)."""
    old, new = _origin(first), _origin(target)
    return old == new or (old[1] == new[1] and old[0] == "http" and old[2] == 80
                          and new[0] == "https" and new[2] == 443)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None  # handled by fetch() so every hop is checked


def _create_checked_connection(address: tuple[str, int], timeout: object = socket._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
                               source_address: tuple[str, int] | None = None) -> socket.socket:
    return connect_checked(address[0], address[1], timeout, source_address)


class _CheckedHTTPConnection(http.client.HTTPConnection):
    """Connects to an address checked in the same resolution (`connect_checked`); the Host header keeps the name."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._create_connection = _create_checked_connection


class _CheckedHTTPSConnection(http.client.HTTPSConnection):
    """The same for https: the socket goes to the checked address, TLS verifies the certificate for the name
    (and sends it as SNI): http.client wraps the socket with `server_hostname=self.host`, the URL's host."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._create_connection = _create_checked_connection


class _CheckedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):  # type: ignore[no-untyped-def]
        return self.do_open(_CheckedHTTPConnection, req)


class _CheckedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):  # type: ignore[no-untyped-def]
        return self.do_open(_CheckedHTTPSConnection, req, context=self._context)


# What http.client accepts (it raises a bare ValueError otherwise): a name of visible characters without ':',
# a value without line breaks (nor NUL, which servers split on), both encodable as Latin-1.
_HEADER_NAME_RE = re.compile(r"[!-9;-~]+")
_HEADER_VALUE_BAD_RE = re.compile(r"[\r\n\0]")


def _check_headers(headers: dict[str, str]) -> None:
    for name, value in headers.items():
        if not _HEADER_NAME_RE.fullmatch(name):
            raise RequestHeaderError(f"header name {name!r} is not valid (letters, digits and punctuation other "
                                     "than ':', no spaces or line breaks)")
        if _HEADER_VALUE_BAD_RE.search(value):
            raise RequestHeaderError(f"the value of header {name!r} contains a line break or NUL character")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise RequestHeaderError(f"the value of header {name!r} has characters HTTP headers cannot carry "
                                     "(outside Latin-1)") from None


def fetch(method: str, url: str, data: object = None, headers: dict | None = None,
          timeout: float = HTTP_TIMEOUT_SECONDS) -> dict:
    """Perform an HTTP request through the guard; returns {status, headers, data} (data parsed if JSON).

    Every hop connects only to an address checked in that hop's resolution, directly (no HTTP(S)_PROXY)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect, _CheckedHTTPHandler,
                                         _CheckedHTTPSHandler)
    body: bytes | None = None
    hdrs = {str(k): str(v) for k, v in (headers or {}).items()}
    _check_headers(hdrs)
    if data is not None and method not in ("GET", "DELETE"):
        if isinstance(data, dict | list):
            body = json.dumps(data).encode()
            hdrs.setdefault("Content-Type", "application/json")
        else:
            body = str(data).encode()
    first_url = url
    for _ in range(MAX_HTTP_REDIRECTS + 1):
        check_url(url)
        req = urllib.request.Request(url, data=body, method=method, headers=hdrs)  # noqa: S310 - guarded
        try:
            resp = opener.open(req, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code in (301, 302, 303, 307, 308) and exc.headers.get("Location"):
                url = urllib.parse.urljoin(url, exc.headers["Location"])
                if not _keeps_credentials(first_url, url):
                    hdrs = {k: v for k, v in hdrs.items() if k.lower() not in _CREDENTIAL_HEADERS}
                if exc.code == 303:
                    method, body = "GET", None
                continue
            raise
        with resp:
            raw = resp.read(MAX_HTTP_RESPONSE_BYTES + 1)
            if len(raw) > MAX_HTTP_RESPONSE_BYTES:
                raise SSRFError(f"response larger than {MAX_HTTP_RESPONSE_BYTES} bytes")
            text = raw.decode(resp.headers.get_content_charset() or "utf-8", "replace")
            try:
                parsed: object = json.loads(text)
            except ValueError:
                parsed = text
            return {"status": resp.status, "headers": dict(resp.headers.items()), "data": parsed}
    raise SSRFError(f"more than {MAX_HTTP_REDIRECTS} redirects")
