"""The meetings API, LiveKit's webhook and the meeting page, over HTTP on tenant hosts."""

from __future__ import annotations

import re
from pathlib import Path

import jwt
import pytest
from django.conf import settings
from django.test import Client
from django_tenants.utils import schema_context
from livekit import api as lk

from apps.meet.models import ParticipantEvent, Recording, Room, WebhookEvent
from apps.meet.services import WebhookRefused, invite_create, room_create, webhook_receive
from tests.meet.conftest import admin_client, role_client, viewer_client

pytestmark = pytest.mark.django_db


def _post_json(client: Client, path: str, data: dict):
    return client.post(path, data, content_type="application/json")


# --- rooms API -------------------------------------------------------------------------------------------


def test_an_admin_creates_lists_and_closes_a_room(canary_tenants, livekit):
    tenant = canary_tenants.a
    client = admin_client(tenant)
    created = _post_json(client, "/api/meet/rooms", {"name": "kickoff", "title": "Kick-off", "bot": tenant.canary})
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["name"] == "kickoff" and body["bot"] == tenant.canary and body["video"] is True
    assert body["invite_path"].startswith("/meet/kickoff/?invite=")
    assert livekit.calls("CreateRoom")[0].body["name"] == f"{tenant.schema_name}--kickoff"
    assert [r["name"] for r in client.get("/api/meet/rooms").json()["rooms"]] == ["kickoff"]

    livekit.add_participant(f"{tenant.schema_name}--kickoff", "user-7", "Someone")
    detail = client.get("/api/meet/rooms/kickoff").json()
    assert detail["participants"] == [{"identity": "user-7", "name": "Someone"}]

    closed = client.delete("/api/meet/rooms/kickoff")
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    assert livekit.calls("DeleteRoom")[0].body["room"] == f"{tenant.schema_name}--kickoff"
    assert _post_json(client, "/api/meet/rooms/kickoff/token", {}).status_code == 409


def test_room_api_refuses_bad_input_with_the_reason(canary_tenants, livekit):
    client = admin_client(canary_tenants.a)
    cases = [
        ({"name": "Bad Name"}, 400, "room name"),
        ({"name": "ok", "bot": "no-such-bot"}, 400, "no bot named"),
        ({"name": "ok", "max_participants": "many"}, 400, "whole number"),
    ]
    for data, status, message in cases:
        response = _post_json(client, "/api/meet/rooms", data)
        assert response.status_code == status and message in response.json()["error"]
    bad_json = client.post("/api/meet/rooms", b"{not json", content_type="application/json")
    assert bad_json.status_code == 400 and "JSON" in bad_json.json()["error"]
    assert _post_json(client, "/api/meet/rooms", {"name": "dup"}).status_code == 201
    assert _post_json(client, "/api/meet/rooms", {"name": "dup"}).status_code == 409
    with schema_context(canary_tenants.a.schema_name):
        assert list(Room.objects.values_list("name", flat=True)) == ["dup"]


def test_anonymous_and_viewers_cannot_manage_rooms(canary_tenants, livekit):
    tenant = canary_tenants.a
    anonymous = Client(HTTP_HOST=tenant.host)
    assert _post_json(anonymous, "/api/meet/rooms", {"name": "x"}).status_code == 401
    assert anonymous.get("/api/meet/rooms").status_code == 401
    viewer = viewer_client(tenant)
    refused = _post_json(viewer, "/api/meet/rooms", {"name": "x"})
    assert refused.status_code == 403 and "you have viewer" in refused.json()["error"]
    with schema_context(tenant.schema_name):
        room_create(name="kept")
    assert viewer.delete("/api/meet/rooms/kept").status_code == 403
    assert [r["name"] for r in viewer.get("/api/meet/rooms").json()["rooms"]] == ["kept"]
    no_role = role_client(tenant, "outsider", "")
    assert no_role.get("/api/meet/rooms").status_code == 403
    assert _post_json(no_role, "/api/meet/rooms/kept/token", {}).status_code == 403
    assert no_role.get("/meet/kept/").status_code == 403
    assert livekit.calls("DeleteRoom") == []


def test_an_editor_manages_rooms(canary_tenants, livekit):
    editor = role_client(canary_tenants.a, "ed", "editor")
    assert _post_json(editor, "/api/meet/rooms", {"name": "edited"}).status_code == 201
    assert editor.delete("/api/meet/rooms/edited").json()["status"] == "closed"


