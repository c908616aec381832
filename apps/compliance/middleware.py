"""Security headers on every response: a Content-Security-Policy fit for HTMX, and browser hardening.

Failure modes prevented:
- Script injection turning into code execution: script-src 'self' with no 'unsafe-inline' and no
  'unsafe-eval', so an injected <script>, an event-handler attribute or an `hx-on`/`eval` payload in a
  swapped fragment does not run (HTMX itself is served from our origin; htmx.config.allowEval must be off).
- Clickjacking: frame-ancestors 'none' (the CSP successor of X-Frame-Options: DENY).
- Data exfiltration through injected markup: form-action, base-uri and connect-src are limited to our own
  origin (plus this host's WebSocket URL for the chat), object-src 'none' blocks plugins.
- A mistyped extra source weakening the policy silently: extra sources are validated at start-up; keywords
  that defeat the policy ('unsafe-inline', 'unsafe-eval', '*') and separators are refused there.

Placed right after SecurityMiddleware, which already sets X-Content-Type-Options, Referrer-Policy and
Cross-Origin-Opener-Policy from its settings; the same headers are set here with setdefault so they stay
present if those settings are switched off. A view that sets its own CSP keeps it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from django.conf import settings
from django.core.exceptions import DisallowedHost, ImproperlyConfigured
from django.http import HttpRequest, HttpResponse

CSP_HEADER = "Content-Security-Policy"

# The policy for pages we render: our own origin only. img-src also allows data: URIs (small inline
# icons); they cannot execute script.
CSP_BASE_DIRECTIVES: dict[str, tuple[str, ...]] = {
    "default-src": ("'self'",),
    "script-src": ("'self'",),
    "style-src": ("'self'",),
    "img-src": ("'self'", "data:"),
    "font-src": ("'self'",),
    "connect-src": ("'self'",),
    "object-src": ("'none'",),
    "base-uri": ("'self'",),
    "form-action": ("'self'",),
    "frame-ancestors": ("'none'",),
}
# Directives an operator may extend through settings.SECURITY_CSP_EXTRA_SOURCES (a CDN, an analytics
# endpoint). The ones pinned to 'none' or 'self' for a security reason are not extendable.
CSP_EXTENDABLE_DIRECTIVES = frozenset({"script-src", "style-src", "img-src", "font-src", "connect-src", "media-src"})
# Sources that would switch the protection off; refused even when configured.
CSP_FORBIDDEN_SOURCES = frozenset({"'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", "*", "http:", "https:"})
# One source expression: no whitespace, no directive or policy separator, no quote except around keywords.
CSP_SOURCE_RE = re.compile(r"^(?:'[a-z0-9-]+'|[A-Za-z0-9*][A-Za-z0-9.*:/_%+-]*)$")
# A host we echo into the policy (for the WebSocket source): host name or IP literal with an optional port.
# The host was already validated by the tenant middleware; this only guards the header's syntax.
WEBSOCKET_HOST_RE = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")

# Powerful browser features the console and the web chat do not use. Voice or video (LiveKit) will need
# camera/microphone=(self): set SECURITY_PERMISSIONS_POLICY then.
PERMISSIONS_POLICY_DEFAULT = (
    "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), "
    "payment=(), usb=(), browsing-topics=()"
)
# Same values Django's SecurityMiddleware uses by default; repeated so they hold if its settings change.
FALLBACK_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}

# Responses under these paths carry private data (transcripts, exports, bot memory, a bot's credentials for
# editors, API answers): browsers and shared proxies must not keep them, or the Back button of a shared machine
# shows them after sign-out. Applied when the view set no Cache-Control of its own.
PRIVATE_PATH_PREFIXES = ("/console/", "/admin/", "/api/", "/accounts/")
PRIVATE_CACHE_CONTROL = "no-store, private"


def csp_extra_sources_parse(entries: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """settings.SECURITY_CSP_EXTRA_SOURCES ("directive source" strings) by directive, checked."""
    extra: dict[str, list[str]] = {}
    for entry in entries:
        directive, _, sources = entry.strip().partition(" ")
        if not sources.split():
            raise ImproperlyConfigured(f"SECURITY_CSP_EXTRA_SOURCES: {entry!r} must be 'directive source'")
        extra.setdefault(directive.lower(), []).extend(sources.split())
    return csp_extra_sources_validate(extra)


def csp_extra_sources_validate(extra: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """Extra sources by directive, checked; raises ImproperlyConfigured naming the bad entry."""
    checked: dict[str, tuple[str, ...]] = {}
    for directive, sources in extra.items():
        if directive not in CSP_EXTENDABLE_DIRECTIVES:
            raise ImproperlyConfigured(
                f"SECURITY_CSP_EXTRA_SOURCES: {directive!r} cannot be extended "
                f"(extendable: {', '.join(sorted(CSP_EXTENDABLE_DIRECTIVES))})"
            )
        for source in sources:
            if source.lower() in CSP_FORBIDDEN_SOURCES or not CSP_SOURCE_RE.match(source):
                raise ImproperlyConfigured(f"SECURITY_CSP_EXTRA_SOURCES[{directive!r}]: {source!r} is not allowed")
        checked[directive] = tuple(sources)
    return checked


def content_security_policy(
    *, extra: Mapping[str, Sequence[str]], websocket_host: str | None, secure: bool
) -> str:
    """The policy text for one response: the base directives, the extra sources, and this host's WebSocket."""
    directives = {name: list(sources) for name, sources in CSP_BASE_DIRECTIVES.items()}
    for name, sources in extra.items():
        directives.setdefault(name, ["'self'"]).extend(s for s in sources if s not in directives.get(name, []))
    # CSP3 lets 'self' match ws(s): of the same host, but older Safari does not: name it explicitly.
    if websocket_host and WEBSOCKET_HOST_RE.match(websocket_host):
        directives["connect-src"].append(f"{'wss' if secure else 'ws'}://{websocket_host}")
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.csp_extra = csp_extra_sources_parse(getattr(settings, "SECURITY_CSP_EXTRA_SOURCES", ()))
        self.permissions_policy = getattr(settings, "SECURITY_PERMISSIONS_POLICY", "") or PERMISSIONS_POLICY_DEFAULT

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if CSP_HEADER not in response:
            response[CSP_HEADER] = content_security_policy(
                extra=self.csp_extra, websocket_host=_request_host(request), secure=request.is_secure()
            )
        response.headers.setdefault("Permissions-Policy", self.permissions_policy)
        for name, value in FALLBACK_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.path.startswith(PRIVATE_PATH_PREFIXES):
            response.headers.setdefault("Cache-Control", PRIVATE_CACHE_CONTROL)
        return response


def _request_host(request: HttpRequest) -> str | None:
    try:
        return request.get_host()
    except DisallowedHost:  # no WebSocket source then; the rest of the policy holds
        return None
