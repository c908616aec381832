"""Console sign-in and sign-out on a tenant host: OIDC (authorization code + PKCE S256, state, nonce) when the
tenant has a provider, local passwords only when it has none.

The OIDC views subclass mozilla-django-oidc's, but take the provider from the tenant at request time
(`oidc_config_effective`) instead of from settings, and call `TenantOIDCBackend.sign_in` directly: a failed
OIDC sign-in is recorded with its real reason rather than as a "wrong username or password".

Failure modes prevented:
- Login CSRF and code injection (ASVS 10.1.2, 10.2.1): the callback accepts only a `state` this browser
  session started, once, within `STATE_MAX_AGE_S`, for the provider and client still configured; PKCE
  binds the code to this session's verifier.
- A password form that still works once OIDC is on: the login page offers only the provider, and a
  password POST is refused (403) and recorded.
- Open redirects through `next`: only paths on this host are followed.
- Leaving the provider session alive at sign-out: sign-out ends the provider's session too
  (RP-initiated logout with `id_token_hint` and `post_logout_redirect_uri`).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from django.conf import settings
from django.contrib import auth
from django.contrib.auth.views import LoginView
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import render, resolve_url
from django.urls import reverse
from django.utils.crypto import get_random_string
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.cache import never_cache
from django.views.generic import View
from mozilla_django_oidc.utils import generate_code_challenge
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from apps.accounts import oidc
from apps.accounts.backends import TenantOIDCBackend
from apps.accounts.models import OidcConfig
from apps.accounts.roles import ZITADEL_ORG_SCOPE_PREFIX, ZITADEL_RESOURCE_OWNER_SCOPE
from apps.accounts.selectors import oidc_config_effective
from apps.accounts.services import access_audit
from apps.core.ratelimit import ratelimited

logger = logging.getLogger(__name__)

# Random lengths (characters of [a-zA-Z0-9], ~5.95 bits each): 32 gives state and nonce ~190 bits, 64 gives
# the PKCE verifier ~380 bits (RFC 7636 asks for 43 to 128 characters).
STATE_LENGTH = 32
NONCE_LENGTH = 32
CODE_VERIFIER_LENGTH = 64
# A sign-in not finished within ten minutes is abandoned; its state is no longer accepted.
STATE_MAX_AGE_S = 600
# Parallel sign-ins kept per session (tabs); older ones are dropped, as the library does.
MAX_PENDING_STATES = 10
# How long a console session trusts its last check with the provider before re-checking (silently, with
# prompt=none): a user removed or stripped of roles at the provider loses access within this.
OIDC_SESSION_RECHECK_S = 15 * 60

SESSION_STATES = "oidc_states"
# Set in the session that replaced one ended by a timeout (apps.accounts.middleware): the next OIDC sign-in asks
# the provider for the user's credentials (prompt=login). Otherwise the provider's own session, still alive,
# signed whoever sat at the unattended browser straight back in, and the idle timeout protected nothing.
SESSION_REAUTHENTICATE = "oidc_reauthenticate"
# The provider's clock against ours when its auth_time is compared with the sign-in's start.
AUTH_TIME_SKEW_S = 60
SESSION_ID_TOKEN = "oidc_id_token"  # noqa: S105 (a session key name)
SESSION_EXPIRATION = "oidc_id_token_expiration"
SESSION_ISSUER = "oidc_issuer"
# An organisation id goes into the scope list only as a plain token (Zitadel's ids are digits).
ORGANIZATION_ID_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,100}")


def _safe_next(request: HttpRequest, candidate: str | None) -> str:
    if candidate and url_has_allowed_host_and_scheme(candidate, allowed_hosts={request.get_host()},
                                                     require_https=request.is_secure()):
        return candidate
    return resolve_url(settings.LOGIN_REDIRECT_URL)


def _scopes(config: OidcConfig) -> str:
    """The configured scopes, plus, when the organisation is checked, Zitadel's resource-owner scope (the
    claim we check) and its organisation scope (the provider itself keeps the login in that organisation).
    An id that is not a plain token is not put into the space-separated scope list."""
    scopes = config.scopes.split()
    if config.organization_id:
        wanted = [ZITADEL_RESOURCE_OWNER_SCOPE]
        if ORGANIZATION_ID_TOKEN.fullmatch(config.organization_id):
            wanted.append(ZITADEL_ORG_SCOPE_PREFIX + config.organization_id)
        scopes += [scope for scope in wanted if scope not in scopes]
    return " ".join(scopes)


def _failure(request: HttpRequest, reason: str, status: int, *, summary: dict[str, Any] | None = None) -> HttpResponse:
    access_audit("auth.login_failed", request=request, actor="anonymous", object_type="oidc",
                 summary={"reason": reason, **(summary or {})})
    return render(request, "accounts/oidc_failed.html", {"reason": reason}, status=status)


def _unbound_failure(request: HttpRequest) -> HttpResponse:
    """The platform's default provider on a tenant bound to no organisation: refused before the provider
    is asked, with what to do for the operator in the log."""
    logger.error(
        "console sign-in refused: tenant %s signs in through the platform's OIDC provider (OIDC_ISSUER) but is "
        "bound to no organisation there; set its organisation id (Zitadel resource owner id) in the field "
        "'organisation at the platform sign-in provider' of the tenant in the public host's admin "
        "(Tenant.oidc_organization_id; `tenant_create --oidc-organization` for new tenants), or give the "
        "tenant a provider of its own", connection.schema_name, extra={"tenant": connection.schema_name})
    if request.user.is_authenticated:
        auth.logout(request)
    return _failure(request, oidc.ORGANIZATION_UNBOUND_REASON, 403)


@method_decorator(ratelimited("auth", methods=("POST",)), name="dispatch")
class ConsoleLoginView(LoginView):
    """The login page: a link to the tenant's provider, or Django's password form when it has none."""

    template_name = "registration/login.html"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        config = oidc_config_effective()
        if config is None:
            return super().dispatch(request, *args, **kwargs)
        next_url = _safe_next(request, request.GET.get("next"))
        start = reverse("oidc_authentication_init") + "?" + urlencode({"next": next_url})
        # A tenant bound to no organisation at the platform's provider: say so here, not after a click.
        context = {"oidc": config, "oidc_start": start,
                   "oidc_unbound": oidc.ORGANIZATION_UNBOUND_REASON if config.organization_unbound else ""}
        if request.method == "POST":
            access_audit("auth.login_failed", request=request, actor=str(request.POST.get("username", ""))[:150]
                         or "anonymous", summary="password sign-in refused: this tenant signs in through OIDC")
            context["password_refused"] = True
            return render(request, self.template_name, context, status=403)
        if request.method != "GET":
            return HttpResponseNotAllowed(["GET"])
        return render(request, self.template_name, context)


@method_decorator(never_cache, name="dispatch")
class TenantOIDCAuthenticationRequestView(OIDCAuthenticationRequestView):
    """Starts the code flow at the tenant's provider (the library's view reads a single provider from
    settings; this one stores, per state, the nonce, the PKCE verifier and which provider it was for)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        View.__init__(self, *args, **kwargs)

    def get(self, request: HttpRequest) -> HttpResponse:
        config = oidc_config_effective()
        if config is None:
            return HttpResponseRedirect(reverse("login"))
        if config.organization_unbound:
            return _unbound_failure(request)
        try:
            metadata = oidc.provider_metadata(config.issuer, trusted=config.is_platform_default)
        except oidc.OidcError as exc:
            return _failure(request, exc.reason, exc.status)
        state = get_random_string(STATE_LENGTH)
        nonce = get_random_string(NONCE_LENGTH)
        verifier = get_random_string(CODE_VERIFIER_LENGTH)
        params = {
            "response_type": "code",
            "client_id": config.client_id,
            "redirect_uri": request.build_absolute_uri(reverse("oidc_authentication_callback")),
            "scope": _scopes(config),
            "state": state,
            "nonce": nonce,
            "code_challenge": generate_code_challenge(verifier, "S256"),
            "code_challenge_method": "S256",
        }
        if request.GET.get("prompt") == "none":  # the session re-check of OidcSessionRefreshMiddleware
            params["prompt"] = "none"
        elif request.session.get(SESSION_REAUTHENTICATE):
            # Kept until a sign-in proves a fresh login (the callback): starting again, or removing the prompt
            # from the URL, must not let the provider's live session sign the browser back in. max_age=0 makes
            # the provider put auth_time in the ID token.
            params["prompt"], params["max_age"] = "login", "0"
        states = request.session.get(SESSION_STATES)
        states = states if isinstance(states, dict) else {}
        oldest_first = sorted(states, key=lambda s: states[s].get("added_on", 0) if isinstance(states[s], dict) else 0)
        for old in oldest_first[: max(0, len(states) - MAX_PENDING_STATES + 1)]:
            del states[old]
        states[state] = {"nonce": nonce, "code_verifier": verifier, "added_on": time.time(),
                         "issuer": config.issuer, "client_id": config.client_id,
                         "next": _safe_next(request, request.GET.get("next")),
                         "silent": params.get("prompt") == "none",
                         "reauthenticate": params.get("prompt") == "login"}
        request.session[SESSION_STATES] = states
        separator = "&" if "?" in metadata.authorization_endpoint else "?"
        return HttpResponseRedirect(metadata.authorization_endpoint + separator + urlencode(params))