def test_tokens_from_the_api_carry_the_callers_grants(canary_tenants, livekit):
    tenant = canary_tenants.a
    with schema_context(tenant.schema_name):
        room = room_create(name="town-hall")
        invite = invite_create(room=room)
    grants = {}
    for who, client, data in [
        ("admin", admin_client(tenant), {}),
        ("editor", role_client(tenant, "ed", "editor"), {}),
        ("viewer", viewer_client(tenant), {}),
        ("viewer+invite", role_client(tenant, "vi", "viewer"), {"invite": invite}),
        ("guest", Client(HTTP_HOST=tenant.host), {"invite": invite, "name": "Visitor"}),
    ]:
        response = _post_json(client, "/api/meet/rooms/town-hall/token", data)
        assert response.status_code == 200, (who, response.content)
        body = response.json()
        video = jwt.decode(body["token"], livekit.api_secret, algorithms=["HS256"], issuer=livekit.api_key)["video"]
        assert video["room"] == f"{tenant.schema_name}--town-hall" and body["url"] == livekit.ws_url
        grants[who] = (body["role"], video["roomAdmin"], video["canPublish"], video["canSubscribe"])
    assert grants == {
        "admin": ("admin", True, True, True),
        "editor": ("editor", True, True, True),
        "viewer": ("viewer", False, False, True),
        "viewer+invite": ("guest", False, True, True),
        "guest": ("guest", False, True, True),
    }


def test_a_token_needs_a_session_or_a_valid_invite_of_this_tenant(canary_tenants, livekit):
    with schema_context(canary_tenants.b.schema_name):
        invite_b = invite_create(room=room_create(name="same"))
    with schema_context(canary_tenants.a.schema_name):
        room_create(name="same")
    anonymous = Client(HTTP_HOST=canary_tenants.a.host)
    for data in ({"name": "x"}, {"name": "x", "invite": "forged"}, {"name": "x", "invite": invite_b}):
        assert _post_json(anonymous, "/api/meet/rooms/same/token", data).status_code == 401
    assert _post_json(anonymous, "/api/meet/rooms/absent/token", {}).status_code == 404


def test_without_livekit_the_api_says_video_is_not_configured(canary_tenants, no_livekit):
    client = admin_client(canary_tenants.a)
    assert _post_json(client, "/api/meet/rooms", {"name": "offline"}).json()["video"] is False
    response = _post_json(client, "/api/meet/rooms/offline/token", {})
    assert response.status_code == 503 and "not configured" in response.json()["error"]
    page = client.get("/meet/offline/")
    assert page.status_code == 200 and "Video is not configured" in page.content.decode()
    assert "livekit-client" not in page.content.decode()


# --- webhook ---------------------------------------------------------------------------------------------


def _webhook(client: Client, body: str, authorization: str):
    return client.post("/api/meet/webhook", body, content_type="application/webhook+json",
                       HTTP_AUTHORIZATION=authorization)


def test_webhooks_with_a_bad_signature_are_refused_and_record_nothing(canary_tenants, livekit):
    tenant = canary_tenants.a
    with schema_context(tenant.schema_name):
        room_create(name="signed")
    client = Client(HTTP_HOST=tenant.host)
    body = livekit.webhook_body("room_started", room=f"{tenant.schema_name}--signed")
    other_body = livekit.webhook_body("room_finished", room=f"{tenant.schema_name}--signed")
    refusals = [
        ("", "Authorization"),
        ("not-a-jwt", "signature"),
        (livekit.webhook_authorization(body, secret="another-secret-of-at-least-32-bytes"), "signature"),
        (livekit.webhook_authorization(body, api_key="another-key"), "signature"),
        (livekit.webhook_authorization(other_body), "does not match"),  # signed for another body
        (lk.AccessToken(livekit.api_key, livekit.api_secret).to_jwt(), "does not match"),  # no sha256 claim
    ]
    for authorization, message in refusals:
        response = _webhook(client, body, authorization)
        assert response.status_code == 401, authorization
        assert message in response.json()["error"]
    with schema_context(tenant.schema_name):
        assert WebhookEvent.objects.count() == 0 and Room.objects.get(name="signed").started_at is None


def test_a_good_webhook_is_recorded_once_even_when_redelivered(canary_tenants, livekit):
    tenant = canary_tenants.a
    with schema_context(tenant.schema_name):
        room_create(name="weekly")
    client = Client(HTTP_HOST=tenant.host, enforce_csrf_checks=True)  # LiveKit has no CSRF token
    lk_name = f"{tenant.schema_name}--weekly"
    joined = livekit.webhook_body(
        "participant_joined", room=lk_name, event_id="EV_join_1",
        participant=lk.ParticipantInfo(identity="user-1", name="Ana", sid="PA_1"),
    )
    first = _webhook(client, joined, livekit.webhook_authorization(joined))
    again = _webhook(client, joined, livekit.webhook_authorization(joined))
    assert first.status_code == 200 and first.json()["status"] == "recorded"
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    started = livekit.webhook_body("room_started", room=lk_name)
    assert _webhook(client, started, livekit.webhook_authorization(started)).json()["status"] == "recorded"
    with schema_context(tenant.schema_name):
        assert WebhookEvent.objects.filter(event_id="EV_join_1").count() == 1
        [event] = ParticipantEvent.objects.all()
        assert (event.kind, event.identity, event.name, event.room.name) == ("joined", "user-1", "Ana", "weekly")
        assert Room.objects.get(name="weekly").started_at is not None
    with schema_context(canary_tenants.b.schema_name):
        assert WebhookEvent.objects.count() == 0


