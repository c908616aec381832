"""Display names in meetings: the name minted into a join token (shown to every other participant) holds no
control characters and no bidirectional override or isolate; and a signed LiveKit webhook naming a participant
with a NUL (PostgreSQL stores none in text or jsonb) is recorded, not lost to a 500."""

from __future__ import annotations

import jwt
import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django_tenants.utils import schema_context
from livekit import api as lk

from apps.core.wire import NUL_REPLACEMENT
from apps.meet.models import ParticipantEvent, Recording, Room, WebhookEvent
from apps.meet.services import MeetError, MeetRole, display_name_clean, invite_create, join_token_mint, room_create

pytestmark = pytest.mark.django_db

# What a display name must never hold: C0 and C1 controls, bidi embeddings/overrides/isolates and marks.
_INVISIBLE = {chr(c) for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)]} | set(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def _token_name(token: str, livekit) -> str:
    return jwt.decode(token, livekit.api_secret, algorithms=["HS256"], issuer=livekit.api_key)["name"]


def _guest_token(tenant, room: str, invite: str, name: str):
    return Client(HTTP_HOST=tenant.host).post(
        f"/api/meet/rooms/{room}/token", {"invite": invite, "name": name}, content_type="application/json",
    )


def test_a_guest_name_with_a_nul_and_a_right_to_left_override_is_minted_clean(canary_tenants, livekit):
    tenant = canary_tenants.a
    with schema_context(tenant.schema_name):
        invite = invite_create(room=room_create(name="lobby"))
    response = _guest_token(tenant, "lobby", invite, "Eve\u0000\u202eevil")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["name"] == "Eveevil"
    assert _token_name(body["token"], livekit) == "Eveevil"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\u2066Bob\u2069", "Bob"),  # isolates
        ("\u202aLeft\u202c \u202bRight\u202c", "Left Right"),  # embeddings and the pop
        ("\u200fMark\u200e \u061cAlm", "Mark Alm"),  # direction marks
        ("Bell\x07\x1b[31mRed", "Bell[31mRed"),  # C0 controls: a bell, an escape sequence's ESC
        ("C1\x9b31m\x80", "C131m"),  # C1 controls (CSI)
        ("Tab\tand\nnewline \x00 NUL", "Tab and newline NUL"),  # whitespace controls are spaces, then collapsed
        ("Zoë 👩\u200d💻 Ş", "Zoë 👩\u200d💻 Ş"),  # letters, accents and an emoji sequence (ZWJ) stay
    ],
)
def test_display_names_lose_controls_and_direction_overrides(raw, shown):
    assert display_name_clean(raw) == shown
    assert not set(display_name_clean(raw)) & _INVISIBLE


def test_a_guest_name_of_only_invisible_characters_is_refused_with_the_reason(canary_tenants, livekit):
    tenant = canary_tenants.a
    with schema_context(tenant.schema_name):
        room = room_create(name="foyer")
        invite = invite_create(room=room)
        with pytest.raises(MeetError, match="display name"):
            join_token_mint(room=room, role=MeetRole.GUEST, guest_name="\u202e\x00 \u2066\x07")
    response = _guest_token(tenant, "foyer", invite, "\x00\u202e\u2069")
    assert response.status_code == 400
    assert "display name" in response.json()["error"] and "visible" in response.json()["error"]
    # The length limit counts what is shown: 80 letters padded with controls still fit.
    padded = _guest_token(tenant, "foyer", invite, "\u202e" * 10 + "x" * 80)
    assert padded.status_code == 200 and padded.json()["name"] == "x" * 80


