"""Chat over HTTP: upstream's anonymous bootstrap and bot config (spec 6.2, 6.6), and a REST API for clients
that do not speak WebSocket: create a session, post a message and get the replies as JSON or as a stream
of server-sent events, read the history. The schema is served at /api/openapi.json.

A session id is the capability, as in upstream (random UUIDs, unguessable), for the sessions of anonymous visitors
on the public chat channels only (web, api: services._reachable); any other session (an e-mail conversation, a
known person's) answers as an unknown one. The endpoints carry no cookies' authority, so they are CSRF-exempt.
Every message endpoint is rate limited per session and per IP. A turn takes one of its tenant's turn slots of
the process (apps.sessions.slots): a message arriving while the tenant's turns fill them waits a little, then is
refused as busy (503) and not taken; a stream's turn waits its turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.bots.config_csv import VAULT_REFERENCE_PREFIX, config_key_normalize
from apps.bots.selectors import bot_config_values
from apps.compliance.services import request_client_ip
from apps.core.ratelimit import ratelimited
from apps.core.wire import WireError, json_loads
from apps.sessions import events, services
from apps.sessions.models import MessageType
from apps.sessions.openapi import openapi_schema
from apps.sessions.slots import TurnSlotBusy, turn_slots
from apps.sessions.turns import TurnError, message_event

logger = logging.getLogger(__name__)

# Request bodies of the message endpoints: a message plus a little JSON around it.
BODY_MAX_BYTES = 64 * 1024
# Config keys /api/bot/config serves. Upstream serves the whole map; ours only what a chat client shows (spec 6.5:
# theme colours, logo, title; 2.4.1: the bot's name, description, welcome message, language, public flag), named
# in their canonical spelling (config_key_normalize: `Theme Color` is theme-color1, `Bot Name` bot-name) and
# served under the spelling the bot's config.csv uses, which upstream's client reads. Not `bot-*` as a whole:
# `bot-system-prompt` is a spelling of the system prompt.
PUBLIC_CONFIG_KEYS = frozenset({"theme", "bot-name", "bot-description", "welcome-message", "default-language",
                                "supported-languages", "public"})
PUBLIC_CONFIG_PREFIXES = ("theme-",)
# Never served, even when allowed above: a key whose name says it holds a prompt or a credential.
_SECRET_MARKERS = ("prompt", "key", "pass", "secret", "token", "credential")


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _body(request: HttpRequest) -> dict:
    if len(request.body) > BODY_MAX_BYTES:
        raise TurnError(f"request body too large (limit {BODY_MAX_BYTES} bytes)")
    if not request.body:
        return {}
    try:
        data = json_loads(request.body)
    except WireError as exc:
        raise TurnError(f"malformed JSON body: {exc}") from None
    except ValueError:
        raise TurnError("malformed JSON body") from None
    if not isinstance(data, dict):
        raise TurnError("the body must be a JSON object")
    return data


# The message types a REST client may send (the OpenAPI enum): a user message, a suggestion's text, a tool
# button, a system message (ignored), a format switcher toggle. The others are the bot's or upstream-internal.
REST_MESSAGE_TYPES = (MessageType.USER, MessageType.SUGGESTION, MessageType.TOOL_EXEC, MessageType.SYSTEM,
                      MessageType.SWITCHER_TOGGLE)
_MESSAGE_TYPES_TEXT = ", ".join(str(int(t)) for t in REST_MESSAGE_TYPES)
# A message type sent as a string ("6", as the WebSocket frames allow): ASCII digits only, a few of them
# (str.isdigit also takes "²", which int() refuses, and int() refuses more than 4300 digits).
_MESSAGE_TYPE_TEXT = re.compile(r"\s*([0-9]{1,3})\s*")


def _message_of(data: dict) -> tuple[str, int]:
    """(text, message_type) of a message body, as sent: a list or a boolean is no text (it is not written
    down as "['hi']" or "True"), a message type outside the documented ones is refused."""
    content = data.get("content", data.get("text", ""))
    if not isinstance(content, str):
        raise TurnError("content must be text")
    message_type = data.get("message_type", MessageType.USER)
    if isinstance(message_type, str) and (digits := _MESSAGE_TYPE_TEXT.fullmatch(message_type)):
        message_type = int(digits.group(1))  # "6": lenient, as the WebSocket frames are
    if isinstance(message_type, bool) or not isinstance(message_type, int) or message_type not in REST_MESSAGE_TYPES:
        raise TurnError(f"message_type must be one of {_MESSAGE_TYPES_TEXT}")
    return content, message_type


# A client's id of a message (Idempotency-Key header or client_message_id): a UUID or similar token. Longer
# ids are refused rather than cut (two ids sharing a prefix must not meet).
CLIENT_MESSAGE_ID_MAX_CHARS = 200
_PRINTABLE_ID = re.compile(r"[\x21-\x7e]+")


def _client_message_id(request: HttpRequest, data: dict) -> str | None:
    """The client's id of the message: the `Idempotency-Key` header, else the body's `client_message_id`."""
    value = request.headers.get("Idempotency-Key")
    if value is None:
        value = data.get("client_message_id")
    if value is None:
        return None
    if (not isinstance(value, str) or len(value) > CLIENT_MESSAGE_ID_MAX_CHARS
            or not _PRINTABLE_ID.fullmatch(value)):
        raise TurnError(f"Idempotency-Key (client_message_id) must be 1 to {CLIENT_MESSAGE_ID_MAX_CHARS} visible "
                        "ASCII characters")
    return value


def _session_json(session) -> dict:
    return {"session_id": str(session.id), "user_id": str(session.user_id), "bot_id": str(session.bot_id),
            "bot_name": session.bot.name, "channel": session.channel, "title": session.title,
            "created_at": session.created_at.isoformat()}


@require_GET
@ratelimited("api", by="ip")
def auth_bootstrap(request: HttpRequest) -> JsonResponse:
    """GET /api/auth?bot_name=&user_id=&session_id= (spec 6.2)."""
    try:
        session = services.session_bootstrap(bot_name=request.GET.get("bot_name") or "default",
                                             user_id=request.GET.get("user_id"),
                                             session_id=request.GET.get("session_id"))
    except services.UnknownBot as exc:
        return _error(404, str(exc))
    return JsonResponse({"user_id": str(session.user_id), "session_id": str(session.id),
                         "bot_id": str(session.bot_id), "bot_name": session.bot.name, "status": "anonymous"})


def _public_config_key(key: str) -> bool:
    canonical = config_key_normalize(key)
    if canonical not in PUBLIC_CONFIG_KEYS and not canonical.startswith(PUBLIC_CONFIG_PREFIXES):
        return False
    return not any(marker in name for name in (key.lower(), canonical) for marker in _SECRET_MARKERS)


def public_config(values: dict[str, str]) -> dict[str, str]:
    """Only what a chat client shows (theme, the bot's name, welcome text...): an allow-list, so a prompt, a new
    credential or an internal URL key is never served by accident; nor is a vault reference."""
    return {k: v for k, v in values.items()
            if _public_config_key(k) and not str(v).strip().lower().startswith(VAULT_REFERENCE_PREFIX)}


@require_GET
def bot_config(request: HttpRequest) -> JsonResponse:
    """GET /api/bot/config?bot_name=: the bot's config map (theme, title...) without credentials."""
    try:
        bot = services.bot_by_name(request.GET.get("bot_name") or "default")
    except services.UnknownBot as exc:
        return _error(404, str(exc))
    return JsonResponse(public_config(bot_config_values(bot)))


# A message refused because its tenant's running turns left it no slot may be sent again after this long: a
# few seconds let one of them end.
BUSY_RETRY_AFTER_S = 5


def _turns_busy() -> JsonResponse:
    """503 for a message its tenant's turns left no slot for: not taken, to be sent again (the answer while the
    rate-limit store is down, with its own reason)."""
    from apps.core.ratelimit import rate_limit_unavailable_response
    from apps.sessions.consumers import SERVICE_BUSY

    return rate_limit_unavailable_response(error="busy", message=SERVICE_BUSY, retry_after_s=BUSY_RETRY_AFTER_S)


def _turn_slot() -> contextlib.AbstractContextManager[None]:
    """One of the tenant's turn slots for a turn run in this request's thread; while it waits for one, the
    request holds no database connection (it is closed, and opened again for the turn)."""
    return turn_slots.held_blocking(connection.schema_name, before_wait=connection.close)


def _bot_config_of_request(request: HttpRequest):
    return None  # platform defaults for the IP bucket; per-bot limits apply per session in apps.sessions.limits


def _message_rate(request: HttpRequest, session) -> JsonResponse | None:
    from apps.core.ratelimit import RateLimitUnavailable, rate_limit_unavailable_response
    from apps.sessions.limits import chat_rate_limit, message_rate_check

    try:
        wait = message_rate_check(session_id=str(session.id), ip=request_client_ip(request) or "",
                                  limit=chat_rate_limit(session.bot))
    except RateLimitUnavailable:
        return rate_limit_unavailable_response()
    if wait:
        response = _error(429, f"too many messages; retry in {int(wait) + 1} s")
        response["Retry-After"] = str(int(wait) + 1)
        return response
    return None


@csrf_exempt
@require_POST
@ratelimited("chat", by="ip", config=_bot_config_of_request)
def sessions_create(request: HttpRequest) -> JsonResponse:
    """POST /api/sessions {"bot_name", "user_id"?}: a new session; start.bas runs, its messages returned."""
    session = None
    try:
        data = _body(request)
        session = services.session_bootstrap(bot_name=str(data.get("bot_name") or ""),
                                             user_id=data.get("user_id"), channel="api")
        # start.bas is a turn; a bot without one has nothing to run (its session is created started).
        with contextlib.nullcontext() if (session.state or {}).get("started") else _turn_slot():
            produced = services.session_start(session, sink=events.GroupSink(connection.schema_name,
                                                                             str(session.id)))
    except services.UnknownBot as exc:
        return _error(404, str(exc))
    except TurnSlotBusy:
        # Refused as busy: the session made a moment ago never started, and every retry would leave another.
        session.delete()
        return _turns_busy()
    except TurnError as exc:
        return _error(400, str(exc))
    session.refresh_from_db()
    return JsonResponse({**_session_json(session), "messages": [message_event(m) for m in produced],
                         "suggestions": (session.state or {}).get("suggestions") or []}, status=201)


def _session_or_404(session_id) -> object:
    try:
        return services.session_get(str(session_id))
    except services.UnknownSession:
        return None


@csrf_exempt
@require_http_methods(["GET", "POST"])
def session_messages(request: HttpRequest, session_id) -> JsonResponse:
    """POST: run a turn, answer with the bot's messages. GET: the history (`?after=<index>&limit=`)."""
    session = _session_or_404(session_id)
    if session is None:
        return _error(404, "no such session")
    if request.method == "GET":
        return _history(request, session)
    limited = _message_rate(request, session)
    if limited is not None:
        return limited
    try:
        data = _body(request)
        text, message_type = _message_of(data)
        client_message_id = _client_message_id(request, data)
        sink = events.GroupSink(connection.schema_name, str(session.id))
        with _turn_slot():
            produced = services.turn_run(session, text=text, message_type=message_type, sink=sink,
                                         client_message_id=client_message_id)
    except TurnSlotBusy:
        return _turns_busy()
    except TurnError as exc:
        return _error(400, str(exc))
    session.refresh_from_db()
    return JsonResponse({"session_id": str(session.id), "messages": [message_event(m) for m in produced],
                         "suggestions": (session.state or {}).get("suggestions") or []})


def _history(request: HttpRequest, session) -> JsonResponse:
    try:
        after = int(request.GET.get("after", -1))
        limit = int(request.GET.get("limit", services.HISTORY_PAGE_MAX))
    except ValueError:
        return _error(400, "after and limit must be whole numbers")
    messages = services.history(session, after=after, limit=limit)
    return JsonResponse({"session_id": str(session.id), "messages": messages,
                         "next_after": messages[-1]["index"] if messages else after})


@require_GET
def session_history(request: HttpRequest, session_id) -> JsonResponse:
    session = _session_or_404(session_id)
    if session is None:
        return _error(404, "no such session")
    return _history(request, session)


def _sse(event: dict) -> bytes:
    kind = event.get("kind", "message")
    if kind == "message" and event.get("update"):
        # A message already sent, changed (apps.sessions.events): its own event name, so a client that appends
        # each `message` does not show it twice; one that wants the change listens for `message_update`.
        kind = "message_update"
    return f"event: {kind}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


@csrf_exempt
@require_POST
async def session_stream(request: HttpRequest, session_id):
    """POST /api/sessions/<id>/stream {"content"}: the turn as server-sent events (`message`, `delta`,
    `thinking`, `suggestions`, `status`, `message_update` for a message sent before and changed), ending with
    `event: done`."""
    from apps.sessions.consumers import turn_dispatch

    # Not connection.schema_name: this coroutine runs on the event loop, whose connection is not the one
    # the tenant middleware switched (that one belongs to the sync thread); it would name `public`.
    schema = request.tenant.schema_name
    session = await sync_to_async(_session_or_404)(session_id)
    if session is None:
        return _error(404, "no such session")
    limited = await sync_to_async(_message_rate)(request, session)
    if limited is not None:
        return limited
    try:
        data = _body(request)
        text, message_type = _message_of(data)
        text = services.message_check(text)
        client_message_id = _client_message_id(request, data)
    except TurnError as exc:
        return _error(400, str(exc))
    queue: asyncio.Queue = asyncio.Queue()
    task = await turn_dispatch(schema, str(session.id), _stream_turn, str(session.id), text, message_type,
                               client_message_id, extra=queue)

    async def body():
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yield _sse(getter.result())
                continue
            getter.cancel()
            while not queue.empty():
                yield _sse(queue.get_nowait())
            yield b"event: done\ndata: {}\n\n"
            return

    response = StreamingHttpResponse(body(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # proxies must not buffer the stream
    return response


def _stream_turn(session_id: str, text: str, message_type: int, client_message_id: str | None, sink) -> None:
    session = services.session_get(session_id, page_token_ok=True)  # checked by the view already
    services.turn_run(session, text=text, message_type=message_type, sink=sink, client_message_id=client_message_id)


@require_GET
def openapi(request: HttpRequest) -> JsonResponse:
    return JsonResponse(openapi_schema(request.build_absolute_uri("/")))
