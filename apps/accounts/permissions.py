"""Every console page and API endpoint declares the console role it needs (viewer < editor < admin).

    @console_role_required(Role.VIEWER)                    # HTML: anonymous -> login page, no role -> 403 page
    def console_home(request): ...

    class SettingsView(ConsoleRoleRequiredMixin, View):    # the same for class-based views
        required_role = Role.ADMIN

    @api_access(role=Role.EDITOR, scope="bots:deploy")     # JSON: 401 / 403 as JSON, API keys accepted
    def bot_deploy_api(request): ...

`api_access` accepts the console session (role checked, CSRF checked for unsafe methods) or
`Authorization: Bearer <API key>` (the key's scopes must include `scope`; no cookies, so no CSRF). A key
is looked up in the schema of the host it is sent to, so a key of tenant A is unknown on tenant B's host.
A key acts with at most its creator's current role: the creator must exist, be active and hold both `role` and
the role the scope needs (`api_key_scope_role`), checked on every request.
With a key, `request.user` is an `ApiKeyPrincipal` (its name in the audit log is `api-key:<prefix>`) and
`request.api_key` the key.

Failure modes prevented: a view forgetting its check (the wrapped view carries `required_role`, so a test
can list views without one); a Bearer request silently falling back to the browser session; an HTMX or
fetch call getting a login page instead of a status it can act on; denials going unrecorded.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

from apps.accounts.models import ApiKey
from apps.accounts.roles import Role, role_allows
from apps.accounts.selectors import user_console_role
from apps.accounts.services import (
    API_KEY_SCOPES,
    ApiKeyRejected,
    access_audit,
    api_key_authenticate,
    api_key_scope_role,
    role_max,
)

BEARER_PREFIX = "Bearer "


class ApiKeyPrincipal:
    """Who a request authenticated by API key acts as: no console role, no staff rights, just the key."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, key: ApiKey) -> None:
        self.api_key = key

    def get_username(self) -> str:
        return f"api-key:{self.api_key.prefix}"

    def __str__(self) -> str:
        return self.get_username()

    def has_perm(self, *args: Any, **kwargs: Any) -> bool:
        return False


def _denied_page(request: HttpRequest, required: Role, actual: Role | None) -> HttpResponse:
    access_audit("auth.role_denied", request=request, object_type="path", object_id=request.path[:200],
                 summary={"required": required.value, "held": actual.value if actual else None})
    return render(request, "accounts/forbidden.html", {"required": required, "actual": actual}, status=403)


def _htmx_refusal(status: int) -> HttpResponse:
    """An HTMX call (a fragment, a poll every second) is refused by having its page reloaded: the page then
    shows the sign-in or the 403 page once (recording the denial once). htmx swaps no error response and keeps
    polling, so a 403 page answered to each poll wrote an audit row every second, and a login redirect
    (followed by the browser) swapped the sign-in form into the fragment."""
    response = HttpResponse(status=status)
    response["HX-Refresh"] = "true"
    return response


def _role_check(request: HttpRequest, required: Role) -> HttpResponse | None:
    """None when the session's user holds `required`; else the login redirect or the 403 page."""
    # Only an HTMX GET (a fragment, a poll) reloads its page: a form post keeps what the user typed and shows
    # the refusal where its errors go (data-swap-errors), as before.
    is_htmx = "HTTP_HX_REQUEST" in request.META and request.method == "GET"
    if not request.user.is_authenticated:
        if is_htmx:
            return _htmx_refusal(401)
        if "HTTP_HX_REQUEST" in request.META:
            # A signed-out form post: htmx would follow a redirect and swap the sign-in page into the form; the
            # sign-in page is opened instead (HX-Redirect, as the session middlewares answer), coming back to the
            # page the form is on.
            from apps.accounts.middleware import _send_to, htmx_page_path

            login = redirect_to_login(htmx_page_path(request))["Location"]
            return _send_to(request, login, error="sign in again", url_field="login_url")
        return redirect_to_login(request.get_full_path())
    actual = user_console_role(request.user)
    if not role_allows(actual, required):
        return _htmx_refusal(403) if is_htmx else _denied_page(request, required, actual)
    request.console_role = actual
    return None


def console_role_required(role: Role | str) -> Callable:
    """Decorator for HTML console views: the signed-in user must hold `role` or higher."""
    required = Role(role)

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            refusal = _role_check(request, required)
            return refusal if refusal is not None else view(request, *args, **kwargs)

        wrapped.required_role = required
        return wrapped

    return decorator


