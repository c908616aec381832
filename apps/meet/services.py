"""Meetings: rooms, join tokens, invites, bookings from BASIC, and LiveKit's webhooks.

Failure modes this module prevents:
- A local room without its LiveKit room, or the reverse: LiveKit is called first (CreateRoom is
  idempotent by name, DeleteRoom of a missing room is "already gone"), and the row changes only after
  LiveKit agreed; a failed call changes nothing and says why.
- A participant getting more than their role allows: the role is the console role (apps.accounts), and
  grants come from one table (`ROLE_GRANTS`); a viewer
  cannot publish, only admins and editors get room_admin (mute/remove others), a guest with an invite
  publishes but administers nothing.
- A long-lived leaked join token: tokens live `JOIN_TOKEN_TTL` (LiveKit refreshes a connected
  participant's token itself, so this ends no meeting).
- An invite for one tenant's room opening another's: the signed invite names the schema, room name and
  row id, and expires.
- Forged or replayed webhooks: LiveKit's JWT (API key/secret, sha256 of the body) is verified by
  livekit-api's WebhookReceiver; the event id is unique, so a redelivery is recorded once; a room name in
  another tenant's namespace is refused on a tenant host.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import partial
from urllib.parse import quote, unquote, urlsplit

import jwt
from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.text import slugify
from django_tenants.utils import get_public_schema_name, schema_context
from google.protobuf.json_format import MessageToDict, ParseError
from livekit import api as lk

from apps.core.wire import nul_replaced
from apps.drive.backends import DriveKeyError, drive_key_validate
from apps.meet.livekit import (
    LIVEKIT_EMPTY_TIMEOUT_S,
    LiveKitError,
    livekit_browser_url,
    livekit_configured,
    livekit_room_create,
    livekit_room_delete,
    livekit_room_name,
    livekit_room_parse,
)
from apps.meet.models import (
    ROOM_DEFAULT_MAX_PARTICIPANTS,
    ROOM_MAX_PARTICIPANTS_LIMIT,
    ROOM_NAME_VALIDATOR,
    ParticipantEvent,
    Recording,
    Room,
    WebhookEvent,
)

logger = logging.getLogger(__name__)

# A join token only has to be valid when the browser connects; LiveKit hands a connected participant
# fresh tokens itself. Fifteen minutes covers opening the page and granting camera access, and a token
# that leaks (a copied URL, a log) is useless soon after.
JOIN_TOKEN_TTL = timedelta(minutes=15)
# An invite to a room opened ad hoc (console, START MEET) works for this long after it was made.
INVITE_TTL_S = 14 * 24 * 3600
INVITE_SALT = "apps.meet.invite"
# Display names shown to other participants: a name, not a paragraph.
PARTICIPANT_NAME_MAX = 80
# What a display name never shows: C0 and C1 controls (NUL among them, which PostgreSQL stores in no text) and
# the bidirectional embeddings, overrides, isolates and marks, with which "Eve\u202eevil" reads as another name.
_NAME_INVISIBLE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
ROOM_TITLE_MAX = 200
# BOOK duration bounds (minutes): a meeting of zero minutes or of several days is a typo.
BOOK_DEFAULT_MINUTES = 60
BOOK_MAX_MINUTES = 24 * 60
# An invite link sent with a booking must still work on the day of the meeting: it works until the meeting's
# end plus this margin (a meeting that runs over, someone rejoining), and never for less than INVITE_TTL_S.
BOOK_INVITE_MARGIN = timedelta(days=1)
# How far ahead BOOK takes a start: its invites live until the meeting, so an unbounded start (a typo'd year)
# would make a link that opens the room for years.
BOOK_MAX_AHEAD = timedelta(days=366)
# No invite is accepted once older than this, whatever expiry it carries: one made when booking a meeting
# BOOK_MAX_AHEAD away, lasting BOOK_MAX_MINUTES, plus the margin.
INVITE_MAX_AGE_S = int((BOOK_MAX_AHEAD + timedelta(minutes=BOOK_MAX_MINUTES) + BOOK_INVITE_MARGIN).total_seconds())
# Room names BOOK derives from a title: a readable slug plus random hex so two bookings never collide.
BOOK_SLUG_MAX = 40
BOOK_SUFFIX_BYTES = 3
# LiveKit's webhook bodies are a few KB (one room, participant or egress); anything this large is not one.
WEBHOOK_MAX_BODY_BYTES = 256 * 1024


class MeetError(Exception):
    """A request about meetings that cannot be done; `status` is the HTTP status an API answers with."""

    status = 400

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class RoomExists(MeetError):
    status = 409


class WebhookRefused(MeetError):
    status = 401


class MeetRole(StrEnum):
    ADMIN = "admin"
    EDITOR = "editor"
    GUEST = "guest"  # anonymous (or a viewer) holding an invite link
    VIEWER = "viewer"


# What each role may do in a room. Only admins and editors moderate (room_admin: mute, remove, update
# others); a guest invited to talk publishes; a viewer watches and listens (no camera, microphone or chat).
ROLE_GRANTS: dict[MeetRole, dict[str, bool]] = {
    MeetRole.ADMIN: {"room_admin": True, "can_publish": True, "can_subscribe": True, "can_publish_data": True},
    MeetRole.EDITOR: {"room_admin": True, "can_publish": True, "can_subscribe": True, "can_publish_data": True},
    MeetRole.GUEST: {"room_admin": False, "can_publish": True, "can_subscribe": True, "can_publish_data": True},
    MeetRole.VIEWER: {"room_admin": False, "can_publish": False, "can_subscribe": True, "can_publish_data": False},
}
# Roles that may create and close rooms.
ROOM_MANAGER_ROLES = frozenset({MeetRole.ADMIN, MeetRole.EDITOR})


@dataclass(frozen=True)
class JoinToken:
    token: str
    url: str  # the LiveKit URL the browser connects to
    room: str
    identity: str
    name: str
    role: MeetRole
    expires_at: datetime


@dataclass(frozen=True)
class WebhookOutcome:
    status: str  # "recorded" | "duplicate" | "ignored"
    event: str = ""
    event_id: str = ""
    schema: str = ""


# --- roles ------------------------------------------------------------------------------------------------


def user_meet_role(user) -> MeetRole | None:
    """The meeting role of a signed-in user: their console role (apps.accounts: OIDC-mapped, or staff =
    admin for local users); None for anonymous visitors and users without a console role."""
    from apps.accounts.selectors import user_console_role

    if user is None or not getattr(user, "is_authenticated", False) or getattr(user, "pk", None) is None:
        return None  # anonymous, or an API-key principal (no person to put in a meeting)
    role = user_console_role(user)
    return MeetRole(role.value) if role else None


def effective_role(*, user, room: Room, invite: str = "") -> MeetRole | None:
    """The role a request joins `room` with: the user's own role, raised to guest by a valid invite."""
    role = user_meet_role(user)
    if role in ROOM_MANAGER_ROLES:
        return role
    if invite and invite_valid(room=room, invite=invite):
        return MeetRole.GUEST
    return role


