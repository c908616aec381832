"""The tenant console in Chromium against a live daphne: sign-in with the local password form, a deploy
whose upload shows progress, KB indexing progress reaching 100% (a real Celery worker indexes with the
offline embeddings model), and the console rendered in Brazilian Portuguese. Screenshots go to
var/test-artifacts/browser/console-*.png; every page is checked for CSP violations and script errors.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import zipfile

import pytest

from tests.browser.conftest import orm_call
from tests.browser.harness import REPO_ROOT

pytestmark = [pytest.mark.django_db, pytest.mark.asyncio(loop_scope="session")]

USERNAME = "console-admin"
PASSWORD = "console-browser-pass-4711"  # noqa: S105
BOT = "console-demo"
# Random bytes compress badly, so the upload is big enough (~1.5 MB) for several progress events.
FILLER_BYTES = 1_500_000
DOCUMENTS = 3
# The indexer (a Celery worker process) loads the embeddings model and indexes a few short documents.
INDEXING_TIMEOUT_MS = 90_000


def _package_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        root = f"{BOT}.gbai/"
        archive.writestr(root + f"{BOT}.gbot/config.csv", "name,value\nllm-cache,false\n")
        archive.writestr(root + f"{BOT}.gbdialog/start.bas", 'TALK "Welcome to the demo"\n')
        archive.writestr(root + f"{BOT}.gbdialog/broken.bas", 'TALK "hi"\nx = = 2\n')
        for i in range(DOCUMENTS):
            archive.writestr(root + f"{BOT}.gbkb/manual/topic-{i}.txt",
                             f"Topic {i}. Returns are accepted within {30 + i} days with the receipt. " * 40)
        archive.writestr(root + "assets/filler.bin", os.urandom(FILLER_BYTES))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def console_admin(browser_tenant, django_db_blocker):
    def create() -> None:
        from django.contrib.auth import get_user_model
        from django_tenants.utils import schema_context

        from apps.accounts.models import ConsoleProfile

        with schema_context(browser_tenant.schema_name):
            user, _ = get_user_model().objects.get_or_create(username=USERNAME)
            user.set_password(PASSWORD)
            user.save()
            ConsoleProfile.objects.update_or_create(user=user, defaults={"role": "admin"})

    with django_db_blocker.unblock():
        orm_call(create)
    return USERNAME


@pytest.fixture(scope="module")
def index_worker(chat_server):
    """A Celery worker on the `index` queue, against the live server's database and drive."""
    process = subprocess.Popen(  # noqa: S603 (our own interpreter and project)
        [sys.executable, "-m", "celery", "-A", "gbplatform", "worker", "-Q", "index", "-c", "1", "--loglevel",
         "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=REPO_ROOT, env=chat_server.env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    yield process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def package_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("console-package") / f"{BOT}.zip"
    path.write_bytes(_package_zip())
    return path


async def sign_in(watched, server, host: str) -> None:
    page = watched.page
    await page.goto(server.url(host, "/console/"))
    assert "/accounts/login/" in page.url
    await page.fill("#id_username", USERNAME)
    await page.fill("#id_password", PASSWORD)
    await page.click("form button[type=submit]")
    await page.wait_for_url(server.url(host, "/console/"))
    # The sign-in page (templates/base.html, owned by apps.accounts) names no icon, so Chromium asks for
    # /favicon.ico there and logs its 404; console pages link their own icon and are checked in full.
    watched.console_errors[:] = [e for e in watched.console_errors if "/favicon.ico" not in e]


async def test_sign_in_deploy_with_progress_and_indexing_to_100_percent(
        watched_page, chat_server, browser_tenant, console_admin, index_worker, package_file):
    page = watched_page.page
    await sign_in(watched_page, chat_server, browser_tenant.host)
    assert await page.text_content("h1") == "Console"
    await watched_page.screenshot("console-home")

    await page.goto(chat_server.url(browser_tenant.host, "/console/bots/"))
    # Record every upload progress event the page's script sees (htmx:xhr:progress).
    await page.evaluate("""() => { window.__uploadPercents = [];
        document.addEventListener('htmx:xhr:progress', e => { if (e.detail.lengthComputable)
            window.__uploadPercents.push(Math.round(100 * e.detail.loaded / e.detail.total)); }); }""")
    await page.set_input_files("#deploy-form input[name=package]", str(package_file))
    await page.check("#deploy-form input[name=confirmed]")
    await page.click("#deploy-form button[type=submit]")
    await page.wait_for_selector("#deploy-result .deploy-done", timeout=60_000)
    percents = await page.evaluate("window.__uploadPercents")
    assert percents and percents[-1] == 100, percents
    assert await page.get_attribute("#deploy-progress", "data-percent") == "100"
    assert await page.evaluate("document.getElementById('deploy-progress').value") == 100
    result = await page.text_content("#deploy-result")
    assert f"Deployed {BOT}" in result
    await watched_page.screenshot("console-deployed")

    await page.goto(chat_server.url(browser_tenant.host, f"/console/bots/{BOT}/"))
    assert "line 2, column 5" in await page.text_content(".scripts")

    await page.goto(chat_server.url(browser_tenant.host, f"/console/kb/{BOT}/"))
    await page.wait_for_selector("#kb-progress[data-done='true']", timeout=INDEXING_TIMEOUT_MS)
    assert await page.get_attribute("#kb-progress", "data-percent") == "100"
    assert await page.evaluate("document.getElementById('kb-progress-bar').value") == 100
    statuses = await page.eval_on_selector_all("table.documents tr.document .status",
                                               "els => els.map(e => e.textContent.trim())")
    assert statuses == ["indexed"] * DOCUMENTS
    overview = await page.eval_on_selector_all("#kb-overview td.num", "els => els.map(e => e.textContent.trim())")
    assert overview == [str(DOCUMENTS), str(DOCUMENTS), "0", "0"]  # documents, indexed, pending, failed
    await watched_page.screenshot("console-indexed")
    await watched_page.assert_clean()


async def test_console_renders_in_portuguese(watched_page, chat_server, browser_tenant, console_admin):
    page = watched_page.page
    await sign_in(watched_page, chat_server, browser_tenant.host)
    await page.select_option("#console-language-select", "pt-br")
    await page.click(".console-language button[type=submit]")
    await page.wait_for_selector("html[lang='pt-br']")
    nav = await page.text_content(".console-nav")
    for label in ("Conhecimento", "Agendamentos", "Reuniões", "Conformidade", "Chaves de API", "Usuários e papéis"):
        assert label in nav
    await page.goto(chat_server.url(browser_tenant.host, "/console/meetings/"))
    assert await page.text_content("h1") == "Reuniões"
    assert "Nova sala" in await page.text_content("main")
    await watched_page.screenshot("console-pt-br")
    await watched_page.assert_clean()


async def test_confirmation_dialog_guards_a_change(watched_page, chat_server, browser_tenant, console_admin):
    """A change asks in the page's <dialog> (no window.confirm); cancelling sends nothing."""
    page = watched_page.page
    await sign_in(watched_page, chat_server, browser_tenant.host)
    await page.goto(chat_server.url(browser_tenant.host, "/console/meetings/"))
    await page.fill("input[name=name]", "browser-room")
    await page.click("form[action='/console/meetings/create/'] button[type=submit]")
    await page.wait_for_selector("#console-confirm[open]")
    await page.click("#console-confirm button[value=cancel]")
    assert "browser-room" not in await page.text_content("main")
    await page.click("form[action='/console/meetings/create/'] button[type=submit]")
    await page.click("#console-confirm button[value=confirm]")
    await page.wait_for_selector("table.rooms")
    assert "browser-room" in await page.text_content("table.rooms")

    def audited() -> int:
        from django_tenants.utils import schema_context

        from apps.compliance.models import AuditEvent

        with schema_context(browser_tenant.schema_name):
            return AuditEvent.objects.filter(action="meet.room.create", object_id="browser-room").count()

    assert await asyncio.to_thread(orm_call, audited) == 1
    await watched_page.assert_clean()


async def test_config_editor_shows_line_errors_while_typing(watched_page, chat_server, browser_tenant, console_admin,
                                                            deploy_bot):
    bot = deploy_bot("console-config", {"console-config.gbot/config.csv": "name,value\nllm-cache,false\n",
                                        "console-config.gbdialog/start.bas": 'TALK "hi"\n'})
    page = watched_page.page
    await sign_in(watched_page, chat_server, browser_tenant.host)
    await page.goto(chat_server.url(browser_tenant.host, f"/console/bots/{bot}/config/"))
    assert "llm-cache,false" in await page.input_value("#config-text")
    await page.fill("#config-text", "name,value\nllm-cache,false\nthis line has no comma\n")
    await page.wait_for_selector("#config-issues li[data-line='3']")
    assert "expected key,value" in await page.text_content("#config-issues")
    await watched_page.screenshot("console-config-errors")
    await watched_page.assert_clean()
