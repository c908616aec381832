"""The chat's service layer: sessions, turns and history. Consumers, REST views, e-mail and jobs call these.

Every function works in the tenant active on the connection.
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from apps.bots.models import BOT_NAME_RE, Bot
from apps.sessions import events
from apps.sessions.models import ChatSession, ChatUser, Message, MessageType, Role
from apps.sessions.turns import (
    TurnError,
    bot_has_start_script,
    chat_message_max_chars,
    message_event,
    turn_execute,
)

# History pages: a client reading a long conversation pages through it.
HISTORY_PAGE_MAX = 200
# Channels a session can be opened on (spec 6.1 titles: web chat, API, e-mail, automation).
CHANNELS = ("web", "api", "email", "job")
# The public chat's channels (the web chat, upstream's client, the REST API): the only sessions the public chat
# endpoints reach, and only those of anonymous visitors (see _reachable).
PUBLIC_CHANNELS = ("web", "api")
ANONYMOUS_TITLE = "Anonymous Chat"
# State flag of sessions created by the web chat page (see _reachable).
PAGE_BOUND = "page_bound"
# Control characters other than tab and newlines are dropped from input (they carry no text, and one of
# them marks sealed values in apps.sessions.fields).
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# What a bot's name can be (apps.bots.models): anything else names no bot and is not looked up (a NUL in it
# would make the database refuse the query).
_BOT_NAME = re.compile(BOT_NAME_RE)
# How much of an unknown name the error repeats.
UNKNOWN_NAME_SHOWN_CHARS = 63
# A dialog still suspended at a WAIT this long after the WAIT ended lost its resume: `chat.resume_wait` is queued
# on commit with the WAIT's countdown, and nothing else continues the dialog when that message never reached the
# broker (down at commit), a restarted Redis dropped it, or the worker holding it until due was killed (Redis
# gives an unacknowledged message back only after the visibility timeout, two hours). Beat's lost-wait sweep
# (`chat.sweep_lost_waits`, every minute) then queues the resume again. Short, since someone may be watching the
# chat; long enough that a resume merely a little late (its worker finishing another task on `jobs` first) is
# seldom doubled. A double does nothing: it carries the WAIT's token and runs under the session's lock, so the
# second finds the dialog moved on (`Turn.resume_wait`).
WAIT_RESUME_GRACE = timedelta(minutes=2)
# Resumes one sweep queues per tenant, longest overdue first; the others wait for the next sweep a minute later.
# After Redis lost every queued resume, a tenant with thousands of visitors at a WAIT must not put thousands of
# turns on `jobs` at once ahead of every other tenant's scheduled runs.
WAIT_SWEEP_BATCH = 100
# A WAIT overdue this long is not resumed but given up (its due time cleared; the dialog stays where it is, as
# before the sweep existed): the sweep runs every minute and moves the due time of what it queues, so only a
# platform whose beat was stopped for this long meets one, and resuming a conversation of a day ago would append
# bot messages to it out of the blue and bring it to the top of the console's list.
WAIT_RESUME_MAX_OVERDUE = timedelta(days=1)

logger = logging.getLogger(__name__)


class UnknownBot(TurnError):
    pass


class UnknownSession(TurnError):
    pass


def _uuid(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


def bot_by_name(name: str) -> Bot:
    wanted = str(name or "").strip().lower()
    bot = Bot.objects.filter(name=wanted).first() if _BOT_NAME.fullmatch(wanted) else None
    if bot is None:
        shown = _CONTROL_CHARS.sub("", str(name or ""))[:UNKNOWN_NAME_SHOWN_CHARS]
        raise UnknownBot(f"no bot named '{shown}'")
    return bot


def _anonymous_user(user_id: uuid.UUID | None) -> ChatUser:
    if user_id is not None:
        user = ChatUser.objects.filter(pk=user_id).first()
        if user is not None and user.is_anonymous:
            return user
        if user is not None:
            user_id = None  # a known person (an e-mail contact...) is never claimed by an id in a URL
    new_id = user_id or uuid.uuid4()
    short = new_id.hex[:8]
    user, _ = ChatUser.objects.get_or_create(
        pk=new_id, defaults={"username": f"guest_{short}", "email": f"guest_{short}@anonymous.local"})
    return user


@transaction.atomic
def session_bootstrap(*, bot_name: str, user_id: str | None = None, session_id: str | None = None,
                      channel: str = "web", page_bound: bool = False, page_token_ok: bool = False) -> ChatSession:
    """Upstream's anonymous bootstrap (spec 6.2): reuse the session when it exists for this bot, else create
    it (with the given id when it is a free UUID). A session id of another bot is never reused."""
    if channel not in CHANNELS:
        raise TurnError(f"unknown channel '{channel}'")
    bot = bot_by_name(bot_name)
    sid = _uuid(session_id)
    if sid is not None:
        session = ChatSession.objects.select_related("user", "bot").filter(pk=sid).first()
        if session is not None and session.bot_id == bot.pk and _reachable(session, page_token_ok):
            return session
        if session is not None:
            sid = None  # another bot's, not a public chat's, or page-bound without its token: start a fresh one
    user = _anonymous_user(_uuid(user_id))
    state = {PAGE_BOUND: True} if page_bound else {}
    if not bot_has_start_script(bot):
        state["started"] = True  # nothing to run: the first message does not look for start.bas again
    return ChatSession.objects.create(id=sid or uuid.uuid4(), user=user, bot=bot, channel=channel, state=state,
                                      title=ANONYMOUS_TITLE if user.is_anonymous else "New Conversation")


def _reachable(session: ChatSession, page_token_ok: bool) -> bool:
    """Whether the public chat (REST, the stream, /api/auth, both sockets) may open the session it was given the
    id of. Only a public chat channel's session of an anonymous visitor: a session of another channel (an e-mail
    conversation, a job) or of a known person is never read, driven or handed out by an id (its id shows in the
    console's conversation list), as a known person is never claimed by one (_anonymous_user); it is refused as
    an unknown session is. Of those, a session the web chat page created is reached with the page's token only
    (its id alone, seen in a proxy log or a URL, is not enough); the others by their unguessable id, as upstream."""
    if session.channel not in PUBLIC_CHANNELS or not session.user.is_anonymous:
        return False
    return page_token_ok or not (session.state or {}).get(PAGE_BOUND)


def session_get(session_id: str, *, bot: Bot | None = None, page_token_ok: bool = False) -> ChatSession:
    sid = _uuid(session_id)
    qs = ChatSession.objects.select_related("bot", "user")
    session = qs.filter(pk=sid).first() if sid else None
    if session is None or (bot is not None and session.bot_id != bot.pk) or not _reachable(session, page_token_ok):
        raise UnknownSession("no such session")
    return session


def message_check(text: str) -> str:
    text = _CONTROL_CHARS.sub("", "" if text is None else str(text))
    limit = chat_message_max_chars()
    if len(text) > limit:
        raise TurnError(f"message too long: {len(text)} characters, the limit is {limit}")
    return text


def session_start(session: ChatSession, *, sink: events.Sink | None = None) -> list[Message]:
    """Run start.bas once for the session (nothing when it already ran)."""
    if (session.state or {}).get("started"):
        return []
    return turn_execute(session.pk, text="", sink=sink, start_only=True)


def turn_execute_start(session_id: str, *, sink: events.Sink | None = None) -> list[Message]:
    return turn_execute(session_id, text="", sink=sink, start_only=True)


def turn_run(session: ChatSession, *, text: str, message_type: int = MessageType.USER,
             sink: events.Sink | None = None, client_message_id: str | None = None) -> list[Message]:
    """One turn; returns the messages the bot produced (persisted). Raises TurnError on bad input.
    `client_message_id`: the client's id of the message (REST Idempotency-Key); a message already taken with
    it is not taken again, its turn's messages are returned."""
    return turn_run_id(session.pk, text=text, message_type=message_type, sink=sink,
                       client_message_id=client_message_id)


def turn_run_id(session_id: object, *, text: str, message_type: int = MessageType.USER,
                sink: events.Sink | None = None, active_switchers: list | None = None,
                client_message_id: str | None = None) -> list[Message]:
    """`turn_run` for a session the caller already authorised by id (a connected socket): the turn reads the
    session once, under its lock."""
    try:
        message_type = int(message_type)
    except (TypeError, ValueError):
        raise TurnError("message_type must be a number") from None
    if message_type not in MessageType.values:
        raise TurnError(f"unknown message_type {message_type}")
    text = message_check(text)
    if message_type not in (MessageType.SYSTEM, MessageType.SWITCHER_TOGGLE) and not text.strip():
        raise TurnError("empty message")
    return turn_execute(session_id, text=text, message_type=message_type, sink=sink,
                        active_switchers=active_switchers, client_message_id=client_message_id)


def channel_turn(*, bot: Bot, channel: str, user_key: str, text: str, thread_key: str | None = None,
                 sink: events.Sink | None = None) -> tuple[ChatSession, list[Message]]:
    """A message from another channel (e-mail...): the session of (bot, channel, user, thread), created
    and started on first contact, then one turn. start.bas runs first; when it stops at a HEAR, this
    message is kept and answers the next question, as on the web."""
    if channel not in CHANNELS:
        raise TurnError(f"unknown channel '{channel}'")
    user_key = str(user_key).strip().lower()[:255]
    if not user_key:
        raise TurnError("a channel message needs the sender's address")
    with transaction.atomic():
        user = (ChatUser.objects.filter(external_id=user_key, is_anonymous=False).order_by("created_at")
                .select_for_update().first())
        if user is None:
            user = ChatUser.objects.create(username=user_key[:150], external_id=user_key, is_anonymous=False,
                                           email=user_key if "@" in user_key else "")
        session = (ChatSession.objects.filter(bot=bot, channel=channel, user=user, thread_key=thread_key or "")
                   .order_by("-last_activity").first())
        if session is None:
            session = ChatSession.objects.create(user=user, bot=bot, channel=channel, thread_key=thread_key or "",
                                                 title="New Conversation")
    produced = turn_run(session, text=text, sink=sink)
    session.refresh_from_db()
    return session, produced


def history(session: ChatSession, *, after: int = -1, limit: int = HISTORY_PAGE_MAX,
            cap: int = HISTORY_PAGE_MAX, newest: bool = False) -> list[dict]:
    """Shown messages (user and bot) after index `after`, oldest first (at most `cap`): the first ones after
    `after` (a page of history), or with `newest` the latest ones (a reconnect catching up: what it missed
    last matters most, and the live events go on from there)."""
    limit = max(1, min(int(limit), cap))
    rows = Message.objects.filter(session=session, index__gt=after, role__in=[Role.USER, Role.ASSISTANT])
    if newest:
        return [message_event(m) for m in reversed(rows.order_by("-index")[:limit])]
    return [message_event(m) for m in rows.order_by("index")[:limit]]


def stream_in_progress(session: ChatSession) -> dict | None:
    return events.stream_buffer_get(str(session.pk))


def waits_requeue_lost(*, now: datetime | None = None) -> int:
    """Queue again the resume of the current tenant's dialogs still waiting at a WAIT that ended more than
    WAIT_RESUME_GRACE ago (at most WAIT_SWEEP_BATCH); how many. Safe to repeat, and safe if the lost resume turns
    up after all: a resume runs a WAIT once (its token, checked under the session's lock)."""
    from apps.sessions.tasks import resume_wait

    now = now or timezone.now()
    cutoff = now - WAIT_RESUME_GRACE
    given_up = ChatSession.objects.filter(wait_due_at__lt=now - WAIT_RESUME_MAX_OVERDUE).update(wait_due_at=None)
    if given_up:
        logger.warning("chat: gave up the resume of %d dialog(s) at a WAIT overdue by more than %s", given_up,
                       WAIT_RESUME_MAX_OVERDUE)
    overdue = list(ChatSession.objects.filter(wait_due_at__lt=cutoff).order_by("wait_due_at")
                   .values_list("pk", "state__dialog__kind", "state__dialog__token")[:WAIT_SWEEP_BATCH])
    # Not at a WAIT after all (never expected: a turn clears the column with the dialog): nothing to resume.
    stray = [pk for pk, kind, token in overdue if kind != "wait" or not isinstance(token, str)]
    if stray:
        ChatSession.objects.filter(pk__in=stray, wait_due_at__lt=cutoff).update(wait_due_at=None)
    queued: list[uuid.UUID] = []
    try:
        for session_id, kind, token in overdue:
            if kind == "wait" and isinstance(token, str):
                resume_wait.apply_async(args=[str(session_id), token])  # the broker down still: raises; next sweep
                queued.append(session_id)
    finally:
        if queued:
            # Due again from now: the next sweep queues it once more only if this message is lost too. Only rows
            # still overdue: a resume that already ran saved its next WAIT's own due time (or none), kept as is.
            ChatSession.objects.filter(pk__in=queued, wait_due_at__lt=cutoff).update(wait_due_at=now)
    if queued:
        logger.warning("chat: queued again the lost resume of %d dialog(s) waiting at a WAIT", len(queued))
    return len(queued)
