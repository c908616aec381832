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

import time
from collections.abc import Callable
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import NoReverseMatch, reverse
from django.utils.http import urlencode

from apps.accounts.views import SESSION_EXPIRATION

# Paths that must work with an expired check: the flow itself, sign-out, and static files.
EXEMPT_PREFIXES = ("/accounts/", "/static/", "/api/health")


class OidcSessionRefreshMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func: Callable, view_args: tuple,
                     view_kwargs: dict) -> HttpResponse | None:
        # An API key request to a view that takes keys (apps.accounts.permissions.api_access marks them):
        # the key is the credential and the session plays no part. Any other view authenticates by the
        # session whatever headers come with it, so the session is re-checked.
        if "HTTP_AUTHORIZATION" in request.META and getattr(view_func, "required_scope", None):
            return None
        return self._check(request)

    @staticmethod
    def _check(request: HttpRequest) -> HttpResponse | None:
        session = getattr(request, "session", None)
        if session is None or SESSION_EXPIRATION not in session or request.path.startswith(EXEMPT_PREFIXES):
            return None
        if not request.user.is_authenticated or session.get(SESSION_EXPIRATION, 0) > time.time():
            return None
        is_htmx = "HTTP_HX_REQUEST" in request.META
        # After an HTMX call, come back to the page it was made from, not to the fragment's URL (the
        # authenticate view accepts only paths on this host as `next`).
        current = urlsplit(request.META.get("HTTP_HX_CURRENT_URL", ""))
        back = (current.path + (f"?{current.query}" if current.query else "")) if is_htmx and current.path \
            else request.get_full_path()
        refresh = reverse("oidc_authentication_init") + "?" + urlencode({"prompt": "none", "next": back})
        if request.method == "GET" and not is_htmx and not request.path.startswith("/api/"):
            return redirect(refresh)
        response = JsonResponse({"error": "your sign-in needs to be re-checked; reload the page",
                                 "refresh_url": refresh}, status=401)
        if is_htmx:
            response["HX-Redirect"] = refresh
        return response


# The session's last request (epoch seconds); written at most every LAST_SEEN_RESOLUTION_S, so a busy console
# does not save its session on every request.
LAST_SEEN_KEY = "_last_seen"
LAST_SEEN_RESOLUTION_S = 60


def _login_url() -> str:
    """The sign-in page of this host: the console's on a tenant host, the admin's on the platform's own."""
    try:
        return reverse("login")
    except NoReverseMatch:
        return reverse("admin:login")


class SessionIdleTimeoutMiddleware:
    """Signs out a session with no request for SESSION_IDLE_TIMEOUT_S (ASVS 7.3.1; SESSION_COOKIE_AGE is the
    absolute limit). A page GET goes to the sign-in page and comes back; anything else gets 401 JSON (HTMX also
    `HX-Redirect`) and is not executed. API key requests to views that take keys are left alone."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func: Callable, view_args: tuple,
                     view_kwargs: dict) -> HttpResponse | None:
        if "HTTP_AUTHORIZATION" in request.META and getattr(view_func, "required_scope", None):
            return None
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated or request.path.startswith(("/static/", "/api/health")):
            return None
        now = int(time.time())
        last = request.session.get(LAST_SEEN_KEY)
        if last is not None and now - int(last) > settings.SESSION_IDLE_TIMEOUT_S:
            logout(request)
            login = _login_url() + "?" + urlencode({"next": request.get_full_path()})
            is_htmx = "HTTP_HX_REQUEST" in request.META
            if request.method == "GET" and not is_htmx and not request.path.startswith("/api/"):
                return redirect(login)
            response = JsonResponse({"error": "you were signed out after a while without activity; sign in again",
                                     "login_url": login}, status=401)
            if is_htmx:
                response["HX-Redirect"] = login
            return response
        if last is None or now - int(last) >= LAST_SEEN_RESOLUTION_S:
            request.session[LAST_SEEN_KEY] = now
        return None