# --- rooms ------------------------------------------------------------------------------------------------


def _schema() -> str:
    return connection.schema_name


def _validate_room_input(*, name: str, title: str, max_participants: int) -> None:
    try:
        ROOM_NAME_VALIDATOR(name)
    except ValidationError:
        raise MeetError(
            f"room name {name!r} must be 1-63 lower-case letters, digits, - or _, starting with a letter or digit, "
            "without '--'"
        ) from None
    if len(title) > ROOM_TITLE_MAX:
        raise MeetError(f"room title is {len(title)} characters; the limit is {ROOM_TITLE_MAX}")
    if not 1 <= max_participants <= ROOM_MAX_PARTICIPANTS_LIMIT:
        raise MeetError(f"max_participants must be between 1 and {ROOM_MAX_PARTICIPANTS_LIMIT}, not {max_participants}")


def _livekit_create(room_name: str, max_participants: int) -> str:
    """LiveKit's sid of the (new or existing) room, or "" when video is not configured."""
    if not livekit_configured():
        return ""
    try:
        created = livekit_room_create(name=livekit_room_name(_schema(), room_name), max_participants=max_participants)
    except LiveKitError as exc:
        raise MeetError(str(exc), status=502) from None
    return created.sid


def room_create(
    *,
    name: str,
    title: str = "",
    bot=None,
    created_by=None,
    max_participants: int | None = None,
    metadata: dict | None = None,
    exist_ok: bool = False,
) -> Room:
    """Create a room (in LiveKit too when configured).

    With `exist_ok`, an open room of that name is returned as it is and a closed one is opened again
    (BASIC's START MEET), but only a room of the same `bot` (None: a console room): a script's room name may
    come from whoever talks to the bot, and must not hand out invites to, or reopen, the tenant's other rooms.
    Otherwise an existing name is a RoomExists error.
    """
    name = (name or "").strip()
    title = (title or "").strip()
    max_participants = ROOM_DEFAULT_MAX_PARTICIPANTS if max_participants is None else int(max_participants)
    _validate_room_input(name=name, title=title, max_participants=max_participants)
    existing = Room.objects.filter(name=name).first()
    if existing is not None:
        if not exist_ok:
            raise RoomExists(f"a room named {name!r} already exists ({existing.status})")
        _room_reuse_check(existing, bot)
        if existing.is_open:
            return existing
        sid = _livekit_create(name, existing.max_participants)
        with transaction.atomic():
            room = Room.objects.select_for_update().get(pk=existing.pk)
            room.status, room.closed_at, room.finished_at = Room.Status.OPEN, None, None
            room.livekit_sid = sid or room.livekit_sid
            # A new opening: invites of the earlier one stay void (see invite_valid).
            room.metadata = {**(room.metadata or {}), "generation": _generation(room) + 1}
            room.save(update_fields=["status", "closed_at", "finished_at", "livekit_sid", "metadata"])
        return room
    sid = _livekit_create(name, max_participants)
    try:
        # A name taken between the check and here: LiveKit's CreateRoom was idempotent, the row is refused.
        with transaction.atomic():
            room = Room(
                name=name, title=title, bot=bot, created_by=created_by, max_participants=max_participants,
                metadata=metadata or {}, livekit_sid=sid,
            )
            room.full_clean(validate_unique=False)
            room.save()
    except IntegrityError:
        if exist_ok:
            return _room_reuse_check(Room.objects.get(name=name), bot)
        raise RoomExists(f"a room named {name!r} already exists") from None
    except ValidationError as exc:
        raise MeetError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from None
    return room