class ConsoleRoleRequiredMixin:
    """For class-based console views: set `required_role`."""

    required_role: Role = Role.ADMIN

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        refusal = _role_check(request, Role(self.required_role))
        return refusal if refusal is not None else super().dispatch(request, *args, **kwargs)


class _CsrfCheck(CsrfViewMiddleware):
    """Django's CSRF check, run by `api_access` for session requests (the view itself is csrf_exempt so
    that Bearer requests, which carry no cookie, are not refused before the key is looked at)."""

    def _reject(self, request: HttpRequest, reason: str) -> str:
        return reason


def _csrf_failure(request: HttpRequest) -> str | None:
    check = _CsrfCheck(lambda req: HttpResponse())
    check.process_request(request)
    return check.process_view(request, lambda req: HttpResponse(), (), {})


def _json_error(message: str, status: int, *, bearer_error: str = "") -> JsonResponse:
    response = JsonResponse({"error": message}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = f'Bearer error="{bearer_error}"' if bearer_error else "Bearer"
    return response


def authorization_header(request: HttpRequest) -> str:
    """The request's Authorization header, stripped; "" when there is none. The one reading of it: the session
    middlewares skip their checks only for a request this decorator will authenticate by its key (an empty
    header fell back to the session here but skipped the idle timeout and the OIDC re-check there)."""
    return request.META.get("HTTP_AUTHORIZATION", "").strip()


def api_access(*, role: Role | str, scope: str) -> Callable:
    """Decorator for JSON endpoints: a session user holding `role`, or an API key with `scope`."""
    required = Role(role)
    if scope not in API_KEY_SCOPES:
        raise ValueError(f"unknown API scope {scope!r}; known: {', '.join(API_KEY_SCOPES)}")
    # What a key's creator must hold for the key to pass here: the endpoint's role and the scope's.
    key_role = role_max(required, api_key_scope_role(scope))

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            header = authorization_header(request)
            if header:
                return _with_api_key(request, header, scope, key_role, view, args, kwargs)
            if not request.user.is_authenticated:
                return _json_error("sign in to the console, or send Authorization: Bearer <API key>", 401)
            reason = _csrf_failure(request)
            if reason is not None:
                return _json_error(f"CSRF check failed: {reason}", 403)
            actual = user_console_role(request.user)
            if not role_allows(actual, required):
                access_audit("auth.role_denied", request=request, object_type="path", object_id=request.path[:200],
                             summary={"required": required.value, "held": actual.value if actual else None})
                held = actual.value if actual else "no console role"
                return _json_error(f"this needs the {required.value} role or higher; you have {held}", 403)
            request.console_role = actual
            return view(request, *args, **kwargs)

        wrapped.required_role = required
        wrapped.required_scope = scope
        return csrf_exempt(wrapped)

    return decorator


def _with_api_key(request: HttpRequest, header: str, scope: str, key_role: Role, view: Callable, args: tuple,
                  kwargs: dict) -> HttpResponse:
    if not header.startswith(BEARER_PREFIX):
        return _json_error("use Authorization: Bearer <API key>", 401, bearer_error="invalid_request")
    try:
        key = api_key_authenticate(header[len(BEARER_PREFIX):], role=key_role)
    except ApiKeyRejected as exc:
        # Rejected keys count against the sign-in limit of the caller's address, as wrong passwords do: past
        # it the answer is 429 and no audit row is written (junk headers, or a script still running with the
        # key of a demoted admin, cannot flood the audit log, whose rows are kept at least 90 days).
        from apps.core.ratelimit import request_rate_check

        refused = request_rate_check(request, "auth", by="ip")
        if refused is not None:
            return refused
        # A genuine key refused for its creator's sake is named, with the creator, in the audit row.
        actor = ApiKeyPrincipal(exc.key).get_username() if exc.key is not None else "anonymous"
        access_audit("apikey.denied", request=request, actor=actor, object_type="path",
                     object_id=request.path[:200], summary={"reason": exc.reason, **exc.detail})
        return _json_error(exc.reason, exc.status, bearer_error="invalid_token" if exc.status == 401 else "")
    principal = ApiKeyPrincipal(key)
    if scope not in key.scopes:
        access_audit("apikey.denied", request=request, actor=principal.get_username(), object_type="path",
                     object_id=request.path[:200], summary={"reason": f"scope {scope} missing"})
        return _json_error(f"this API key lacks the scope {scope!r}", 403)
    request.user = principal
    request.api_key = key
    return view(request, *args, **kwargs)