def test_a_signed_in_users_name_is_cleaned_too(canary_tenants, livekit):
    with schema_context(canary_tenants.a.schema_name):
        room = room_create(name="staff")
        user = get_user_model().objects.create_user(username="wanda", first_name="Wan\u202eda\x07", last_name="X")
        joined = join_token_mint(room=room, role=MeetRole.VIEWER, user=user)
        hidden = get_user_model().objects.create_user(username="\u2066\u2069", first_name="\x1b")
        fallback = join_token_mint(room=room, role=MeetRole.VIEWER, user=hidden)
    assert joined.name == "Wanda X" and _token_name(joined.token, livekit) == "Wanda X"
    assert fallback.name == f"user-{hidden.pk}"  # nothing visible: the identity, never an empty name


def _webhook(client: Client, body: str, authorization: str):
    return client.post("/api/meet/webhook", body, content_type="application/webhook+json",
                       HTTP_AUTHORIZATION=authorization)


def test_a_signed_webhook_naming_a_participant_with_a_nul_is_recorded(canary_tenants, livekit):
    """LiveKit forwards whatever name a token carried (one minted before this fix, or by another service with
    the same key): the event was a 500 (PostgreSQL: \\u0000 cannot be converted to text) and the join was lost."""
    tenant = canary_tenants.a
    with schema_context(tenant.schema_name):
        room_create(name="nul-room")
    client = Client(HTTP_HOST=tenant.host)
    lk_name = f"{tenant.schema_name}--nul-room"
    outcomes = []
    for kind, event_id in [("participant_joined", "EV_nul_join"), ("participant_left", "EV_nul_left")]:
        body = livekit.webhook_body(
            kind, room=lk_name, event_id=event_id,
            participant=lk.ParticipantInfo(identity="guest-\x00a1", name="Eve\x00", sid="PA_\x00nul"),
        )
        response = _webhook(client, body, livekit.webhook_authorization(body))
        outcomes.append((response.status_code, response.json()["status"]))
        again = _webhook(client, body, livekit.webhook_authorization(body))
        outcomes.append((again.status_code, again.json()["status"]))
    assert outcomes == [(200, "recorded"), (200, "duplicate"), (200, "recorded"), (200, "duplicate")]
    with schema_context(tenant.schema_name):
        stored = WebhookEvent.objects.get(event_id="EV_nul_join")
        assert stored.payload["participant"]["name"] == f"Eve{NUL_REPLACEMENT}"
        assert [(e.kind, e.identity, e.name, e.participant_sid) for e in ParticipantEvent.objects.all()] == [
            ("joined", f"guest-{NUL_REPLACEMENT}a1", f"Eve{NUL_REPLACEMENT}", f"PA_{NUL_REPLACEMENT}nul"),
            ("left", f"guest-{NUL_REPLACEMENT}a1", f"Eve{NUL_REPLACEMENT}", f"PA_{NUL_REPLACEMENT}nul"),
        ]
        assert all(e.room.name == "nul-room" for e in ParticipantEvent.objects.all())


def test_a_signed_egress_webhook_with_a_nul_in_its_error_or_file_is_recorded(canary_tenants, livekit):
    tenant = canary_tenants.a
    with schema_context(tenant.schema_name):
        room_create(name="taped")
    info = lk.EgressInfo(egress_id="EG_nul", room_name=f"{tenant.schema_name}--taped", status=4,
                         error="disk\x00full")
    info.file_results.add(filename="/out/\x00x.mp4", location="/out/\x00x.mp4")
    body = livekit.webhook_body("egress_ended", room=info.room_name, event_id="EV_nul_egress", egress_info=info)
    response = _webhook(Client(HTTP_HOST=tenant.host), body, livekit.webhook_authorization(body))
    assert response.status_code == 200 and response.json()["status"] == "recorded"
    with schema_context(tenant.schema_name):
        recording = Recording.objects.get(egress_id="EG_nul")
        assert recording.room == Room.objects.get(name="taped")
        assert (recording.status, recording.error) == ("failed", f"disk{NUL_REPLACEMENT}full")
        assert recording.external_location == f"/out/{NUL_REPLACEMENT}x.mp4" and recording.drive_key == ""
        assert WebhookEvent.objects.filter(event_id="EV_nul_egress").exists()
