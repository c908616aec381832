"""Connections to hosts a tenant chose, made only to addresses the SSRF guard checked in the same resolution.

A bot's `llm-url` / `llm-fallback-url`, `embedding-url`, `email-server` and `imap-server` are checked when its
settings are read (apps.basic.ssrf.check_url: public addresses only). Checking a name and then letting the
client library connect resolves the name twice, and a DNS server answering a public address to the check and
127.0.0.1 or 169.254.169.254 to the connection ("DNS rebinding") got the platform's HTTP and mail clients onto
its own network. The clients made here resolve once when they connect, check every address with the guard's
rules (`ssrf.resolve_checked`: the one implementation) and connect the socket to one of those addresses, while
TLS (SNI and the certificate check), the Host header and the SMTP/IMAP session keep the name:

* `checked_http_client(sdk)` -- an httpx2 client for the `openai` / `anthropic` SDKs (`http_client=`), whose
  connection pool opens sockets through `CheckedBackend` (an httpcore2 backend). It never uses a proxy: with a
  transport of its own, httpx2 ignores HTTP(S)_PROXY / ALL_PROXY, and that is what we want, since a proxy would
  resolve the name again on its side and could reach addresses inside its own network. Where bots' endpoints
  can only be reached through a proxy, the proxy must do the filtering; the operator then sets
  LLM_ALLOW_PRIVATE_HOSTS (nothing is checked here, and the SDKs' default client uses the proxy settings).
* `checked_requests_session()` -- a requests.Session for the tenant's own OIDC provider (apps.accounts.oidc:
  its issuer and the endpoints its discovery document names), whose urllib3 connections open their sockets with
  `ssrf.connect_checked`; it reads no proxy settings from the environment (`trust_env` off) and keeps no cookies
  between calls (a new session per call). OIDC_ALLOW_PRIVATE_HOSTS turns it off.
* `CheckedSMTP`, `CheckedSMTP_SSL` (smtplib) and `checked_imap_client(...)` (an imapclient.IMAPClient): the
  same for mail.

A refused address raises `ssrf.SSRFError` (a ValueError) from the connection attempt; the SDKs pass it on as
it is (openai) or as the cause of their connection error (anthropic): `ssrf_refusal(exc)` finds it.
Used only when the operator has not allowed private hosts (LLM_ALLOW_PRIVATE_HOSTS, MAIL_ALLOW_PRIVATE_HOSTS,
OIDC_ALLOW_PRIVATE_HOSTS) and only for hosts a tenant chose: the platform's own LLM_URL, SMTP_HOST and
OIDC_ISSUER are trusted and connect as before.
Only the synchronous clients are covered: the platform calls the SDKs and mail libraries synchronously.
"""

from __future__ import annotations

import functools
import os
import smtplib
import socket
from collections.abc import Iterable
from typing import Any

import httpcore2
import httpx2
import requests
import urllib3
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.timeout import _DEFAULT_TIMEOUT

from apps.basic import ssrf

# The SDKs' own DefaultHttpxClient limits (openai and anthropic use the same): a client given a transport
# takes the transport's limits, not the client's.
SDK_CONNECTION_LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)


