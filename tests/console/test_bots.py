"""Bot pages: list with empty state and pagination, deploy through the page (progress form, htmx and
plain), scripts with compile errors and tool schemas, config.csv with line-level errors, bot memory."""

from __future__ import annotations

import html

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django_tenants.utils import schema_context

from apps.accounts.roles import Role
from apps.bots.models import Bot, BotConfig, BotMemory
from apps.compliance.models import AuditEvent
from apps.drive.storage import tenant_drive
from tests.console.packages import demo_files, package_zip

pytestmark = pytest.mark.django_db


def _deploy(client, bot: str, *, htmx: bool = False, confirmed: bool = True):
    upload = SimpleUploadedFile(f"{bot}.zip", package_zip(bot, demo_files(bot)), content_type="application/zip")
    data = {"package": upload, **({"confirmed": "yes"} if confirmed else {})}
    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    return client.post("/console/bots/deploy/", data, **headers)


def test_bot_list_shows_the_tenants_bots_and_a_deploy_form_for_editors(console_client, canary_tenants):
    editor = console_client(Role.EDITOR).get("/console/bots/").content.decode()
    assert canary_tenants.a.canary in editor and canary_tenants.b.canary not in editor
    assert 'hx-post="/console/bots/deploy/"' in editor and "<progress" in editor
    viewer = console_client(Role.VIEWER).get("/console/bots/").content.decode()
    assert canary_tenants.a.canary in viewer and "/console/bots/deploy/" not in viewer


def test_bot_list_search_without_match_says_what_to_do(console_client):
    html = console_client(Role.VIEWER).get("/console/bots/?q=no-such-bot").content.decode()
    assert "No bot matches this search." in html and "Clear the search" in html


def test_bot_list_is_paginated(console_client, canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        Bot.objects.bulk_create(Bot(name=f"bulk-{i:03}") for i in range(60))
    client = console_client(Role.VIEWER)
    first = client.get("/console/bots/").content.decode()
    assert "bulk-000" in first and "bulk-059" not in first and "Page 1 of 2" in first
    second = client.get("/console/bots/?page=2").content.decode()
    assert "bulk-059" in second and "bulk-000" not in second
    assert "bulk-059" in client.get("/console/bots/?page=99").content.decode()  # clamped to the last page


def test_deploy_through_the_page_writes_the_package_and_shows_compile_errors(console_client, canary_tenants,
                                                                            local_storage):
    client = console_client(Role.EDITOR)
    answer = _deploy(client, "shop", htmx=True)
    assert answer.status_code == 200
    assert "Deployed shop" in answer.content.decode()
    with schema_context(canary_tenants.a.schema_name):
        assert tenant_drive().exists("shop.gbai/shop.gbdialog/start.bas")
        assert dict(BotConfig.objects.filter(bot__name="shop").values_list("key", "value"))["timezone"] == \
            "America/Sao_Paulo"
        event = AuditEvent.objects.get(action="bot.deploy", object_id="shop")
    assert event.actor.startswith("editor")
    page = html.unescape(client.get("/console/bots/shop/").content.decode())
    assert "line 2, column 5" in page and "expected a value" in page
    assert '"name": "book-visit"' in page and "Who visits" in page  # the tool's schema


def test_the_bot_page_shows_a_refused_version_beside_the_one_still_running(console_client, canary_tenants):
    from apps.bots.services import script_sync

    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="kept")
        path = "kept.gbai/kept.gbdialog/start.bas"
        script_sync(bot=bot, path=path, data=b'TALK "works"\n')
        script_sync(bot=bot, path=path, data=b'IF x THEN\nTALK "never closed"\n')
    page = html.unescape(console_client(Role.VIEWER).get("/console/bots/kept/").content.decode())
    assert "compiled" in page and "The latest file does not compile; the previous version keeps running." in page


def test_deploy_without_confirmation_or_with_a_bad_file_changes_nothing(console_client, canary_tenants,
                                                                        local_storage):
    client = console_client(Role.EDITOR)
    unconfirmed = _deploy(client, "shop", htmx=True, confirmed=False)
    assert unconfirmed.status_code == 400 and "confirm" in unconfirmed.content.decode()
    bad = client.post("/console/bots/deploy/", {"confirmed": "yes", "package": SimpleUploadedFile(
        "x.zip", b"not a zip", content_type="application/zip")}, HTTP_HX_REQUEST="true")
    assert bad.status_code == 400 and "package refused" in bad.content.decode()
    with schema_context(canary_tenants.a.schema_name):
        assert not Bot.objects.filter(name="shop").exists()
        assert not AuditEvent.objects.filter(action="bot.deploy").exists()


def test_plain_form_deploy_redirects_to_the_bot(console_client, local_storage):
    answer = _deploy(console_client(Role.EDITOR), "plain")
    assert answer.status_code == 302 and answer["Location"] == "/console/bots/plain/"


