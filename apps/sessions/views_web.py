"""The HTMX web chat page: `/<bot>/` (full page) and `/<bot>/embed` (compact, for an iframe).

The page renders the conversation so far on the server and then connects to `/ws/<bot>/ui` (the client
protocol is written down in apps.sessions.rendering). Failure modes this module prevents:

- A visitor's conversation readable by another site or another tenant subdomain: the session id lives in
  a signed, host-only, HttpOnly, SameSite=Lax cookie, one per bot; a tampered or foreign cookie is
  ignored (a new session starts).
- Anyone who guesses or learns a session id attaching to it over the socket: the WebSocket URL carries a
  token, an HMAC of (tenant, bot, session id) made with the server's secret, which the consumer checks
  (`chat_ws_token_state`) before joining the session. It carries the time it was made and expires after
  CHAT_WS_TOKEN_MAX_AGE_S (it rides in a URL, which proxies may log).
- Clickjacking of the full page: only the embed view may be framed, and only by the origins listed in
  the bot's config.csv key `web-embed-origins` (default: our own origin only). It sends its own
  Content-Security-Policy with that `frame-ancestors` (SecurityHeadersMiddleware keeps a view's own CSP)
  and is exempt from X-Frame-Options (that header cannot name an allowed origin).
"""

from __future__ import annotations

import logging
import re

from django.conf import settings
from django.core import signing
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.http import require_safe

from apps.sessions.rendering import message_dict, message_fragment, render_markdown

logger = logging.getLogger(__name__)

# Anonymous sessions are purged after 7 days without activity (spec 6.1): the cookie lives as long, and
# each visit renews it.
CHAT_COOKIE_MAX_AGE_S = 7 * 24 * 3600
# The page renders this many most recent messages; older ones stay in the database (a long-lived
# session must not produce a page of megabytes). Resume works from the newest index shown.
HISTORY_RENDER_MAX = 200
# The page's socket token (see the module docstring) opens the conversation for this long after the page was
# served: the token rides in the socket's URL, which proxies may log, so a leaked one must not open the
# conversation for ever. A page left open longer reloads itself for a fresh one (static/chat/chat.js).
CHAT_WS_TOKEN_MAX_AGE_S = 24 * 3600
TOKEN_OK, TOKEN_EXPIRED, TOKEN_BAD = "ok", "expired", "bad"
# config.csv key listing the origins allowed to frame `/<bot>/embed` (space or comma separated).
EMBED_ORIGINS_KEY = "web-embed-origins"
# One origin for frame-ancestors: scheme, host (optionally `*.` wildcard subdomain), optional port. Nothing
# else: a quote, semicolon or space would change the policy itself.
EMBED_ORIGIN_RE = re.compile(r"^https?://(?:\*\.)?[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?::[0-9]{1,5})?$")
# theme-color1/2 become CSS custom properties (set by chat.js): plain hex colours only.
THEME_COLOR_RE = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")


def chat_cookie_name(bot_name: str) -> str:
    return f"gbchat_{bot_name}"


def _cookie_salt(tenant_schema: str, bot_name: str) -> str:
    return f"chat.web.cookie:{tenant_schema}:{bot_name}"


def _ws_signer(tenant_schema: str, bot_name: str) -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=f"chat.web.ws:{tenant_schema}:{bot_name}")


def chat_ws_token(*, tenant_schema: str, bot_name: str, session_id: str) -> str:
    """The token the page puts in its WebSocket URL for this session: when it was made and its signature."""
    return _ws_signer(tenant_schema, bot_name).sign(str(session_id)).removeprefix(f"{session_id}:")


def chat_ws_token_state(*, tenant_schema: str, bot_name: str, session_id: str, token: str) -> str:
    """For the `/ws/<bot>/ui` consumer: TOKEN_OK when `token` (query `token`) was made for `session_id` (query
    `session_id`) of this tenant and bot within CHAT_WS_TOKEN_MAX_AGE_S, TOKEN_EXPIRED when it was but is
    older, TOKEN_BAD otherwise. Refuse the connection unless it is TOKEN_OK."""
    if not session_id or not token or ":" in session_id:
        return TOKEN_BAD
    try:
        _ws_signer(tenant_schema, bot_name).unsign(f"{session_id}:{token}", max_age=CHAT_WS_TOKEN_MAX_AGE_S)
    except signing.SignatureExpired:
        return TOKEN_EXPIRED
    except signing.BadSignature:
        return TOKEN_BAD
    return TOKEN_OK



def embed_frame_ancestors(value: str | None) -> list[str]:
    """The frame-ancestors sources for the embed page from the bot's `web-embed-origins` value."""
    sources = ["'self'"]
    for origin in re.split(r"[\s,]+", value or ""):
        if not origin:
            continue
        if EMBED_ORIGIN_RE.match(origin):
            sources.append(origin.lower())
        else:
            logger.warning("config.csv %s: %r is not an origin (https://host[:port]); ignored",
                           EMBED_ORIGINS_KEY, origin)
    return sources


def _embed_csp(request: HttpRequest, frame_ancestors: list[str]) -> str:
    from apps.compliance.middleware import content_security_policy, csp_extra_sources_parse

    policy = content_security_policy(
        extra=csp_extra_sources_parse(getattr(settings, "SECURITY_CSP_EXTRA_SOURCES", ())),
        websocket_host=request.get_host(),
        secure=request.is_secure(),
    )
    directives = [d for d in policy.split("; ") if not d.startswith("frame-ancestors ")]
    directives.append("frame-ancestors " + " ".join(frame_ancestors))
    return "; ".join(directives)