def _freshly_authenticated(result, pending: dict) -> bool:
    """Did the provider ask for credentials during this sign-in (its ID token's auth_time, which max_age=0 makes
    it send, is no older than the sign-in's start, give or take the clocks' skew)?"""
    return (bool(pending.get("reauthenticate")) and result.auth_time is not None
            and result.auth_time >= pending.get("added_on", 0) - AUTH_TIME_SKEW_S)


@method_decorator(never_cache, name="dispatch")
@method_decorator(ratelimited("auth", methods=("GET",)), name="dispatch")
class TenantOIDCAuthenticationCallbackView(OIDCAuthenticationCallbackView):
    """The provider's redirect back: checks the state, then lets TenantOIDCBackend do the rest."""

    def get(self, request: HttpRequest) -> HttpResponse:
        config = oidc_config_effective()
        if config is None:
            return _failure(request, "this tenant does not sign in through OIDC", 404)
        states = request.session.get(SESSION_STATES)
        pending = states.pop(request.GET.get("state", ""), None) if isinstance(states, dict) else None
        if pending is not None:
            request.session[SESSION_STATES] = states  # used once, success or not
        if pending is None:
            return _failure(request, "this sign-in was not started in this browser, or was already used", 400)
        if time.time() - pending.get("added_on", 0) > STATE_MAX_AGE_S:
            return _failure(request, "this sign-in took too long; start again", 400)
        if (pending.get("issuer"), pending.get("client_id")) != (config.issuer, config.client_id):
            return _failure(request, "the tenant's sign-in provider changed during this sign-in; start again", 400)
        if "iss" in request.GET and request.GET["iss"] != config.issuer:
            # RFC 9207: the provider names itself in the response; another name is a mix-up attack.
            return _failure(request, "the answer comes from another provider than this sign-in's (iss)", 400)
        if request.GET.get("error"):
            return self._provider_error(request, pending)
        code = request.GET.get("code", "")
        if not code:
            return _failure(request, "the provider sent no authorization code", 400)
        try:
            result = TenantOIDCBackend().sign_in(
                request, config=config, code=code, nonce=pending["nonce"], code_verifier=pending["code_verifier"],
                redirect_uri=request.build_absolute_uri(reverse("oidc_authentication_callback")),
            )
        except oidc.OidcError as exc:
            if request.user.is_authenticated:
                auth.logout(request)
            return _failure(request, exc.reason, exc.status, summary={"issuer": config.issuer})
        if result.user is None:
            if request.user.is_authenticated:
                auth.logout(request)
            access_audit("auth.role_denied", request=request, actor="anonymous", object_type="oidc_subject",
                         object_id=result.subject, summary={"issuer": config.issuer, "reason": "no mapped role"})
            return render(request, "accounts/no_access.html", {"display": result.display, "config": config},
                          status=403)
        if request.session.get(SESSION_REAUTHENTICATE) and not _freshly_authenticated(result, pending):
            return _failure(request, "after a time without activity the provider must ask for your password "
                                     "again, and it did not; sign in again", 401)
        if request.user.is_authenticated and request.user.pk != result.user.pk:
            auth.logout(request)
        if not request.user.is_authenticated:
            auth.login(request, result.user, backend=result.user.backend)
        request.session.pop(SESSION_REAUTHENTICATE, None)
        self._session_mark(request, config, result.id_token)
        return HttpResponseRedirect(pending.get("next") or resolve_url(settings.LOGIN_REDIRECT_URL))

    @staticmethod
    def _session_mark(request: HttpRequest, config: OidcConfig, id_token: str) -> None:
        request.session[SESSION_ID_TOKEN] = id_token  # the id_token_hint of sign-out
        request.session[SESSION_ISSUER] = config.issuer
        request.session[SESSION_EXPIRATION] = time.time() + OIDC_SESSION_RECHECK_S

    def _provider_error(self, request: HttpRequest, pending: dict) -> HttpResponse:
        error = request.GET.get("error", "")[:60]
        if request.user.is_authenticated:
            auth.logout(request)  # a failed re-check ends the console session
        if pending.get("silent") and error in {"login_required", "interaction_required", "consent_required"}:
            return HttpResponseRedirect(reverse("login") + "?" + urlencode({"next": pending.get("next", "")}))
        return _failure(request, f"the provider refused the sign-in ({error})", 403)


@method_decorator(never_cache, name="dispatch")
class ConsoleLogoutView(View):
    """Sign-out (POST only): ends the console session and, for OIDC users, the provider's session."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        home = resolve_url(settings.LOGOUT_REDIRECT_URL)
        id_token = request.session.get(SESSION_ID_TOKEN)
        issuer = request.session.get(SESSION_ISSUER)
        config = oidc_config_effective()
        target = home
        if id_token and config is not None and config.issuer == issuer:
            try:
                metadata = oidc.provider_metadata(config.issuer, trusted=config.is_platform_default)
                target = oidc.end_session_url(metadata=metadata, client_id=config.client_id, id_token=id_token,
                                              post_logout_redirect_uri=request.build_absolute_uri(home)) or home
            except oidc.OidcError:
                target = home  # the provider is down: sign out here at least
        auth.logout(request)
        return HttpResponseRedirect(target)