def test_viewer_cannot_deploy_edit_config_or_memory(console_client, canary_tenants, local_storage):
    client = console_client(Role.VIEWER)
    assert _deploy(client, "shop").status_code == 403
    bot = canary_tenants.a.canary
    assert client.post(f"/console/bots/{bot}/config/save/", {"text": "a,b", "confirmed": "yes"}).status_code == 403
    assert client.post(f"/console/bots/{bot}/memory/set/",
                       {"key": "k", "value": '"v"', "confirmed": "yes"}).status_code == 403
    with schema_context(canary_tenants.a.schema_name):
        assert not Bot.objects.filter(name="shop").exists()
        assert not BotMemory.objects.exists() and not BotConfig.objects.filter(bot__name=bot).exists()


def test_config_with_line_errors_is_refused_line_by_line_and_keeps_the_text(console_client, canary_tenants,
                                                                            local_storage):
    client = console_client(Role.EDITOR)
    bot = canary_tenants.a.canary
    text = "name,value\nllm-model,gpt-4o-mini\nthis line has no comma\nllm-model,other\n"
    answer = client.post(f"/console/bots/{bot}/config/save/", {"text": text, "confirmed": "yes"})
    html = answer.content.decode()
    assert answer.status_code == 400
    assert "Line 3" in html and "expected key,value (no comma found)" in html
    assert "Line 4" in html and "duplicate key" in html
    assert "this line has no comma" in html  # the text is kept for fixing
    with schema_context(canary_tenants.a.schema_name):
        assert not BotConfig.objects.filter(bot__name=bot).exists()
        assert not tenant_drive().exists(f"{bot}.gbai/{bot}.gbot/config.csv")
    fragment = client.post(f"/console/bots/{bot}/config/validate/", {"text": text}).content.decode()
    assert 'data-line="3"' in fragment and 'data-line="4"' in fragment


def test_config_save_asks_for_confirmation_then_writes_the_drive_and_syncs(console_client, canary_tenants,
                                                                          local_storage):
    client = console_client(Role.EDITOR)
    bot = canary_tenants.a.canary
    text = "name,value\nllm-model,gpt-4o-mini\n"
    asked = client.post(f"/console/bots/{bot}/config/save/", {"text": text})
    assert asked.status_code == 200 and 'name="confirmed" value="yes"' in asked.content.decode()
    with schema_context(canary_tenants.a.schema_name):
        assert not BotConfig.objects.filter(bot__name=bot).exists()
    saved = client.post(f"/console/bots/{bot}/config/save/", {"text": text, "confirmed": "yes"})
    assert saved.status_code == 302
    with schema_context(canary_tenants.a.schema_name):
        assert tenant_drive().read(f"{bot}.gbai/{bot}.gbot/config.csv") == text.encode()
        assert BotConfig.objects.get(bot__name=bot, key="llm-model").value == "gpt-4o-mini"
        assert AuditEvent.objects.filter(action="bot.config_save", object_id=bot).count() == 1
    assert "gpt-4o-mini" in client.get(f"/console/bots/{bot}/config/").content.decode()


def test_memory_values_are_shown_decrypted_and_edited_as_json(console_client, canary_tenants):
    client = console_client(Role.EDITOR)
    bot = canary_tenants.a.canary
    with schema_context(canary_tenants.a.schema_name):
        BotMemory.objects.create(bot=Bot.objects.get(name=bot), key="greeting", value={"text": "olá"})
    assert "olá" in client.get(f"/console/bots/{bot}/memory/").content.decode()
    bad = client.post(f"/console/bots/{bot}/memory/set/", {"key": "count", "value": "not json", "confirmed": "yes"})
    assert bad.status_code == 400 and "must be JSON" in bad.content.decode()
    assert 'value="count"' in bad.content.decode()  # the form keeps what was typed
    ok = client.post(f"/console/bots/{bot}/memory/set/", {"key": "count", "value": "42", "confirmed": "yes"})
    assert ok.status_code == 302
    with schema_context(canary_tenants.a.schema_name):
        assert BotMemory.objects.get(bot__name=bot, key="count").value == 42
        assert AuditEvent.objects.filter(action="bot.memory_set", object_id=f"{bot}/count").exists()


def test_memory_page_empty_state(console_client, canary_tenants):
    html = console_client(Role.VIEWER).get(f"/console/bots/{canary_tenants.a.canary}/memory/").content.decode()
    assert "No bot memory yet." in html and "SET BOT MEMORY" in html


def test_another_tenants_bot_is_not_found(console_client, canary_tenants):
    client = console_client(Role.ADMIN)
    other = canary_tenants.b.canary
    for path in (f"/console/bots/{other}/", f"/console/bots/{other}/config/", f"/console/bots/{other}/memory/",
                 f"/console/kb/{other}/"):
        assert client.get(path).status_code == 404, path
    assert client.post(f"/console/bots/{other}/memory/set/", {"key": "k", "value": "1", "confirmed": "yes"}
                       ).status_code == 404


