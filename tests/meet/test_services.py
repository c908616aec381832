"""Rooms, join tokens, invites and bookings against the LiveKit fake, with the real livekit-api client."""

from __future__ import annotations

import jwt
import pytest
from django.contrib.auth import get_user_model
from django_tenants.utils import schema_context
from livekit import api as lk

from apps.basic.compiler import compile_source
from apps.basic.vm import VM
from apps.bots.host import BotHost
from apps.bots.models import Bot, BotConfig
from apps.meet.livekit import livekit_room_parse
from apps.meet.models import Room
from apps.meet.services import (
    JOIN_TOKEN_TTL,
    MeetError,
    MeetRole,
    RoomExists,
    effective_role,
    invite_create,
    invite_valid,
    join_token_mint,
    recording_drive_key,
    room_close,
    room_create,
)

pytestmark = pytest.mark.django_db


def test_room_creation_reaches_livekit_with_the_tenant_namespaced_name(canary_tenants, livekit):
    schema = canary_tenants.a.schema_name
    with schema_context(schema):
        room = room_create(name="standup", title="Daily standup", max_participants=12)
    [call] = livekit.calls("CreateRoom")
    assert call.status == 200
    assert call.content_type == "application/protobuf"  # what livekit-api sends
    assert call.body["name"] == f"{schema}--standup"
    assert call.body["max_participants"] == 12
    assert call.claims["iss"] == livekit.api_key and call.claims["video"]["roomCreate"] is True
    assert room.livekit_sid == livekit.rooms[f"{schema}--standup"].sid
    assert livekit_room_parse(call.body["name"]) == (schema, "standup")


def test_two_tenants_rooms_of_one_name_are_two_livekit_rooms(canary_tenants, livekit):
    for tenant in (canary_tenants.a, canary_tenants.b):
        with schema_context(tenant.schema_name):
            room_create(name="sales")
    assert sorted(livekit.rooms) == sorted(f"{t.schema_name}--sales" for t in (canary_tenants.a, canary_tenants.b))
    with schema_context(canary_tenants.a.schema_name):
        room_close(room=Room.objects.get(name="sales"))
    assert list(livekit.rooms) == [f"{canary_tenants.b.schema_name}--sales"]
    with schema_context(canary_tenants.b.schema_name):
        assert Room.objects.get(name="sales").is_open


def test_closing_a_room_deletes_it_in_livekit_once(canary_tenants, livekit):
    with schema_context(canary_tenants.a.schema_name):
        room = room_close(room=room_create(name="retro"))
        assert room.status == "closed" and room.closed_at is not None
        assert room_close(room=room).closed_at == room.closed_at  # closing again changes nothing
    assert [c.body["room"] for c in livekit.calls("DeleteRoom")] == [f"{canary_tenants.a.schema_name}--retro"]
    assert livekit.rooms == {}


def test_a_room_gone_from_livekit_still_closes(canary_tenants, livekit):
    with schema_context(canary_tenants.a.schema_name):
        room = room_create(name="emptied")
        livekit.rooms.clear()  # LiveKit dropped it (empty timeout)
        assert room_close(room=room).status == "closed"
    assert livekit.calls("DeleteRoom")[0].status == 404


def test_livekit_refusing_changes_nothing(canary_tenants, livekit, settings):
    settings.LIVEKIT_API_SECRET = "not-the-servers-secret-but-32-bytes-long"
    with schema_context(canary_tenants.a.schema_name):
        with pytest.raises(MeetError, match="unauthenticated") as refused:
            room_create(name="nope")
        assert refused.value.status == 502
        assert not Room.objects.filter(name="nope").exists()
    assert livekit.calls("CreateRoom")[0].status == 401