def _room_reuse_check(room: Room, bot) -> Room:
    """`room` when it belongs to `bot` (both None: a console room), else RoomExists."""
    if room.bot_id != (bot.pk if bot is not None else None):
        owner = "another bot" if room.bot_id is not None else "the console"
        raise RoomExists(f"a room named {room.name!r} already exists and belongs to {owner}; "
                         "a bot opens only its own rooms")
    return room


def room_close(*, room: Room) -> Room:
    """Close a room: LiveKit disconnects everyone, then the row is closed. Closing twice is a no-op."""
    if not room.is_open:
        return room
    if livekit_configured():
        try:
            livekit_room_delete(name=livekit_room_name(_schema(), room.name))
        except LiveKitError as exc:
            raise MeetError(str(exc), status=502) from None
    with transaction.atomic():
        locked = Room.objects.select_for_update().get(pk=room.pk)
        if locked.is_open:
            locked.status, locked.closed_at = Room.Status.CLOSED, timezone.now()
            locked.save(update_fields=["status", "closed_at"])
    return locked


# --- invites and links ----------------------------------------------------------------------------------


def _generation(room: Room) -> int:
    """How many times the room was reopened after a close."""
    try:
        return int((room.metadata or {}).get("generation", 0))
    except (TypeError, ValueError):
        return 0


def _booking_end(room: Room) -> datetime | None:
    """When the meeting booked in the room (BOOK) ends; None for a room without a booking or a start."""
    booking = (room.metadata or {}).get("booking")
    if not isinstance(booking, dict) or not booking.get("start"):
        return None
    try:
        start = datetime.fromisoformat(str(booking["start"]))
        minutes = int(booking.get("duration_min") or BOOK_DEFAULT_MINUTES)
    except (TypeError, ValueError):
        return None
    if timezone.is_naive(start):
        start = timezone.make_aware(start)
    return start + timedelta(minutes=minutes)


