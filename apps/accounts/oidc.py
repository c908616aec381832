"""Talking to a tenant's OIDC provider: discovery, JWKS, the code exchange, ID-token checks, userinfo.

mozilla-django-oidc reads one provider from settings; here every tenant has its own, so the request-time
parts (apps.accounts.views, .backends) call these functions with the tenant's `ProviderSettings`.

Failure modes prevented (OIDC Core §3.1.3.7, test plan §1.9):
- Tokens for another client or from another issuer: `aud` must contain our client id (and `azp`, when
  present or when there are several audiences, must be it), `iss` must equal the configured issuer. The
  library checks neither (mozilla-django-oidc#340).
- Forged or downgraded signatures: only RS256 is accepted, with a key from the issuer's own JWKS (found
  through its discovery document, whose `issuer` must match); `alg: none` and HS* (signed with the client
  secret, which the client knows) are refused before any key is looked at.
- Replayed or stale tokens: `nonce` must be the one this browser's sign-in started with (compared in
  constant time); `exp` and `iat` are required and checked with `CLOCK_LEEWAY_S`; a token issued more
  than `ID_TOKEN_MAX_AGE_S` ago is not from the flow that just finished.
- Taking over an account through an email address: users are keyed by (issuer, sub); an email that the
  provider has not verified refuses the sign-in, since the console shows it as the user's identity.
- A hung or slow provider hanging a request: every HTTP call has `OIDC_TIMEOUT` (the library's default is
  none) as a whole, answer included (`_call`), and follows no redirects.
- Another organisation's users on a shared provider (Zitadel with one organisation per tenant, where the
  issuer alone does not tell tenants apart): with an organisation set, the user must belong to it; on the
  platform's default provider an organisation is required, and a tenant bound to none admits nobody.
- The platform's network reached through a tenant's provider (SSRF): a tenant admin chooses the issuer, and
  the issuer's discovery document chooses the JWKS, token and userinfo URLs. Each request to them is made only
  over https and to an address the SSRF guard checked as public in the same resolution
  (apps.core.outbound.checked_requests_session: cloud metadata, Vault and internal services stay out of
  reach, DNS rebinding included), directly, never through a proxy. A refused URL fails the sign-in with a
  reason naming the endpoint. OIDC_ALLOW_PRIVATE_HOSTS lifts this (a provider inside the platform's network,
  the tests' provider on loopback); the platform's own provider (OIDC_ISSUER, `trusted`) is not checked, as
  LLM_URL is not. The authorization and end-session endpoints are only ever the browser's redirects.
- Error pages leaking secrets or provider internals: errors carry a short reason for the user and the
  audit log; token values are never logged.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import jwt
import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import ProxyManager

from apps.basic import ssrf
from apps.core import outbound

logger = logging.getLogger(__name__)

# --- policy ----------------------------------------------------------------------------------------------

# Connect and read timeout of every call to a provider (settings.OIDC_TIMEOUT overrides it). Zitadel answers
# in well under a second; 5 s rides out a slow moment while a dead provider costs a sign-in at most this.
OIDC_HTTP_TIMEOUT_S = 5.0
# Discovery documents and key sets change rarely; five minutes picks up a key rotation soon enough, and an
# unknown `kid` forces one early refetch anyway.
METADATA_CACHE_TTL_S = 300.0
# An unknown `kid` refetches the JWKS at most this often per issuer, so junk tokens cannot make us hammer it.
JWKS_REFETCH_MIN_INTERVAL_S = 10.0
# Clock skew tolerated on `exp` and `iat` between us and the provider.
CLOCK_LEEWAY_S = 60
# The ID token of a code flow is minted at the token request; one older than this was not.
ID_TOKEN_MAX_AGE_S = 600
# The only signature algorithm accepted for ID tokens (Zitadel signs with RS256).
ID_TOKEN_ALGORITHMS = ("RS256",)
# Provider answers bigger than this are not discovery documents, key sets or tokens.
MAX_PROVIDER_RESPONSE_BYTES = 512 * 1024


class OidcError(Exception):
    """A sign-in that cannot go on. `reason` is short and safe to show and to audit."""

    status = 403

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class OidcProviderUnavailable(OidcError):
    """The provider could not be reached or answered nonsense."""

    status = 502


class OidcTokenRejected(OidcError):
    """A token or claim failed a check."""


@dataclass(frozen=True)
class ProviderSettings:
    """One provider as the tenant (or the platform default) configures it; the secret already resolved."""

    issuer: str
    client_id: str
    client_secret: str  # "" for a public client
    scopes: str
    roles_claim: str
    role_map: dict[str, str]
    organization_id: str = ""  # Zitadel: the one organisation whose users may sign in ("" = any, see below)
    # The platform's default provider, shared by every tenant: "" above then admits nobody, not anybody.
    organization_required: bool = False
    # The platform's own provider (settings OIDC_*): its URLs are the operator's, not checked (see the docstring).
    trusted: bool = False


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str = ""
    end_session_endpoint: str = ""
    trusted: bool = False  # the platform's own provider: requests to it are not SSRF-checked


@dataclass
class _Cached:
    fetched_at: float
    value: Any


@dataclass
class _Cache:
    lock: threading.Lock = field(default_factory=threading.Lock)
    metadata: dict[str, _Cached] = field(default_factory=dict)
    jwks: dict[str, _Cached] = field(default_factory=dict)


_cache = _Cache()


def oidc_cache_clear() -> None:
    """Forget every provider's discovery document and keys (tests; after a provider rotated everything)."""
    with _cache.lock:
        _cache.metadata.clear()
        _cache.jwks.clear()


