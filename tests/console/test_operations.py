"""Schedules with their runs (output and errors), meeting rooms created and closed from the console, a bot's
email settings (no password shown) and its mail log."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.accounts.roles import Role
from apps.automation.models import JobRun
from apps.bots.models import Bot, BotConfig
from apps.compliance.models import AuditEvent
from apps.mail.models import IncomingMail, OutgoingMail
from apps.meet.models import Room

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_livekit(settings):
    settings.LIVEKIT_URL = settings.LIVEKIT_API_KEY = settings.LIVEKIT_API_SECRET = ""


def test_schedule_runs_show_output_and_errors_paginated(console_client, canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.get(name=canary_tenants.a.canary)
        start = timezone.now() - dt.timedelta(days=1)
        JobRun.objects.bulk_create(
            JobRun(bot=bot, script_name="report", cron="* * * * *", scheduled_for=start + dt.timedelta(minutes=i),
                   status="ok", output=f"report number {i}") for i in range(30))
        JobRun.objects.create(bot=bot, script_name="report", cron="* * * * *", scheduled_for=timezone.now(),
                              status="error", error_line=7, error_message="HEAR: no user to hear from")
    client = console_client(Role.VIEWER)
    html = client.get(f"/console/schedules/{canary_tenants.a.canary}/").content.decode()
    assert "line 7" in html and "HEAR: no user to hear from" in html and "report number 29" in html
    assert "report number 0" not in html and "Page 1 of 2" in html
    second = client.get(f"/console/schedules/{canary_tenants.a.canary}/?page=2").content.decode()
    assert "report number 0" in second
    errors = client.get(f"/console/schedules/{canary_tenants.a.canary}/?status=error").content.decode()
    assert "HEAR: no user" in errors and "report number" not in errors


def test_rooms_are_created_and_closed_after_confirmation_and_audited(console_client, canary_tenants):
    client = console_client(Role.EDITOR)
    asked = client.post("/console/meetings/create/", {"name": "standup", "title": "Daily"})
    assert asked.status_code == 200 and 'value="standup"' in asked.content.decode()
    assert client.post("/console/meetings/create/", {"name": "standup", "title": "Daily",
                                                      "confirmed": "yes"}).status_code == 302
    html = client.get("/console/meetings/").content.decode()
    assert "standup" in html and "Daily" in html and "/console/meetings/standup/close/" in html
    assert client.post("/console/meetings/standup/close/", {"confirmed": "yes"}).status_code == 302
    with schema_context(canary_tenants.a.schema_name):
        assert Room.objects.get(name="standup").status == "closed"
        actions = set(AuditEvent.objects.filter(object_id="standup").values_list("action", flat=True))
    assert actions == {"meet.room.create", "meet.room.close"}


def test_a_bad_room_name_is_refused_with_the_reason(console_client, canary_tenants):
    client = console_client(Role.EDITOR)
    answer = client.post("/console/meetings/create/", {"name": "Bad Name", "confirmed": "yes"}, follow=True)
    assert "must be 1-63 lower-case letters" in answer.content.decode()
    with schema_context(canary_tenants.a.schema_name):
        assert not Room.objects.exists()


def test_viewer_cannot_create_or_close_rooms(console_client, canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        Room.objects.create(name="open-room")
    client = console_client(Role.VIEWER)
    assert client.post("/console/meetings/create/", {"name": "x", "confirmed": "yes"}).status_code == 403
    assert client.post("/console/meetings/open-room/close/", {"confirmed": "yes"}).status_code == 403
    with schema_context(canary_tenants.a.schema_name):
        assert Room.objects.get(name="open-room").status == "open" and Room.objects.count() == 1


def test_another_tenants_room_cannot_be_closed(console_client, canary_tenants):
    with schema_context(canary_tenants.b.schema_name):
        Room.objects.create(name="b-room")
    assert console_client(Role.ADMIN).post("/console/meetings/b-room/close/", {"confirmed": "yes"}).status_code == 404
    with schema_context(canary_tenants.b.schema_name):
        assert Room.objects.get(name="b-room").status == "open"


def test_email_page_shows_settings_without_passwords_and_the_mail_log(console_client, canary_tenants, settings):
    settings.SMTP_HOST = ""
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.get(name=canary_tenants.a.canary)
        for line, (key, value) in enumerate([("email-from", "bot@shop.example"), ("email-server", "smtp.example.com"),
                                             ("email-pass", "hunter2-plain"), ("imap-server", "imap.example.com"),
                                             ("imap-pass", "vault:gbo/tenants/x/mail#password")], start=1):
            BotConfig.objects.create(bot=bot, key=key, value=value, line=line)
        OutgoingMail.objects.create(bot=bot, to="ana@example.com", subject="Your order", message_id="<1@x>",
                                    body_text="hi", status="failed", last_error="550 mailbox unavailable")
        IncomingMail.objects.create(bot=bot, message_id="<2@y>", thread_key="<2@y>", from_address="rui@example.com",
                                    subject="Question", status="skipped", reason="auto-submitted")
    client = console_client(Role.VIEWER)
    html = client.get(f"/console/email/{canary_tenants.a.canary}/").content.decode()
    assert "smtp.example.com" in html and "bot@shop.example" in html
    assert "hunter2-plain" not in html and "vault:gbo/tenants/x/mail#password" in html
    assert "Your order" in html and "550 mailbox unavailable" in html
    incoming = client.get(f"/console/email/{canary_tenants.a.canary}/?box=incoming").content.decode()
    assert "rui@example.com" in incoming and "auto-submitted" in incoming


def test_email_page_says_why_a_bot_cannot_send(console_client, canary_tenants, settings):
    settings.SMTP_HOST, settings.MAIL_DEFAULT_FROM = "", ""
    html = console_client(Role.VIEWER).get(f"/console/email/{canary_tenants.a.canary}/").content.decode()
    assert "This bot cannot send mail:" in html and "email-from" in html