def test_bad_names_and_limits_are_refused_with_the_reason(canary_tenants, livekit):
    with schema_context(canary_tenants.a.schema_name):
        for name in ("", "Has Space", "a--b", "../x", "x" * 64):
            with pytest.raises(MeetError, match="room name"):
                room_create(name=name)
        with pytest.raises(MeetError, match="max_participants"):
            room_create(name="big", max_participants=100_000)
        room_create(name="once")
        with pytest.raises(RoomExists):
            room_create(name="once")
    assert [c.body["name"] for c in livekit.calls("CreateRoom")] == [f"{canary_tenants.a.schema_name}--once"]


def test_without_livekit_rooms_exist_locally_and_tokens_are_refused(canary_tenants, no_livekit):
    with schema_context(canary_tenants.a.schema_name):
        room = room_create(name="local-only")
        assert room.livekit_sid == ""
        with pytest.raises(MeetError, match="not configured") as refused:
            join_token_mint(room=room, role=MeetRole.ADMIN, user=None, guest_name="x")
        assert refused.value.status == 503
        assert room_close(room=room).status == "closed"


def _decode(token: str, livekit) -> dict:
    return jwt.decode(token, livekit.api_secret, algorithms=["HS256"], issuer=livekit.api_key)


@pytest.mark.parametrize(
    ("role", "admin", "publish", "data"),
    [
        (MeetRole.ADMIN, True, True, True),
        (MeetRole.EDITOR, True, True, True),
        (MeetRole.GUEST, False, True, True),
        (MeetRole.VIEWER, False, False, False),
    ],
)
def test_join_token_grants_follow_the_role(canary_tenants, livekit, role, admin, publish, data):
    schema = canary_tenants.a.schema_name
    with schema_context(schema):
        room = room_create(name="board")
        user = get_user_model().objects.create_user(username="ana", first_name="Ana", last_name="Lima")
        joined = join_token_mint(room=room, role=role, user=user)
    claims = _decode(joined.token, livekit)
    video = claims["video"]
    assert video["roomJoin"] is True and video["room"] == f"{schema}--board"
    assert video.get("roomAdmin") is admin
    assert video["canPublish"] is publish and video["canSubscribe"] is True and video["canPublishData"] is data
    assert "roomCreate" not in video and "roomList" not in video and "roomRecord" not in video
    assert claims["sub"] == f"user-{user.pk}" and claims["name"] == "Ana Lima"
    assert claims["attributes"] == {"role": str(role)}
    assert claims["exp"] - claims["nbf"] == int(JOIN_TOKEN_TTL.total_seconds())
    # a room LiveKit re-creates on join keeps its limits
    assert claims["roomConfig"]["name"] == video["room"] and claims["roomConfig"]["maxParticipants"] == 50
    # LiveKit's own verifier reads the same grants
    grants = lk.TokenVerifier(livekit.api_key, livekit.api_secret).verify(joined.token).video
    assert grants.can_publish is publish and grants.room_admin is admin


def test_a_guest_token_needs_a_name_and_gets_a_guest_identity(canary_tenants, livekit):
    with schema_context(canary_tenants.a.schema_name):
        room = room_create(name="clinic")
        with pytest.raises(MeetError, match="display name"):
            join_token_mint(room=room, role=MeetRole.GUEST, guest_name="   ")
        with pytest.raises(MeetError, match="limit"):
            join_token_mint(room=room, role=MeetRole.GUEST, guest_name="x" * 81)
        joined = join_token_mint(room=room, role=MeetRole.GUEST, guest_name="  Maria   Silva ")
        closed = room_close(room=room)
        with pytest.raises(MeetError, match="closed"):
            join_token_mint(room=closed, role=MeetRole.ADMIN, guest_name="Maria")
    claims = _decode(joined.token, livekit)
    assert claims["sub"].startswith("guest-") and claims["name"] == "Maria Silva"