def oidc_timeout() -> float:
    return float(getattr(settings, "OIDC_TIMEOUT", None) or OIDC_HTTP_TIMEOUT_S)


# --- calls to the provider, each within OIDC_TIMEOUT as a whole ------------------------------------------
# requests' `timeout` bounds each socket operation, not a call: a provider sending its answer a byte every few
# seconds kept the call, and the sign-in request's thread, for as long as it liked (a few KB: half an hour), and
# a tenant may name a provider of its own. Each call runs under a deadline: when OIDC_TIMEOUT has passed, a
# timer shuts the call's sockets down, which ends whatever read the call is blocked in, and the call fails as
# one that did not answer. The connections of a call are its own (a session per call), so the timer never
# touches another request's socket.

# Receives each socket a provider call opens (set by `_call` for the call's thread and context).
_socket_opened: ContextVar[Callable[[socket.socket], None] | None] = ContextVar("oidc_socket_opened", default=None)


class _WatchedConnection:
    def _new_conn(self) -> socket.socket:  # urllib3's: the TCP socket, before any TLS
        sock = super()._new_conn()
        opened = _socket_opened.get()
        if opened is not None:
            # A duplicate of the descriptor: wrapping the socket in TLS detaches this socket object from the
            # connection (its descriptor moves to the SSLSocket), so shutting this one down later would do nothing
            # (EBADF). A shutdown through the duplicate ends the connection itself, TLS handshake included.
            opened(sock.dup())
        return sock