def invite_create(*, room: Room) -> str:
    """A signed invite to `room`. One to a booked meeting carries its expiry ("e", Unix seconds): the meeting's
    end plus BOOK_INVITE_MARGIN when that is later than INVITE_TTL_S from now; signed, so no client moves it."""
    data = {"s": _schema(), "r": room.name, "i": room.pk, "g": _generation(room)}
    end = _booking_end(room)
    if end is not None:
        now = time.time()
        expires = max(now + INVITE_TTL_S, (end + BOOK_INVITE_MARGIN).timestamp())
        data["e"] = int(min(expires, now + INVITE_MAX_AGE_S))
    return signing.dumps(data, salt=INVITE_SALT, compress=True)


def invite_valid(*, room: Room, invite: str) -> bool:
    """Signed for this tenant's room, not expired, and made during the room's current opening: a closed room
    refuses every join, and reopening it (START MEET) does not bring its earlier invites back.

    Expired: past the expiry it carries (a booked meeting's), else INVITE_TTL_S after it was made; and in any
    case once older than INVITE_MAX_AGE_S."""
    try:
        data = signing.loads(invite, salt=INVITE_SALT, max_age=INVITE_MAX_AGE_S)
    except signing.BadSignature:  # includes SignatureExpired
        return False
    if not isinstance(data, dict):
        return False
    expires = data.get("e")
    if expires is None:
        try:
            signing.loads(invite, salt=INVITE_SALT, max_age=INVITE_TTL_S)
        except signing.BadSignature:
            return False
    elif type(expires) is not int or time.time() > expires:
        return False
    made = {"s": data.get("s"), "r": data.get("r"), "i": data.get("i"), "g": data.get("g", 0)}
    return made == {"s": _schema(), "r": room.name, "i": room.pk, "g": _generation(room)}


def room_join_path(*, room: Room, invite: bool = False) -> str:
    path = f"/meet/{room.name}/"
    return f"{path}?invite={quote(invite_create(room=room))}" if invite else path


def room_join_url(*, room: Room, invite: bool = True) -> str:
    """Absolute join link (for scripts, mail): the tenant's primary host; a path when it has none."""
    from apps.tenants.models import Domain

    domain = (
        Domain.objects.filter(tenant__schema_name=_schema()).order_by("-is_primary", "id")
        .values_list("domain", flat=True).first()
    )
    path = room_join_path(room=room, invite=invite)
    return f"{settings.MEET_LINK_SCHEME}://{domain}{path}" if domain else path


# --- join tokens --------------------------------------------------------------------------------------


def display_name_clean(value: object) -> str:
    """A display name as other participants see it: whitespace (tabs, line breaks) collapsed to single spaces,
    control and bidi override/isolate/mark characters removed; "" when nothing visible is left."""
    spaced = " ".join(str(value or "").split())
    return " ".join(_NAME_INVISIBLE_RE.sub("", spaced).split())


def join_token_mint(*, room: Room, role: MeetRole, user=None, guest_name: str = "") -> JoinToken:
    """A LiveKit access token for one participant of `room`, with the grants of `role`."""
    if not room.is_open:
        raise MeetError(f"room {room.name!r} is closed", status=409)
    if not livekit_configured():
        raise MeetError("video is not configured on this server", status=503)
    if user is not None and getattr(user, "is_authenticated", False):
        identity = f"user-{user.pk}"
        name = display_name_clean(user.get_full_name()) or display_name_clean(user.get_username()) or identity
    else:
        raw, guest_name = guest_name or "", display_name_clean(guest_name)
        if not guest_name:
            if raw.strip():
                raise MeetError("the display name has no visible characters (control and text-direction "
                                "characters are removed); a guest needs a visible display name")
            raise MeetError("a guest needs a display name")
        if len(guest_name) > PARTICIPANT_NAME_MAX:
            raise MeetError(f"display name is {len(guest_name)} characters; the limit is {PARTICIPANT_NAME_MAX}")
        identity, name = f"guest-{secrets.token_hex(6)}", guest_name
    grants = lk.VideoGrants(room_join=True, room=livekit_room_name(_schema(), room.name), **ROLE_GRANTS[role])
    token = (
        lk.AccessToken(settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET)
        .with_identity(identity)
        .with_name(name[:PARTICIPANT_NAME_MAX])
        .with_grants(grants)
        .with_attributes({"role": str(role)})
        .with_ttl(JOIN_TOKEN_TTL)
        # LiveKit creates a room on first join when it has none (after its empty timeout, or when it was
        # down when the room was made): these settings apply then, so the room's limits hold.
        .with_room_config(lk.RoomConfiguration(
            name=grants.room, max_participants=room.max_participants, empty_timeout=LIVEKIT_EMPTY_TIMEOUT_S,
        ))
        .to_jwt()
    )
    return JoinToken(
        token=token, url=livekit_browser_url(), room=room.name, identity=identity, name=name, role=role,
        expires_at=timezone.now() + JOIN_TOKEN_TTL,
    )