def test_invites_open_only_their_room_in_their_tenant(canary_tenants, livekit):
    with schema_context(canary_tenants.a.schema_name):
        room_a = room_create(name="demo")
        other = room_create(name="other")
        invite = invite_create(room=room_a)
        assert invite_valid(room=room_a, invite=invite)
        assert not invite_valid(room=other, invite=invite)
        assert not invite_valid(room=room_a, invite=invite + "x")
        assert effective_role(user=None, room=room_a, invite=invite) == MeetRole.GUEST
        assert effective_role(user=None, room=room_a, invite="") is None
    with schema_context(canary_tenants.b.schema_name):
        room_b = room_create(name="demo")
        assert not invite_valid(room=room_b, invite=invite)


def test_invites_of_a_closed_room_stay_void_when_it_is_reopened(canary_tenants, livekit):
    """START MEET reopens a closed room under the same row: its 14-day invites became valid again."""
    with schema_context(canary_tenants.a.schema_name):
        room = room_create(name="standup")
        old = invite_create(room=room)
        room_close(room=room)
        reopened = room_create(name="standup", exist_ok=True)
        assert reopened.pk == room.pk and reopened.is_open
        assert not invite_valid(room=reopened, invite=old)
        assert invite_valid(room=reopened, invite=invite_create(room=reopened))


def test_expired_invites_are_refused(canary_tenants, livekit, monkeypatch):
    import apps.meet.services as services

    with schema_context(canary_tenants.a.schema_name):
        room = room_create(name="later")
        invite = invite_create(room=room)
        monkeypatch.setattr(services, "INVITE_TTL_S", -1)
        assert not invite_valid(room=room, invite=invite)


BOOK_SCRIPT = """
m = BOOK "Quarterly review", "numbers", "2026-12-01 15:30", 45, "online"
TALK m.url
TALK m.start
"""


def test_book_in_basic_creates_a_bot_room_and_returns_its_join_link(canary_tenants, livekit):
    tenant = canary_tenants.a
    with schema_context(tenant.schema_name):
        bot = Bot.objects.get(pk=tenant.bot_pk)
        host = _TalkHost(bot)
        result = VM(compile_source(BOOK_SCRIPT, "book"), host).start({})
        assert result.status == "done", result.error
        room = Room.objects.get(bot=bot)
        assert room.title == "Quarterly review" and room.name.startswith("quarterly-review-")
        assert room.metadata["booking"] == {
            "description": "numbers", "start": "2026-12-01T15:30:00+00:00", "duration_min": 45, "location": "online",
        }
    link, start = host.said
    assert link.startswith(f"https://{tenant.host}/meet/{room.name}/?invite=")
    assert start == "2026-12-01T15:30:00+00:00"
    [create] = livekit.calls("CreateRoom")
    assert create.body["name"] == f"{tenant.schema_name}--{room.name}" and create.body["max_participants"] == 50


def test_rooms_from_basic_take_the_bots_meet_max_participants(canary_tenants, livekit):
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.get(pk=canary_tenants.a.bot_pk)
        BotConfig.objects.create(bot=bot, key="meet-max-participants", value="8", line=1)
        assert VM(compile_source('m = START MEET "small"', "meet"), _TalkHost(bot)).start({}).status == "done"
        assert Room.objects.get(name="small").max_participants == 8
        BotConfig.objects.filter(bot=bot).update(value="lots")
        assert VM(compile_source('m = START MEET "fallback"', "meet"), _TalkHost(bot)).start({}).status == "done"
        assert Room.objects.get(name="fallback").max_participants == 50
    assert [c.body["max_participants"] for c in livekit.calls("CreateRoom")] == [8, 50]


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ('m = BOOK ""', "needs a title"),
        ('m = BOOK "x", "", "next tuesday-ish"', "must be a date and time"),
        ('m = BOOK "x", "", "2026-02-30 10:00"', "must be a date and time"),
        ('m = BOOK "x", "", "2026-12-01", 0', "between 1 and"),
        ('m = BOOK "x", "", "2026-12-01", "long"', "number of minutes"),
        ('START MEET "Not A Name"', "room name"),
    ],
)
def test_bad_bookings_fail_the_script_with_the_reason(canary_tenants, livekit, script, message):
    with schema_context(canary_tenants.a.schema_name):
        host = _TalkHost(Bot.objects.get(pk=canary_tenants.a.bot_pk))
        result = VM(compile_source(script, "bad"), host).start({})
        assert result.status == "error" and message in result.error["message"]
        assert not Room.objects.exists()


