"""Re-checking OIDC console sessions with the provider (after AuthenticationMiddleware).

mozilla-django-oidc's SessionRefresh reads one provider from settings and re-checks GET requests only
(#504: a POST after expiry still goes through) and answers HTMX with a redirect into the provider's
pages. This middleware, for sessions signed in through the tenant's provider, once the last check is
older than OIDC_SESSION_RECHECK_S:
- a page GET is sent through a silent sign-in (`prompt=none`) and comes back where it was; the callback
  re-reads the roles, so a user removed or stripped of roles at the provider loses access;
- anything else (POST, an API call, an HTMX request) gets 401 JSON with `refresh_url` (HTMX also gets
  `HX-Redirect`), and is not executed.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import NoReverseMatch, reverse
from django.utils.http import urlencode

from apps.accounts.views import SESSION_EXPIRATION, SESSION_REAUTHENTICATE

# Paths that must work with an expired check: the flow itself, sign-out, and static files.
EXEMPT_PREFIXES = ("/accounts/", "/static/", "/api/health")


class _SessionCheck:
    """A check of the signed-in session before the view runs (`check`), for every view that authenticates by the
    session: an API key request to a view that takes keys (apps.accounts.permissions.api_access marks them) is
    left alone, since the key is its credential; any other view is checked whatever headers come with it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func: Callable, view_args: tuple,
                     view_kwargs: dict) -> HttpResponse | None:
        from apps.accounts.permissions import authorization_header

        if authorization_header(request) and getattr(view_func, "required_scope", None):
            return None
        return self.check(request, view_func)

    def check(self, request: HttpRequest, view_func: Callable) -> HttpResponse | None:
        raise NotImplementedError


def _send_to(request: HttpRequest, url: str, *, error: str, url_field: str) -> HttpResponse:
    """A page GET is redirected to `url`; anything else (POST, API, HTMX) gets 401 JSON naming it, and HTMX
    also `HX-Redirect`: the request is not executed."""
    is_htmx = "HTTP_HX_REQUEST" in request.META
    if request.method == "GET" and not is_htmx and not request.path.startswith("/api/"):
        return redirect(url)
    response = JsonResponse({"error": error, url_field: url}, status=401)
    if is_htmx:
        response["HX-Redirect"] = url
    return response


def htmx_page_path(request: HttpRequest) -> str:
    """Where to come back after signing in: for an HTMX call, the page it was made from, not the fragment's URL
    (the sign-in views accept only paths on this host as `next`); otherwise the request's own path."""
    current = urlsplit(request.META.get("HTTP_HX_CURRENT_URL", ""))
    if "HTTP_HX_REQUEST" in request.META and current.path:
        return current.path + (f"?{current.query}" if current.query else "")
    return request.get_full_path()


class OidcSessionRefreshMiddleware(_SessionCheck):
    def check(self, request: HttpRequest, view_func: Callable) -> HttpResponse | None:
        session = getattr(request, "session", None)
        if session is None or SESSION_EXPIRATION not in session or request.path.startswith(EXEMPT_PREFIXES):
            return None
        if not request.user.is_authenticated or session.get(SESSION_EXPIRATION, 0) > time.time():
            return None
        back = htmx_page_path(request)
        refresh = reverse("oidc_authentication_init") + "?" + urlencode({"prompt": "none", "next": back})
        return _send_to(request, refresh, error="your sign-in needs to be re-checked; reload the page",
                        url_field="refresh_url")


# The session's last request (epoch seconds); written at most every LAST_SEEN_RESOLUTION_S, so a busy console
# does not save its session on every request.
LAST_SEEN_KEY = "_last_seen"
LAST_SEEN_RESOLUTION_S = 60
# When the session was first seen signed in (epoch seconds): SESSION_COOKIE_AGE counts from here. Django would
# move a session's expiry on every save (and the last request is saved once a minute): the expiry is pinned.
SIGNED_IN_KEY = "_signed_in_at"


def _login_url() -> str:
    """The sign-in page of this host: the console's on a tenant host, the admin's on the platform's own."""
    try:
        return reverse("login")
    except NoReverseMatch:
        return reverse("admin:login")


def _needs_sign_in(view_func: Callable) -> bool:
    """Views that take a console role (apps.accounts.permissions marks them, function or class based)."""
    view_class = getattr(view_func, "view_class", None)
    return getattr(view_func, "required_role", None) is not None or (
        getattr(view_class, "required_role", None) is not None)


class SessionIdleTimeoutMiddleware(_SessionCheck):
    """Signs out a session with no request for SESSION_IDLE_TIMEOUT_S (ASVS 7.3.1; SESSION_COOKIE_AGE is the
    absolute limit): a page GET goes to the sign-in page and comes back, anything else gets 401."""

    def check(self, request: HttpRequest, view_func: Callable) -> HttpResponse | None:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated or request.path.startswith(("/static/", "/api/health")):
            return None
        now = int(time.time())
        last = request.session.get(LAST_SEEN_KEY)
        signed_in_at = request.session.get(SIGNED_IN_KEY)
        if signed_in_at is None:
            request.session[SIGNED_IN_KEY] = signed_in_at = now
            request.session.set_expiry(datetime.datetime.fromtimestamp(now + settings.SESSION_COOKIE_AGE,
                                                                       tz=datetime.UTC))
        expired = now - int(signed_in_at) > settings.SESSION_COOKIE_AGE  # the absolute limit (ASVS 7.3.2)
        if expired or (last is not None and now - int(last) > settings.SESSION_IDLE_TIMEOUT_S):
            signed_in_by_oidc = SESSION_EXPIRATION in request.session
            logout(request)
            if signed_in_by_oidc:
                request.session[SESSION_REAUTHENTICATE] = True
            if not _needs_sign_in(view_func):
                return None  # a public page (the web chat, the sign-in page): it goes on for a visitor
            login = _login_url() + "?" + urlencode({"next": request.get_full_path()})
            return _send_to(request, login, error="you were signed out after a while without activity; sign in again",
                            url_field="login_url")
        if last is None or now - int(last) >= LAST_SEEN_RESOLUTION_S:
            request.session[LAST_SEEN_KEY] = now
        return None