# --- BASIC: BOOK and START MEET ------------------------------------------------------------------------


def _book_start(value: object) -> datetime | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).strip()
    try:
        moment = parse_datetime(text)
        if moment is None and (day := parse_date(text)) is not None:
            moment = datetime(day.year, day.month, day.day)
    except ValueError:  # well formed but not a real date (2026-02-30)
        moment = None
    if moment is None:
        raise MeetError(f"start {text!r} must be a date and time like 2026-11-22 10:00 (ISO 8601)")
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


def _book_minutes(value: object) -> int:
    if value is None or value == "":
        return BOOK_DEFAULT_MINUTES
    try:
        minutes = int(float(str(value).strip()))
    except ValueError:
        raise MeetError(f"duration {value!r} must be a number of minutes") from None
    if not 1 <= minutes <= BOOK_MAX_MINUTES:
        raise MeetError(f"duration must be between 1 and {BOOK_MAX_MINUTES} minutes, not {minutes}")
    return minutes


def _room_summary(room: Room) -> dict:
    return {
        "id": room.name, "name": room.name, "title": room.title, "status": room.status,
        "url": room_join_url(room=room, invite=True), "path": room_join_path(room=room),
    }


def bot_max_participants(bot) -> int:
    """The bot's `meet-max-participants` (config.csv, spec 2.4.5) within our limits; the default otherwise."""
    from apps.bots.config_csv import config_lookup
    from apps.bots.selectors import bot_config_values

    raw = config_lookup(bot_config_values(bot), "meet-max-participants", None) if bot is not None else None
    try:
        value = int(str(raw).strip()) if raw is not None else ROOM_DEFAULT_MAX_PARTICIPANTS
    except ValueError:
        logger.warning("meet-max-participants %r of bot %s is not a number; using the default", raw, bot.name)
        return ROOM_DEFAULT_MAX_PARTICIPANTS
    return min(max(value, 1), ROOM_MAX_PARTICIPANTS_LIMIT)


def meeting_book(
    *, bot, title: object, description: object = "", start: object = None, duration_min: object = None,
    location: object = "",
) -> dict:
    """BOOK title, description, start, duration_min, location: a new room for the meeting and its join link."""
    title_text = " ".join(str(title or "").split())
    if not title_text:
        raise MeetError("a meeting needs a title")
    moment, minutes = _book_start(start), _book_minutes(duration_min)
    if moment is not None and moment - timezone.now() > BOOK_MAX_AHEAD:
        raise MeetError(f"start {moment.isoformat()} is too far ahead: BOOK takes meetings up to "
                        f"{BOOK_MAX_AHEAD.days} days from now")
    slug = slugify(title_text)[:BOOK_SLUG_MAX].strip("-_") or "meeting"
    name = f"{slug}-{secrets.token_hex(BOOK_SUFFIX_BYTES)}"
    booking = {
        "description": str(description or ""), "start": moment.isoformat() if moment else None,
        "duration_min": minutes, "location": str(location or ""),
    }
    room = room_create(name=name, title=title_text[:ROOM_TITLE_MAX], bot=bot, metadata={"booking": booking},
                       max_participants=bot_max_participants(bot))
    return {**_room_summary(room), **booking, "result": "booked"}


def meeting_start(*, bot, name: object, title: object = "") -> dict:
    """START MEET "room": the bot's room of that name (created or reopened) and its join link; RoomExists when
    the name is taken by a console room or another bot's."""
    room = room_create(name=str(name or "").strip().lower(), title=str(title or ""), bot=bot, exist_ok=True,
                       max_participants=bot_max_participants(bot))
    return _room_summary(room)


# --- webhooks -----------------------------------------------------------------------------------------