def test_a_closed_room_that_livekit_starts_again_is_deleted_again(canary_tenants, livekit,
                                                                 django_capture_on_commit_callbacks):
    """A join token issued before the close stays valid for its TTL, and LiveKit creates rooms on join: the
    room came back with its people in it."""
    from apps.meet.services import room_close

    tenant = canary_tenants.a
    with schema_context(tenant.schema_name):
        room_close(room=room_create(name="closed-door"))
    lk_name = f"{tenant.schema_name}--closed-door"
    deletes = len(livekit.calls("DeleteRoom"))
    client = Client(HTTP_HOST=tenant.host)
    started = livekit.webhook_body("room_started", room=lk_name)
    with django_capture_on_commit_callbacks(execute=True):  # the delete goes out when the record commits
        assert _webhook(client, started, livekit.webhook_authorization(started)).json()["status"] == "recorded"
    assert [c.body["room"] for c in livekit.calls("DeleteRoom")[deletes:]] == [lk_name]


def test_a_room_reopened_before_the_webhook_commits_is_not_deleted(canary_tenants, livekit,
                                                                 django_capture_on_commit_callbacks):
    """START MEET's CreateRoom runs before its reopening commits: the room_started webhook of that very room
    saw it closed, and deleted the room just reopened."""
    from apps.meet.services import room_close

    tenant = canary_tenants.a
    with schema_context(tenant.schema_name):
        room_close(room=room_create(name="back-again"))
    client = Client(HTTP_HOST=tenant.host)
    started = livekit.webhook_body("room_started", room=f"{tenant.schema_name}--back-again")
    with django_capture_on_commit_callbacks() as pending:
        assert _webhook(client, started, livekit.webhook_authorization(started)).status_code == 200
    with schema_context(tenant.schema_name):
        room_create(name="back-again", exist_ok=True)
    deletes = len(livekit.calls("DeleteRoom"))
    for callback in pending:
        callback()
    assert len(livekit.calls("DeleteRoom")) == deletes


def test_a_webhook_naming_another_tenants_room_is_refused(canary_tenants, livekit):
    a, b = canary_tenants.a, canary_tenants.b
    for tenant in (a, b):
        with schema_context(tenant.schema_name):
            room_create(name="shared-name")
    body = livekit.webhook_body("room_started", room=f"{b.schema_name}--shared-name")
    response = _webhook(Client(HTTP_HOST=a.host), body, livekit.webhook_authorization(body))
    assert response.status_code == 403 and "another tenant" in response.json()["error"]
    for tenant in (a, b):
        with schema_context(tenant.schema_name):
            assert WebhookEvent.objects.count() == 0
            assert Room.objects.get(name="shared-name").started_at is None


def test_egress_webhooks_store_the_recording_location_in_the_tenant_drive(canary_tenants, livekit, settings):
    tenant = canary_tenants.a
    settings.S3_ACCESS_KEY, settings.S3_BUCKET, settings.S3_ENDPOINT_URL = "key", "gbplatform", ""
    with schema_context(tenant.schema_name):
        room_create(name="recorded")
    client = Client(HTTP_HOST=tenant.host)
    key = f"{tenant.canary}.gbai/{tenant.canary}.gbdrive/recordings/recorded.mp4"
    info = lk.EgressInfo(
        egress_id="EG_1", room_name=f"{tenant.schema_name}--recorded", status=lk.EgressStatus.EGRESS_ACTIVE
    )
    started = livekit.webhook_body("egress_started", room=info.room_name, egress_info=info)
    assert _webhook(client, started, livekit.webhook_authorization(started)).status_code == 200
    info.status = lk.EgressStatus.EGRESS_COMPLETE
    info.file_results.add(filename=f"tenants/{tenant.schema_name}/{key}", size=2048, duration=3_000_000_000,
                          location=f"s3://gbplatform/tenants/{tenant.schema_name}/{key}")
    ended = livekit.webhook_body("egress_ended", room=info.room_name, egress_info=info)
    assert _webhook(client, ended, livekit.webhook_authorization(ended)).status_code == 200
    outside = lk.EgressInfo(egress_id="EG_2", room_name=info.room_name, status=lk.EgressStatus.EGRESS_COMPLETE)
    outside.file_results.add(location="https://cdn.example.org/r.mp4")
    other = livekit.webhook_body("egress_ended", room=info.room_name, egress_info=outside)
    assert _webhook(client, other, livekit.webhook_authorization(other)).status_code == 200
    with schema_context(tenant.schema_name):
        inside, elsewhere = Recording.objects.get(egress_id="EG_1"), Recording.objects.get(egress_id="EG_2")
    assert (inside.status, inside.drive_key, inside.external_location) == ("complete", key, "")
    assert inside.size_bytes == 2048 and inside.duration_ms == 3000
    assert (elsewhere.drive_key, elsewhere.external_location) == ("", "https://cdn.example.org/r.mp4")


