"""A booked meeting's invite link works on the day of the meeting, however far ahead it was booked (within
BOOK_MAX_AHEAD), and stops working a margin after the meeting ends; ad-hoc invites keep their fixed TTL.

The clock is moved by patching `time.time` (what django.core.signing and the invite expiry read) and
`django.utils.timezone.now` together, only around the calls that must see the later day."""

from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core import signing
from django.test import Client
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.basic.compiler import compile_source
from apps.basic.vm import VM
from apps.bots.host import BotHost
from apps.bots.models import Bot
from apps.meet.models import Room
from apps.meet.services import (
    BOOK_INVITE_MARGIN,
    BOOK_MAX_AHEAD,
    INVITE_SALT,
    INVITE_TTL_S,
    MeetError,
    invite_create,
    invite_valid,
    meeting_book,
    meeting_start,
)

pytestmark = pytest.mark.django_db


@contextmanager
def clock_at(monkeypatch, moment: datetime):
    with monkeypatch.context() as patched:
        patched.setattr(time, "time", lambda: moment.timestamp())
        patched.setattr(timezone, "now", lambda: moment)
        yield


class _QuietHost(BotHost):
    def talk(self, text: str) -> None:
        pass


def _invite_of(url: str) -> str:
    [invite] = parse_qs(urlsplit(url).query)["invite"]
    return invite


def _meeting_day(days: int) -> datetime:
    """10:00 UTC `days` days from now."""
    return (datetime.now(UTC) + timedelta(days=days)).replace(hour=10, minute=0, second=0, microsecond=0)


def test_a_booked_invite_still_works_on_the_day_of_the_meeting(canary_tenants, livekit, monkeypatch):
    """Booked today for 54 days ahead (e.g. on 2026-11-22 for 2027-01-15): the 14-day TTL made the link
    dead on the day."""
    tenant = canary_tenants.a
    start = _meeting_day(54)
    with schema_context(tenant.schema_name):
        bot = Bot.objects.get(pk=tenant.bot_pk)
        booked = meeting_book(bot=bot, title="Planning", start=start.strftime("%Y-%m-%d %H:%M"), duration_min=90)
        room = Room.objects.get(name=booked["name"])
        invite = _invite_of(booked["url"])
        assert invite_valid(room=room, invite=invite)
        end = start + timedelta(minutes=90)
        for moment, valid in [
            (start - timedelta(hours=1), True),  # the morning of the meeting
            (start + timedelta(minutes=45), True),  # during it
            (end + BOOK_INVITE_MARGIN - timedelta(minutes=1), True),
            (end + BOOK_INVITE_MARGIN + timedelta(minutes=1), False),  # not for ever
        ]:
            with clock_at(monkeypatch, moment):
                assert invite_valid(room=room, invite=invite) is valid, moment
        # A link made later for the same room (the console's invite) follows the booking too.
        console_invite = invite_create(room=room)
    with clock_at(monkeypatch, start + timedelta(minutes=5)):
        with schema_context(tenant.schema_name):
            assert invite_valid(room=room, invite=console_invite)
        # The whole way: a guest with the mailed link gets a join token on the day.
        response = Client(HTTP_HOST=tenant.host).post(
            f"/api/meet/rooms/{room.name}/token", {"invite": invite, "name": "Guest"}, content_type="application/json",
        )
    assert response.status_code == 200, response.content
    assert response.json()["role"] == "guest"


def test_the_expiry_is_signed_into_the_invite_and_no_client_extends_it(canary_tenants, livekit, monkeypatch):
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.get(pk=canary_tenants.a.bot_pk)
        start = _meeting_day(30)
        room = Room.objects.get(name=meeting_book(bot=bot, title="Sync", start=start.isoformat())["name"])
        invite = invite_create(room=room)
        data = signing.loads(invite, salt=INVITE_SALT)
        assert data["e"] == int((start + timedelta(minutes=60) + BOOK_INVITE_MARGIN).timestamp())
        # A payload with a later expiry but not signed by the server is refused.
        forged = signing.dumps({**data, "e": data["e"] + 10**8}, key="not-the-server-key", salt=INVITE_SALT,
                               compress=True)
        assert not invite_valid(room=room, invite=forged)
        # Moving the booking in the room afterwards does not move an invite already made.
        room.metadata = {"booking": {**room.metadata["booking"], "start": (start + timedelta(days=200)).isoformat()}}
        room.save(update_fields=["metadata"])
        with clock_at(monkeypatch, start + timedelta(days=3)):
            assert not invite_valid(room=room, invite=invite)


def test_a_booking_soon_keeps_at_least_the_ad_hoc_ttl(canary_tenants, livekit, monkeypatch):
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.get(pk=canary_tenants.a.bot_pk)
        booked = meeting_book(bot=bot, title="Tomorrow", start=_meeting_day(1).isoformat())
        room = Room.objects.get(name=booked["name"])
        invite = _invite_of(booked["url"])
        now = datetime.now(UTC)
        with clock_at(monkeypatch, now + timedelta(seconds=INVITE_TTL_S - 60)):
            assert invite_valid(room=room, invite=invite)
        with clock_at(monkeypatch, now + timedelta(seconds=INVITE_TTL_S + 60)):
            assert not invite_valid(room=room, invite=invite)


def test_ad_hoc_invites_keep_their_fixed_ttl(canary_tenants, livekit, monkeypatch):
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.get(pk=canary_tenants.a.bot_pk)
        started = meeting_start(bot=bot, name="helpdesk")
        room = Room.objects.get(name="helpdesk")
        invite = _invite_of(started["url"])
        assert "e" not in signing.loads(invite, salt=INVITE_SALT)
        now = datetime.now(UTC)
        with clock_at(monkeypatch, now + timedelta(seconds=INVITE_TTL_S - 60)):
            assert invite_valid(room=room, invite=invite)
        with clock_at(monkeypatch, now + timedelta(seconds=INVITE_TTL_S + 60)):
            assert not invite_valid(room=room, invite=invite)


def test_a_booking_too_far_ahead_is_refused_with_the_limit(canary_tenants, livekit):
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.get(pk=canary_tenants.a.bot_pk)
        too_far = _meeting_day(BOOK_MAX_AHEAD.days + 2)
        with pytest.raises(MeetError, match=f"too far ahead.*{BOOK_MAX_AHEAD.days} days"):
            meeting_book(bot=bot, title="Next year", start=too_far.isoformat())
        script = f'm = BOOK "Far", "", "{too_far:%Y-%m-%d %H:%M}", 30'
        result = VM(compile_source(script, "far"), _QuietHost(bot)).start({})
        assert result.status == "error" and "too far ahead" in result.error["message"]
        assert not Room.objects.exists()
        # The last day within the bound is still booked.
        assert meeting_book(bot=bot, title="Within", start=_meeting_day(BOOK_MAX_AHEAD.days - 1).isoformat())