def _webhook_event_verify(body: bytes, authorization: str) -> lk.WebhookEvent:
    if not livekit_configured():
        raise WebhookRefused("video is not configured on this server", status=503)
    if len(body) > WEBHOOK_MAX_BODY_BYTES:
        raise WebhookRefused(f"webhook body over {WEBHOOK_MAX_BODY_BYTES} bytes", status=413)
    token = (authorization or "").strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    if not token:
        raise WebhookRefused("missing Authorization header (LiveKit's signed token)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookRefused("webhook body is not UTF-8", status=400) from None
    receiver = lk.WebhookReceiver(lk.TokenVerifier(settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET))
    try:
        return receiver.receive(text, token)
    except ParseError:
        raise WebhookRefused("webhook body is not a LiveKit event", status=400) from None
    except (jwt.PyJWTError, binascii.Error, ValueError, TypeError):
        raise WebhookRefused("webhook signature is not valid") from None
    except Exception as exc:  # livekit-api raises a bare Exception for a missing or mismatched body hash
        if "hash" in str(exc) or "sha256" in str(exc):
            raise WebhookRefused("webhook signature does not match the body") from None
        raise


def _event_room_name(event: lk.WebhookEvent) -> str:
    if event.HasField("room") and event.room.name:
        return event.room.name
    if event.HasField("egress_info") and event.egress_info.room_name:
        return event.egress_info.room_name
    return ""


def _tenant_ready(schema: str) -> bool:
    from apps.tenants.models import Tenant

    with schema_context(get_public_schema_name()):
        return Tenant.objects.filter(schema_name=schema, ready=True).exists()


def webhook_receive(*, body: bytes, authorization: str, expected_schema: str | None) -> WebhookOutcome:
    """Verify a LiveKit webhook and record it in the tenant its room belongs to.

    `expected_schema` is the tenant whose host received it (a room of another tenant is refused, 403);
    None on the platform's public host, where the room-name namespace alone picks the tenant.
    """
    event = _webhook_event_verify(body, authorization)
    event_id = event.id or "sha256:" + base64.b64encode(hashlib.sha256(body).digest()).decode()
    parsed = livekit_room_parse(_event_room_name(event))
    if parsed is None:  # not a room this platform named: nothing of ours to record
        return WebhookOutcome("ignored", event.event, event_id)
    schema, room_name = parsed
    if expected_schema is not None and schema != expected_schema:
        logger.warning("meet webhook for another tenant's room refused", extra={"event_id": event_id})
        raise WebhookRefused("the event names a room of another tenant", status=403)
    if expected_schema is None and not _tenant_ready(schema):
        raise WebhookRefused("the event names a room of no tenant here", status=404)
    with schema_context(schema):
        status = _webhook_record(event, event_id, room_name, schema)
    return WebhookOutcome(status, event.event, event_id, schema)


def _closed_room_delete_again(schema: str, room_id: int) -> None:
    """Delete the room in LiveKit if it is still closed now (START MEET may have reopened it meanwhile: its
    CreateRoom ran before the reopening committed, and this webhook may be that room starting)."""
    with schema_context(schema):
        room = Room.objects.filter(pk=room_id).first()
        if room is None or room.is_open:
            return
        name = livekit_room_name(schema, room.name)
    try:
        livekit_room_delete(name=name)
    except LiveKitError as exc:
        logger.warning("meet: could not delete the reopened closed room %s: %s", name, exc)


def _ts(seconds: int) -> datetime | None:
    return datetime.fromtimestamp(seconds, tz=UTC) if seconds else None


def _ns(nanoseconds: int) -> datetime | None:
    return _ts(nanoseconds // 1_000_000_000) if nanoseconds else None


def _webhook_record(event: lk.WebhookEvent, event_id: str, room_name: str, schema: str) -> str:
    occurred = _ts(event.created_at)
    with transaction.atomic():
        room = Room.objects.select_for_update().filter(name=room_name).first()
        try:
            with transaction.atomic():  # savepoint: a concurrent redelivery loses the race on the unique id
                record = WebhookEvent.objects.create(
                    event_id=nul_replaced(event_id)[:128], event=nul_replaced(event.event)[:40], room=room,
                    room_name=room_name,
                    occurred_at=occurred, payload=nul_replaced(MessageToDict(event)),
                )
        except IntegrityError:
            return "duplicate"
        if room is None:
            return "recorded"
        kind = event.event
        if kind == "room_started":
            room.started_at, room.finished_at = occurred or timezone.now(), None
            room.livekit_sid = event.room.sid or room.livekit_sid
            room.save(update_fields=["started_at", "finished_at", "livekit_sid"])
            if not room.is_open:
                # Someone joined a closed room with a token issued before the close (LiveKit creates rooms on
                # join): it is deleted again, which disconnects them.
                transaction.on_commit(partial(_closed_room_delete_again, schema, room.pk))
        elif kind == "room_finished":
            room.finished_at = occurred or timezone.now()
            room.save(update_fields=["finished_at"])
        elif kind in {"participant_joined", "participant_left"} and event.HasField("participant"):
            p = event.participant
            ParticipantEvent.objects.create(
                room=room, webhook_event=record,
                kind=ParticipantEvent.Kind.JOINED if kind == "participant_joined" else ParticipantEvent.Kind.LEFT,
                identity=nul_replaced(p.identity)[:255], name=nul_replaced(p.name)[:255],
                participant_sid=nul_replaced(p.sid)[:64],
                occurred_at=occurred or timezone.now(),
            )
        elif kind in {"egress_started", "egress_updated", "egress_ended"} and event.HasField("egress_info"):
            _recording_update(room, event.egress_info, schema)
    return "recorded"


_EGRESS_STATUS = {
    0: Recording.Status.STARTING, 1: Recording.Status.ACTIVE, 2: Recording.Status.ENDING,
    3: Recording.Status.COMPLETE, 4: Recording.Status.FAILED, 5: Recording.Status.ABORTED,
    6: Recording.Status.LIMIT_REACHED,
}


def _recording_update(room: Room, info, schema: str) -> None:
    recording, _ = Recording.objects.select_for_update().get_or_create(egress_id=nul_replaced(info.egress_id)[:64],
                                                                       room=room)
    recording.status = _EGRESS_STATUS.get(info.status, Recording.Status.STARTING)
    recording.started_at = _ns(info.started_at) or recording.started_at
    recording.ended_at = _ns(info.ended_at) or recording.ended_at
    recording.error = nul_replaced(info.error or "")
    files = list(info.file_results) or ([info.file] if info.HasField("file") else [])
    if files:
        last = files[-1]
        location = nul_replaced(last.location or last.filename)
        drive_key = recording_drive_key(location=location, schema=schema)
        recording.drive_key = drive_key or ""
        recording.external_location = "" if drive_key else location[:2048]
        recording.size_bytes = last.size or recording.size_bytes
        recording.duration_ms = (last.duration // 1_000_000) if last.duration else recording.duration_ms
    recording.save()


def recording_drive_key(*, location: str, schema: str) -> str | None:
    """The tenant-relative drive key of an egress file written into this tenant's S3 prefix, else None.

    LiveKit reports S3 locations as `s3://bucket/key`, `https://bucket.<host>/key` (virtual-hosted) or
    `<endpoint>/bucket/key` (path style). Only the platform's bucket and this tenant's prefix count; a
    file anywhere else (another bucket, another tenant's prefix, a local path) stays an outside location.
    """
    if not settings.S3_ACCESS_KEY or not location:
        return None
    parts = urlsplit(location)
    bucket, path = settings.S3_BUCKET, unquote(parts.path).lstrip("/")
    if parts.scheme == "s3":
        key = path if parts.netloc == bucket else None
    elif parts.scheme in {"http", "https"}:
        endpoint = urlsplit(settings.S3_ENDPOINT_URL).netloc if settings.S3_ENDPOINT_URL else ""
        if parts.netloc.startswith(f"{bucket}."):
            key = path
        elif (parts.netloc == endpoint or not endpoint) and path.startswith(f"{bucket}/"):
            key = path[len(bucket) + 1:]
        else:
            key = None
    else:
        key = None
    prefix = f"{settings.S3_TENANT_PREFIX}/{schema}/"
    if not key or not key.startswith(prefix):
        return None
    try:
        return drive_key_validate(key[len(prefix):])
    except DriveKeyError:
        return None