class _WatchedHTTPConnection(_WatchedConnection, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedConnection, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


# A tenant's provider: connections only to addresses the SSRF guard checked (apps.core.outbound), watched too.
class _WatchedCheckedHTTPConnection(_WatchedConnection, outbound.CheckedHTTPConnection):
    pass


class _WatchedCheckedHTTPSConnection(_WatchedConnection, outbound.CheckedHTTPSConnection):
    pass


class _WatchedCheckedHTTPPool(outbound.CheckedHTTPConnectionPool):
    ConnectionCls = _WatchedCheckedHTTPConnection


class _WatchedCheckedHTTPSPool(outbound.CheckedHTTPSConnectionPool):
    ConnectionCls = _WatchedCheckedHTTPSConnection


class _WatchedCheckedAdapter(outbound.CheckedHTTPAdapter):
    """outbound's checked adapter (no proxy) whose connections are watched."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedCheckedHTTPPool, "https": _WatchedCheckedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter whose connections (direct, or through an HTTP proxy from the environment) are watched."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is ProxyManager:  # not a SOCKS one: its pools are its own
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


class _Deadline:
    """Shuts down every socket given to `opened` once `seconds` have passed (and any given after); `cancel` closes
    them (they are duplicates of the call's sockets, see _WatchedConnection)."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()

    def opened(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    with suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


@contextmanager
def _call(what: str, *, checked: bool) -> Iterator[requests.Session]:
    """A session for one call to the provider, request and answer, which fails as "did not answer" when it takes
    longer than OIDC_TIMEOUT. `checked`: it connects only to addresses the SSRF guard checked, through no proxy
    (outbound.checked_requests_session); else plain requests' behaviour (the platform's own provider, or
    OIDC_ALLOW_PRIVATE_HOSTS)."""
    seconds = oidc_timeout()
    deadline = _Deadline(seconds)
    token = _socket_opened.set(deadline.opened)
    deadline.start()
    try:
        if checked:
            session = outbound.checked_requests_session(_WatchedCheckedAdapter())
        else:
            session = requests.Session()
            adapter = _WatchedAdapter()
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        with session:
            yield session
    except OidcProviderUnavailable:
        if deadline.expired:
            logger.warning("oidc provider too slow", extra={"what": what, "timeout_s": seconds})
            raise OidcProviderUnavailable(
                f"the sign-in provider did not answer within {seconds:g} s ({what})") from None
        raise
    finally:
        deadline.cancel()
        _socket_opened.reset(token)


def _json_from(response: requests.Response, what: str) -> dict:
    """The JSON object of a streamed response, read up to MAX_PROVIDER_RESPONSE_BYTES and no further."""
    try:
        raw = response.raw.read(MAX_PROVIDER_RESPONSE_BYTES + 1, decode_content=True)
    except Exception:  # urllib3 read errors: the connection broke mid-answer
        raise OidcProviderUnavailable(f"the provider's {what} could not be read") from None
    finally:
        response.close()
    if len(raw) > MAX_PROVIDER_RESPONSE_BYTES:
        raise OidcProviderUnavailable(f"the provider's {what} is over {MAX_PROVIDER_RESPONSE_BYTES} bytes")
    try:
        body = json.loads(raw)
    except ValueError:
        raise OidcProviderUnavailable(f"the provider's {what} is not JSON") from None
    if not isinstance(body, dict):
        raise OidcProviderUnavailable(f"the provider's {what} is not a JSON object")
    return body


def private_hosts_allowed() -> bool:
    return bool(getattr(settings, "OIDC_ALLOW_PRIVATE_HOSTS", False))


def provider_url_check(url: str, *, resolve: bool = True) -> None:
    """Raise ssrf.SSRFError unless `url` may be requested for a tenant's provider: https, and a host that is
    (with `resolve`, resolves to) public addresses only. Callers skip it under OIDC_ALLOW_PRIVATE_HOSTS."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise ssrf.SSRFError(f"invalid URL: {exc}") from None
    if scheme != "https":
        raise ssrf.SSRFError(f"only https URLs are allowed, not '{scheme or url}'")
    ssrf.check_url(url, resolve=resolve)


def _send(http: Any, method: str, url: str, what: str, *, checked: bool, **kwargs: Any) -> requests.Response:
    """One request to the provider. With `checked`, `url` must pass `provider_url_check` (its name now, its
    addresses when the connection is made: the session connects only to checked ones)."""
    try:
        if checked:
            provider_url_check(url, resolve=False)
        return http.request(method, url, timeout=oidc_timeout(), allow_redirects=False, stream=True, **kwargs)
    except ssrf.SSRFError as exc:
        logger.warning("oidc provider url refused", extra={"url": url, "what": what, "error": str(exc)})
        raise OidcProviderUnavailable(f"the sign-in provider's {what} URL is not allowed: {exc}") from None
    except requests.RequestException as exc:
        logger.warning("oidc provider unreachable", extra={"url": url, "error": type(exc).__name__})
        raise OidcProviderUnavailable(f"the sign-in provider did not answer ({what})") from None


def _checked(trusted: bool) -> bool:
    return not trusted and not private_hosts_allowed()


def _get_json(url: str, what: str, *, trusted: bool, **kwargs: Any) -> dict:
    """GET a JSON object from the provider (200 only), within OIDC_TIMEOUT."""
    checked = _checked(trusted)
    with _call(what, checked=checked) as http:
        response = _send(http, "GET", url, what, checked=checked, **kwargs)
        if response.status_code != 200:
            response.close()
            raise OidcProviderUnavailable(f"the sign-in provider answered {response.status_code} ({what})")
        return _json_from(response, what)


def provider_metadata(issuer: str, *, refresh: bool = False, trusted: bool = False) -> ProviderMetadata:
    """The issuer's discovery document (cached), checked to name this very issuer. `trusted`: the platform's own
    provider (settings), whose URLs are not SSRF-checked; a tenant's provider is never trusted."""
    now = time.monotonic()
    key = f"{int(trusted)}|{issuer}"
    with _cache.lock:
        cached = _cache.metadata.get(key)
    if cached and not refresh and now - cached.fetched_at < METADATA_CACHE_TTL_S:
        return cached.value
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    body = _get_json(url, "discovery document", trusted=trusted)
    if body.get("issuer") != issuer:
        # OIDC Discovery §4.3: a document naming another issuer is not this provider's.
        raise OidcProviderUnavailable("the provider's discovery document names a different issuer")
    try:
        metadata = ProviderMetadata(
            issuer=issuer,
            authorization_endpoint=str(body["authorization_endpoint"]),
            token_endpoint=str(body["token_endpoint"]),
            jwks_uri=str(body["jwks_uri"]),
            userinfo_endpoint=str(body.get("userinfo_endpoint") or ""),
            end_session_endpoint=str(body.get("end_session_endpoint") or ""),
            trusted=trusted,
        )
    except KeyError as exc:
        raise OidcProviderUnavailable(f"the provider's discovery document lacks {exc.args[0]}") from None
    with _cache.lock:
        _cache.metadata[key] = _Cached(now, metadata)
    return metadata


def _jwks(metadata: ProviderMetadata, *, refresh: bool) -> list[dict]:
    now = time.monotonic()
    key = f"{int(metadata.trusted)}|{metadata.issuer}"
    with _cache.lock:
        cached = _cache.jwks.get(key)
    if cached and (now - cached.fetched_at < METADATA_CACHE_TTL_S) and (
        not refresh or now - cached.fetched_at < JWKS_REFETCH_MIN_INTERVAL_S
    ):
        return cached.value
    body = _get_json(metadata.jwks_uri, "key set", trusted=metadata.trusted)
    keys = [jwk for jwk in body.get("keys", []) if isinstance(jwk, dict)]
    with _cache.lock:
        _cache.jwks[key] = _Cached(now, keys)
    return keys


def _signing_key(metadata: ProviderMetadata, kid: str | None, alg: str) -> Any:
    for refresh in (False, True):
        candidates = [
            key for key in _jwks(metadata, refresh=refresh)
            if key.get("kty") == "RSA" and key.get("use", "sig") == "sig" and key.get("alg", alg) == alg
            and (kid is None or key.get("kid") == kid)
        ]
        if kid is None and len(candidates) > 1:
            raise OidcTokenRejected("the ID token names no key (kid) and the issuer has several")
        if candidates:
            try:
                return jwt.PyJWK(candidates[0], algorithm=alg).key
            except jwt.PyJWKError:
                raise OidcProviderUnavailable("the issuer's signing key is malformed") from None
    raise OidcTokenRejected("the ID token is signed with a key that is not in the issuer's key set")


def id_token_verify(token: str, *, metadata: ProviderMetadata, client_id: str, nonce: str) -> dict[str, Any]:
    """The ID token's claims once signature, algorithm, issuer, audience, times and nonce are all right."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise OidcTokenRejected("the ID token is not a signed JWT") from None
    alg = header.get("alg")
    if alg not in ID_TOKEN_ALGORITHMS:
        raise OidcTokenRejected(f"ID token algorithm {alg!r} refused: only {', '.join(ID_TOKEN_ALGORITHMS)}")
    key = _signing_key(metadata, header.get("kid"), alg)
    try:
        claims = jwt.decode(
            token, key=key, algorithms=list(ID_TOKEN_ALGORITHMS), audience=client_id, issuer=metadata.issuer,
            leeway=CLOCK_LEEWAY_S, options={"require": ["iss", "sub", "aud", "exp", "iat"]},
        )
    except jwt.ExpiredSignatureError:
        raise OidcTokenRejected("the ID token has expired") from None
    except jwt.InvalidAudienceError:
        raise OidcTokenRejected("the ID token was issued for another client (aud)") from None
    except jwt.InvalidIssuerError:
        raise OidcTokenRejected("the ID token comes from another issuer (iss)") from None
    except jwt.ImmatureSignatureError:
        raise OidcTokenRejected("the ID token is issued in the future (iat)") from None
    except jwt.MissingRequiredClaimError as exc:
        raise OidcTokenRejected(f"the ID token lacks the {exc.claim!r} claim") from None
    except jwt.InvalidSignatureError:
        raise OidcTokenRejected("the ID token's signature is wrong") from None
    except jwt.InvalidTokenError as exc:
        raise OidcTokenRejected(f"the ID token is invalid ({type(exc).__name__})") from None
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != client_id:
        raise OidcTokenRejected("the ID token was issued for another client (azp)")
    if not isinstance(claims["iat"], int | float) or claims["iat"] < time.time() - ID_TOKEN_MAX_AGE_S:
        raise OidcTokenRejected("the ID token is too old to come from this sign-in (iat)")
    if not isinstance(claims["sub"], str) or not claims["sub"] or len(claims["sub"]) > 255:
        raise OidcTokenRejected("the ID token's subject (sub) is malformed")
    token_nonce = claims.get("nonce")
    if not isinstance(token_nonce, str) or not hmac.compare_digest(token_nonce.encode(), nonce.encode()):
        raise OidcTokenRejected("the ID token's nonce does not match this sign-in")
    return claims


def code_exchange(*, provider: ProviderSettings, metadata: ProviderMetadata, code: str, redirect_uri: str,
                  code_verifier: str) -> dict[str, Any]:
    """The token endpoint's answer to an authorization code (with the PKCE verifier)."""
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "code_verifier": code_verifier}
    auth = None
    if provider.client_secret:
        # client_secret_basic; RFC 6749 §2.3.1 form-encodes both parts before Basic encoding.
        auth = (quote(provider.client_id, safe=""), quote(provider.client_secret, safe=""))
    else:
        data["client_id"] = provider.client_id
    checked = _checked(metadata.trusted)
    with _call("token endpoint", checked=checked) as http:
        response = _send(http, "POST", metadata.token_endpoint, "token endpoint", checked=checked, data=data,
                         auth=auth)
        body = _json_from(response, "token response")
    if response.status_code != 200:
        error = str(body.get("error", "error"))[:60]
        raise OidcTokenRejected(f"the provider refused the sign-in code ({error})")
    if not isinstance(body.get("id_token"), str):
        raise OidcTokenRejected("the provider's token response has no ID token")
    return body


def userinfo_fetch(*, metadata: ProviderMetadata, access_token: str, subject: str) -> dict[str, Any]:
    """Userinfo claims (where Zitadel puts email and, unless asserted in the ID token, roles); {} when the
    provider has no userinfo endpoint. Its `sub` must be the ID token's (OIDC Core §5.3.2)."""
    if not metadata.userinfo_endpoint or not access_token:
        return {}
    body = _get_json(metadata.userinfo_endpoint, "userinfo", trusted=metadata.trusted,
                     headers={"Authorization": f"Bearer {access_token}"})
    if body.get("sub") != subject:
        raise OidcTokenRejected("the provider's userinfo is about another user (sub)")
    return body


def claims_merge(id_claims: dict[str, Any], userinfo: dict[str, Any]) -> dict[str, Any]:
    """Userinfo completes the ID token; the signed ID token's own claims win where both have one."""
    return {**userinfo, **id_claims}


def email_verified_or_refuse(claims: dict[str, Any]) -> str:
    """The email to display, "" when there is none; an unverified email refuses the sign-in."""
    email = claims.get("email")
    if not email:
        return ""
    if claims.get("email_verified") is not True:
        raise OidcTokenRejected("the provider has not verified this account's email address")
    return str(email)[:254]


# Shown to the user (and audited) when a tenant on the platform's default provider is bound to no organisation.
ORGANIZATION_UNBOUND_REASON = (
    "this tenant is not yet linked to its organisation at the platform's sign-in provider, so nobody can sign "
    "in to its console; ask the platform's support to set the tenant's organisation"
)


def organization_check(claims: dict[str, Any], *, organization_id: str, claim: str, required: bool = False) -> None:
    """With an organisation configured, the user must belong to it (Zitadel: one organisation per tenant on a
    shared instance, where the issuer alone does not tell tenants apart). With `required` (the platform's
    default provider), no organisation configured refuses everyone."""
    if not organization_id:
        if required:
            raise OidcTokenRejected(ORGANIZATION_UNBOUND_REASON)
        return
    if claims.get(claim) != organization_id:
        raise OidcTokenRejected("this account belongs to another organisation than this tenant's")


def end_session_url(*, metadata: ProviderMetadata, client_id: str, id_token: str, post_logout_redirect_uri: str) -> str:
    """RP-initiated logout at the provider, or "" when it offers none."""
    if not metadata.end_session_endpoint:
        return ""
    query = urlencode({"id_token_hint": id_token, "post_logout_redirect_uri": post_logout_redirect_uri,
                       "client_id": client_id})
    separator = "&" if "?" in metadata.end_session_endpoint else "?"
    return f"{metadata.end_session_endpoint}{separator}{query}"