def ssrf_refusal(exc: BaseException | None) -> ssrf.SSRFError | None:
    """The SSRFError behind `exc` (itself, or a cause or context of it), or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ssrf.SSRFError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


class CheckedBackend(httpcore2.SyncBackend):
    """httpcore2's socket backend, connecting only to addresses `ssrf.resolve_checked` checked for the host. The
    connection's TLS layer gets the origin's name from httpcore2 (not the address given here) for SNI and the
    certificate check."""

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore2.NetworkStream:
        error: Exception | None = None
        for _family, sockaddr in ssrf.resolve_checked(host, port):
            try:
                # A numeric address: the base backend's create_connection looks nothing up.
                return super().connect_tcp(sockaddr[0], port, timeout, local_address, socket_options)
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                error = exc  # the next checked address, as create_connection tries each one
        assert error is not None  # resolve_checked returns at least one address
        raise error


def checked_transport(*, limits: httpx2.Limits = SDK_CONNECTION_LIMITS) -> httpx2.HTTPTransport:
    """An httpx2 transport (certificates verified, as by default) whose pool connects through `CheckedBackend`."""
    transport = httpx2.HTTPTransport(limits=limits)
    pool = getattr(transport, "_pool", None)
    # httpx2's HTTPTransport takes no backend argument; its pool (httpcore2.ConnectionPool) does, and reads it
    # whenever it opens a connection. Refuse to run unchecked if a new httpx2 stores it differently.
    if not isinstance(pool, httpcore2.ConnectionPool) or not isinstance(
            getattr(pool, "_network_backend", None), httpcore2.NetworkBackend):
        raise RuntimeError("this httpx2/httpcore2 version does not keep its network backend where "
                           "apps.core.outbound sets it: tenant endpoints cannot be pinned to checked addresses")
    pool._network_backend = CheckedBackend()
    return transport


def checked_http_client(sdk: Any) -> httpx2.Client:
    """`sdk.DefaultHttpxClient` (openai or anthropic: their timeouts) connecting only to checked addresses, not
    following redirects (a public endpoint redirecting to an internal one would get around the check), and not
    using any proxy (see the module docstring)."""
    return sdk.DefaultHttpxClient(follow_redirects=False, transport=checked_transport())


class _CheckedConnectionMixin:
    """urllib3's socket opening (`_new_conn`) through `ssrf.connect_checked`: the socket goes to a checked
    address, while the Host header and, for https, SNI and the certificate check keep the name (urllib3 wraps
    the socket with the connection's host). A refused host raises ssrf.SSRFError (a ValueError: urllib3 and
    requests pass it on as it is, they retry and wrap only OSErrors)."""

    def _new_conn(self) -> socket.socket:
        timeout = self.timeout  # type: ignore[attr-defined]
        if timeout is _DEFAULT_TIMEOUT:
            timeout = socket.getdefaulttimeout()
        try:
            sock = ssrf.connect_checked(self._dns_host, self.port, timeout,  # type: ignore[attr-defined]
                                        self.source_address)  # type: ignore[attr-defined]
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out. "  # type: ignore[attr-defined]
                                            f"(connect timeout={timeout})") from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc
        for option in self.socket_options or ():  # type: ignore[attr-defined]
            sock.setsockopt(*option)  # urllib3's default: TCP_NODELAY
        return sock


class CheckedHTTPConnection(_CheckedConnectionMixin, urllib3.connection.HTTPConnection):
    pass


class CheckedHTTPSConnection(_CheckedConnectionMixin, urllib3.connection.HTTPSConnection):
    pass


class CheckedHTTPConnectionPool(urllib3.HTTPConnectionPool):
    ConnectionCls = CheckedHTTPConnection


class CheckedHTTPSConnectionPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = CheckedHTTPSConnection


class CheckedHTTPAdapter(requests.adapters.HTTPAdapter):
    """A requests adapter whose pools connect only to checked addresses, and never through a proxy (a proxy
    would resolve the name again on its side)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": CheckedHTTPConnectionPool,
                                                   "https": CheckedHTTPSConnectionPool}

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        raise ssrf.SSRFError("checked connections do not go through a proxy")


def checked_requests_session(adapter: CheckedHTTPAdapter | None = None) -> requests.Session:
    """A requests.Session connecting only to addresses `ssrf.resolve_checked` checked (http and https), ignoring
    HTTP(S)_PROXY and .netrc (`trust_env` off; the CA bundle of REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE is still
    used, as requests does). `adapter`: a CheckedHTTPAdapter subclass's instance to use instead (one that also
    watches its sockets). Use one per call (it keeps cookies) and close it."""
    session = requests.Session()
    session.trust_env = False
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    adapter = adapter or CheckedHTTPAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class CheckedSMTP(smtplib.SMTP):
    """smtplib.SMTP connecting only to an address checked in the same resolution; STARTTLS verifies the
    certificate for the name (smtplib passes `self._host`, the name given)."""

    def _get_socket(self, host, port, timeout):  # type: ignore[no-untyped-def]
        if timeout is not None and not timeout:
            raise ValueError("Non-blocking socket (timeout=0) is not supported")  # as smtplib
        return ssrf.connect_checked(host, port, timeout, self.source_address)


class CheckedSMTP_SSL(smtplib.SMTP_SSL, CheckedSMTP):  # noqa: N801 - smtplib's naming
    """SMTP over implicit TLS: SMTP_SSL wraps the socket `CheckedSMTP._get_socket` (next in the MRO) made,
    with the name as server_hostname."""


@functools.cache
def _checked_imap_client_class() -> type:
    from imapclient import IMAPClient, imap4, tls  # imported when a mailbox is polled, not with this module

    class CheckedIMAP4(imap4.IMAP4WithTimeout):
        def _create_socket(self, timeout=None):  # type: ignore[no-untyped-def]
            return ssrf.connect_checked(self.host, self.port, timeout if timeout is not None else self._timeout)

    class CheckedIMAP4TLS(tls.IMAP4_TLS):
        def _create_socket(self, timeout=None):  # type: ignore[no-untyped-def]
            sock = ssrf.connect_checked(self.host, self.port, timeout if timeout is not None else self._timeout)
            return tls.wrap_socket(sock, self.ssl_context, self.host)

    class CheckedIMAPClient(IMAPClient):
        def _create_IMAP4(self):  # type: ignore[no-untyped-def]  # noqa: N802 - IMAPClient's hook
            if self.stream:
                raise ValueError("checked IMAP clients connect over the network only")
            connect_timeout = getattr(self._timeout, "connect", None)
            if self.ssl:
                return CheckedIMAP4TLS(self.host, self.port, self.ssl_context, connect_timeout)
            return CheckedIMAP4(self.host, self.port, connect_timeout)

    return CheckedIMAPClient


def checked_imap_client(host: str, **kwargs: Any) -> Any:
    """imapclient.IMAPClient(host, **kwargs) connecting only to an address checked in the same resolution
    (implicit TLS and STARTTLS verify the certificate for the name, imaplib passing it as server_hostname)."""
    return _checked_imap_client_class()(host, **kwargs)