def test_start_meet_reuses_the_bots_room_and_reopens_it(canary_tenants, livekit):
    with schema_context(canary_tenants.a.schema_name):
        host = _TalkHost(Bot.objects.get(pk=canary_tenants.a.bot_pk))
        script = compile_source('m = START MEET "helpdesk"\nTALK m.path', "meet")
        assert VM(script, host).start({}).status == "done"
        room_close(room=Room.objects.get(name="helpdesk"))
        assert VM(script, host).start({}).status == "done"
        assert Room.objects.get(name="helpdesk").is_open and Room.objects.count() == 1
    assert host.said == ["/meet/helpdesk/", "/meet/helpdesk/"]
    assert len(livekit.calls("CreateRoom")) == 2 and len(livekit.calls("DeleteRoom")) == 1


def test_recording_locations_map_into_the_tenant_drive_only(settings):
    settings.S3_ACCESS_KEY, settings.S3_BUCKET, settings.S3_ENDPOINT_URL = "k", "gb", "http://s3.internal:8333"
    key = "tenants/acme/sales.gbai/sales.gbdrive/recordings/r1.mp4"
    inside = "sales.gbai/sales.gbdrive/recordings/r1.mp4"
    assert recording_drive_key(location=f"s3://gb/{key}", schema="acme") == inside
    assert recording_drive_key(location=f"http://s3.internal:8333/gb/{key}", schema="acme") == inside
    assert recording_drive_key(location=f"https://gb.s3.amazonaws.com/{key}", schema="acme") == inside
    assert recording_drive_key(location=f"s3://gb/{key}", schema="other") is None  # another tenant's prefix
    assert recording_drive_key(location=f"s3://elsewhere/{key}", schema="acme") is None
    assert recording_drive_key(location="s3://gb/tenants/acme/../other/x.mp4", schema="acme") is None
    assert recording_drive_key(location="/out/r1.mp4", schema="acme") is None
    settings.S3_ACCESS_KEY = ""
    assert recording_drive_key(location=f"s3://gb/{key}", schema="acme") is None  # local drive: not in S3


class _TalkHost(BotHost):
    def __init__(self, bot: Bot) -> None:
        super().__init__(bot)
        self.said: list[str] = []

    def talk(self, text: str) -> None:
        self.said.append(text)



def test_start_meet_never_opens_a_console_room_or_another_bots(canary_tenants, livekit):
    """START MEET returned (or reopened) any room of the tenant by name, with a guest invite: a name taken from a
    chat user reached the console's rooms, and reopened one an admin had closed."""
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.get(pk=canary_tenants.a.bot_pk)
        other = Bot.objects.create(name="other-bot")
        room_create(name="board")  # the console's, open
        room_close(room=room_create(name="closed-by-admin"))
        room_create(name="other-bots", bot=other)
        host = _TalkHost(bot)
        for name, owner in (("board", "the console"), ("closed-by-admin", "the console"),
                            ("other-bots", "another bot")):
            result = VM(compile_source(f'm = START MEET "{name}"\nTALK m.url', "meet"), host).start({})
            assert result.status == "error"
            assert f"a room named '{name}' already exists and belongs to {owner}" in result.error["message"]
        assert host.said == []
        assert not Room.objects.get(name="closed-by-admin").is_open
        with pytest.raises(RoomExists, match="belongs to the console"):
            room_create(name="board", bot=bot, exist_ok=True)
        assert room_create(name="board", exist_ok=True).bot is None  # the console's own call still reuses it
    assert len(livekit.calls("CreateRoom")) == 3