def test_on_the_public_host_the_namespace_picks_the_tenant(canary_tenants, livekit):
    a, b = canary_tenants.a, canary_tenants.b
    with schema_context(b.schema_name):
        room_create(name="routed")
    body = livekit.webhook_body("room_started", room=f"{b.schema_name}--routed", event_id="EV_routed")
    with schema_context("public"):
        outcome = webhook_receive(body=body.encode(), authorization=livekit.webhook_authorization(body),
                                  expected_schema=None)
        assert (outcome.status, outcome.schema) == ("recorded", b.schema_name)
        ghost = livekit.webhook_body("room_started", room="no_such_tenant--routed")
        with pytest.raises(WebhookRefused) as refused:
            webhook_receive(body=ghost.encode(), authorization=livekit.webhook_authorization(ghost),
                            expected_schema=None)
        assert refused.value.status == 404
    with schema_context(b.schema_name):
        assert WebhookEvent.objects.get().event_id == "EV_routed"
    with schema_context(a.schema_name):
        assert WebhookEvent.objects.count() == 0


# --- meeting page ----------------------------------------------------------------------------------------

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
EVENT_HANDLER = re.compile(r"\son[a-z]+\s*=", re.IGNORECASE)


def _csp(response) -> dict[str, list[str]]:
    return {part.split()[0]: part.split()[1:] for part in response["Content-Security-Policy"].split("; ")}


def test_the_meeting_page_loads_the_client_without_inline_script(canary_tenants, livekit):
    tenant = canary_tenants.a
    with schema_context(tenant.schema_name):
        room_create(name="open-house", title="Open house")
    response = admin_client(tenant).get("/meet/open-house/")
    assert response.status_code == 200
    html = response.content.decode()
    assert INLINE_SCRIPT.search(html) is None and EVENT_HANDLER.search(html) is None
    scripts = re.findall(r'<script src="([^"]+)"', html)
    assert scripts == ["/static/vendor/livekit-client.umd.js", "/static/meet/meet.js"]
    assert (Path(settings.BASE_DIR) / "static/meet/meet.js").is_file()
    csp = _csp(response)
    assert csp["script-src"] == ["'self'"] and csp["default-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'", livekit.ws_url, livekit.url, f"ws://{tenant.host}"]
    assert "unsafe" not in response["Content-Security-Policy"]
    assert "camera=(self)" in response["Permissions-Policy"] and "microphone=(self)" in response["Permissions-Policy"]
    assert "geolocation=()" in response["Permissions-Policy"]
    # other pages (here: the page for a room that does not exist) keep the platform's strict default
    other = Client(HTTP_HOST=tenant.host).get("/meet/absent/")
    assert "camera=()" in other["Permissions-Policy"] and livekit.url not in other["Content-Security-Policy"]


def test_the_page_needs_a_session_or_an_invite(canary_tenants, livekit):
    tenant = canary_tenants.a
    with schema_context(tenant.schema_name):
        invite = invite_create(room=room_create(name="private"))
    anonymous = Client(HTTP_HOST=tenant.host)
    redirect = anonymous.get("/meet/private/")
    assert redirect.status_code == 302 and "/accounts/login/" in redirect["Location"]
    browser = Client(HTTP_HOST=tenant.host, enforce_csrf_checks=True)
    guest = browser.get("/meet/private/", {"invite": invite})
    assert guest.status_code == 200
    html = guest.content.decode()
    assert 'id="meet-name"' in html
    # what meet.js does: POST the invite and a name with the page's CSRF token
    data_invite = re.search(r'data-invite="([^"]*)"', html).group(1)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    assert browser.post("/api/meet/rooms/private/token", {"invite": data_invite, "name": "Guest"}).status_code == 403
    joined = browser.post("/api/meet/rooms/private/token", {"invite": data_invite, "name": "Guest"},
                          HTTP_X_CSRFTOKEN=csrf)
    assert joined.status_code == 200 and joined.json()["role"] == "guest"
    assert anonymous.get("/meet/absent/").status_code == 404
    # the same invite on the other tenant's host opens nothing
    assert Client(HTTP_HOST=canary_tenants.b.host).get("/meet/private/", {"invite": invite}).status_code == 404