def test_viewers_see_the_config_without_its_credentials(console_client, canary_tenants, local_storage):
    bot = canary_tenants.a.canary
    secret, mail_secret = "sk-live-4f9d2c", "hunter2-mail"
    text = (f"name,value\nllm-model,gpt-4o-mini\nllm-key,{secret}\nemail-pass,{mail_secret}\n"
            "embedding-key,vault:gbo/kb/key\n# llm-key is above\n")
    saved = console_client(Role.EDITOR).post(f"/console/bots/{bot}/config/save/", {"text": text, "confirmed": "yes"})
    assert saved.status_code == 302
    key = f"{bot}.gbai/{bot}.gbot/config.csv"
    viewer = console_client(Role.VIEWER)
    page = viewer.get(f"/console/bots/{bot}/config/").content.decode()
    assert secret not in page and mail_secret not in page
    assert "llm-key,******" in page and "gpt-4o-mini" in page and "vault:gbo/kb/key" in page
    download = viewer.get(f"/console/drive/download/?key={key}")
    assert download.status_code == 200 and secret.encode() not in download.content
    assert download.content.decode().splitlines()[2:] == ["llm-key,******", "email-pass,******",
                                                           "embedding-key,vault:gbo/kb/key", "# llm-key is above"]
    editor = console_client(Role.EDITOR)
    assert secret in editor.get(f"/console/bots/{bot}/config/").content.decode()
    assert editor.get(f"/console/drive/download/?key={key}").content == text.encode()
    # A copy that is not the bot's settings (an old package's, a backup) holds the same credentials.
    with schema_context(canary_tenants.a.schema_name):
        for copy in (f"{bot}.gbai/old/{bot}.gbot/config.csv", f"{bot}.gbai/{bot}.gbot/old-config.csv"):
            tenant_drive().write(copy, text.encode())
            download = viewer.get(f"/console/drive/download/?key={copy}")
            assert download.status_code == 200 and b"llm-key,******" in download.content
            assert secret.encode() not in download.content


@pytest.mark.parametrize(("key", "secret"), [("llm-key", True), ("email-pass", True), ("whatsapp_token", True),
                                             ("Stripe-Secret", True), ("llm-model", False), ("keywords", False),
                                             ("rate-limit-by", False), ("circuit-breaker-threshold", False)])
def test_secret_keys_are_recognised_by_their_words(key, secret):
    from apps.bots.config_csv import config_key_is_secret

    assert config_key_is_secret(key) is secret


def test_a_config_save_that_fails_to_apply_is_audited_and_says_so(console_client, canary_tenants, local_storage,
                                                                   monkeypatch):
    from apps.bots import services as bot_services

    def refuse(**kwargs):
        raise bot_services.BotFileError("config.csv: the database refused it")

    monkeypatch.setattr(bot_services, "config_sync", refuse)
    bot = canary_tenants.a.canary
    answer = console_client(Role.EDITOR).post(f"/console/bots/{bot}/config/save/",
                                              {"text": "name,value\nllm-model,x\n", "confirmed": "yes"})
    assert "the database refused it" in answer.content.decode()
    with schema_context(canary_tenants.a.schema_name):
        [event] = AuditEvent.objects.filter(action="bot.config_save", object_id=bot)
        assert '"applied": false' in event.summary


def test_a_config_save_while_the_drive_is_busy_writes_nothing_and_says_so(console_client, canary_tenants,
                                                                          local_storage, monkeypatch):
    """The console wrote config.csv without the drive lock: a deploy running meanwhile (its package, or its
    rollback putting the previous files back) overwrote the save."""
    import threading
    import time

    from django.db import connections

    from apps.core.locks import tenant_lock_try
    from apps.drive import services as drive_services

    bot = canary_tenants.a.canary
    schema = canary_tenants.a.schema_name
    key = f"{bot}.gbai/{bot}.gbot/config.csv"
    monkeypatch.setattr(drive_services, "DEPLOY_SCAN_WAIT_S", 0.3)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with schema_context(schema), tenant_lock_try(drive_services.SCAN_LOCK_NAME) as acquired:
                assert acquired
                held.set()
                release.wait(timeout=30)
        finally:
            held.set()
            connections.close_all()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(timeout=30)
        started = time.monotonic()
        answer = console_client(Role.EDITOR).post(f"/console/bots/{bot}/config/save/",
                                                  {"text": "name,value\nllm-model,x\n", "confirmed": "yes"})
        assert time.monotonic() - started >= 0.3
    finally:
        release.set()
        thread.join()
    assert answer.status_code == 400
    assert ("the drive is busy: another deploy or scan kept running for 0.3 s; nothing was saved, try again"
            in html.unescape(answer.content.decode()))
    with schema_context(schema):
        assert not tenant_drive().exists(key)
        assert not BotConfig.objects.filter(bot__name=bot).exists()
        assert not AuditEvent.objects.filter(action="bot.config_save", object_id=bot).exists()