class _TooManyNewChats(Exception):
    def __init__(self, wait_s: float) -> None:
        super().__init__(wait_s)
        self.wait_s = wait_s


def _new_chat_rate_check(request: HttpRequest) -> None:
    """A page load without the chat cookie starts a conversation (a user and a session rows): counted per
    address in its own bucket, CHAT_PAGE_LOADS_PER_MINUTE (crawlers and scripted loads would otherwise fill
    the tables)."""
    from apps.compliance.services import request_client_ip
    from apps.sessions.limits import connect_rate_check

    wait = connect_rate_check(request_client_ip(request) or "", scope="chat.page",
                              per_minute=int(getattr(settings, "CHAT_PAGE_LOADS_PER_MINUTE", 240)))
    if wait:
        raise _TooManyNewChats(wait)


def _too_many(exc: _TooManyNewChats) -> HttpResponse:
    response = HttpResponse("Too many new conversations from your address; try again in a minute.", status=429,
                            content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(int(exc.wait_s) + 1)
    return response


def _chat_context(request: HttpRequest, bot_name: str) -> tuple[dict, str, dict[str, str]]:
    from apps.bots.config_csv import config_lookup
    from apps.bots.selectors import bot_config_values
    from apps.sessions.models import Message
    from apps.sessions.services import UnknownBot, bot_by_name, session_bootstrap
    from apps.sessions.turns import chat_message_max_chars

    try:
        bot = bot_by_name(bot_name)  # case-insensitive: /Demo/ is the demo bot's page too
    except UnknownBot:
        raise Http404("no such bot") from None
    tenant_schema = request.tenant.schema_name
    cookie_session = request.get_signed_cookie(
        chat_cookie_name(bot.name), default=None, salt=_cookie_salt(tenant_schema, bot.name),
        max_age=CHAT_COOKIE_MAX_AGE_S,
    )
    if cookie_session is None:
        _new_chat_rate_check(request)
    session = session_bootstrap(bot_name=bot.name, session_id=cookie_session, channel="web", page_bound=True,
                                 page_token_ok=True)
    session_id = str(session.id)
    rows = list(Message.objects.filter(session=session).order_by("-index")[:HISTORY_RENDER_MAX])
    history = [message_fragment(msg, oob=False) for msg in map(message_dict, reversed(rows)) if msg]
    config = bot_config_values(bot)
    welcome = config_lookup(config, "welcome-message") or ""
    colors = {
        name: value for name in ("theme-color1", "theme-color2")
        if (value := config_lookup(config, name)) and THEME_COLOR_RE.match(value)
    }
    context = {
        "bot": bot,
        "title": config_lookup(config, "theme-title") or bot.display_name or bot.name,
        "session_id": session_id,
        "ws_url": f"/ws/{bot.name}/ui",
        "ws_token": chat_ws_token(tenant_schema=tenant_schema, bot_name=bot.name, session_id=session_id),
        "history": history,
        "welcome_html": render_markdown(welcome) if welcome and not history else "",
        "theme_color1": colors.get("theme-color1", ""),
        "theme_color2": colors.get("theme-color2", ""),
        # The input's maxlength: the turn's own limit, so the page never lets a visitor type what it refuses.
        "input_max_chars": chat_message_max_chars(),
    }
    return context, session_id, config


def _with_session_cookie(request: HttpRequest, response: HttpResponse, bot_name: str, session_id: str) -> HttpResponse:
    # No domain: a host-only cookie, never sent to another tenant's subdomain.
    response.set_signed_cookie(
        chat_cookie_name(bot_name), session_id, salt=_cookie_salt(request.tenant.schema_name, bot_name),
        max_age=CHAT_COOKIE_MAX_AGE_S, httponly=True, samesite="Lax", secure=request.is_secure(),
    )
    return response


@require_safe
@never_cache
def chat_page(request: HttpRequest, bot: str) -> HttpResponse:
    """`/<bot>/`: the full-page web chat."""
    try:
        context, session_id, _config = _chat_context(request, bot)
    except _TooManyNewChats as exc:
        return _too_many(exc)
    response = render(request, "chat/page.html", {**context, "embed": False})
    return _with_session_cookie(request, response, context["bot"].name, session_id)


@require_safe
@never_cache
@xframe_options_exempt
def chat_embed(request: HttpRequest, bot: str) -> HttpResponse:
    """`/<bot>/embed`: the compact chat for an iframe, frameable by the bot's `web-embed-origins`.

    In a cross-site iframe browsers do not store or send SameSite=Lax cookies, so there each page load
    starts a new session; on the same site (or opened directly) the conversation is kept as on `/<bot>/`.
    """
    from apps.bots.config_csv import config_lookup
    from apps.compliance.middleware import CSP_HEADER

    try:
        context, session_id, config = _chat_context(request, bot)
    except _TooManyNewChats as exc:
        return _too_many(exc)
    response = render(request, "chat/page.html", {**context, "embed": True})
    response[CSP_HEADER] = _embed_csp(request, embed_frame_ancestors(config_lookup(config, EMBED_ORIGINS_KEY)))
    return _with_session_cookie(request, response, context["bot"].name, session_id)
