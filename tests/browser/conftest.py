"""Fixtures of the browser tests: a tenant of their own, bots deployed into it, the fake LLM, a live
daphne server and Chromium pages that record every console error, CSP violation and dialog.

Everything the server process must see is committed (not inside a test transaction): the tenant, the
bots and the sessions. The browser tenant is separate from the canary tenants so other tests' counts of
bots or sessions never see these.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio

from tests.browser.harness import (
    CHROMIUM_PATH,
    FramingSite,
    LiveServer,
    chromium_launch_args,
    chromium_missing_reason,
    database_url_for,
    write_package,
)

T = TypeVar("T")

BROWSER_HOST = "browser.test.localhost"
# Longest a UI step may take before a test fails (page load, a reply through the fake LLM).
UI_TIMEOUT_MS = 15_000


def pytest_collection_modifyitems(config, items):
    """Without Chromium every browser test is skipped with the reason, before any server is started."""
    reason = chromium_missing_reason()
    if not reason:
        return
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.skip(reason=f"browser tests skipped: {reason}"))


def orm_call(fn: Callable[..., T], *args: object) -> T:
    """Run ORM code on a short-lived thread (its connection closed when it ends), committed at once so the
    server process sees it. Works from sync fixtures and, through `asyncio.to_thread(orm_call, ...)`, from
    async tests, whose event loop thread Django refuses synchronous database calls on."""

    def run() -> T:
        from django.db import connections

        try:
            return fn(*args)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def artifacts_dir() -> Path:
    from django.conf import settings

    path = Path(settings.VAR_DIR) / "test-artifacts" / "browser"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class BrowserTenant:
    schema_name: str
    host: str


@pytest.fixture(scope="session")
def browser_tenant(canary_tenants, django_db_blocker) -> BrowserTenant:
    from apps.tenants.services import tenant_create

    with django_db_blocker.unblock():
        tenant, _password = tenant_create(name="Browser tests", domain=BROWSER_HOST)
    return BrowserTenant(tenant.schema_name, BROWSER_HOST)


@pytest.fixture(scope="session")
def browser_drive(tmp_path_factory) -> Path:
    """The local drive both this process (deploys) and the server process (runtime files) use."""
    return tmp_path_factory.mktemp("browser-drive")


@pytest.fixture(scope="session")
def fake_llm():
    from tests.support.llm_fake import FakeLLMServer

    server = FakeLLMServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def framing_site():
    """Another site (its own origin) whose page frames a chat URL, for the embed tests."""
    site = FramingSite()
    yield site
    site.stop()


@pytest.fixture(scope="session")
def chat_server(browser_tenant, browser_drive, fake_llm, django_db_blocker):
    from django.db import connection

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "gbplatform.settings.test",
        "DATABASE_URL": database_url_for(os.environ["DATABASE_URL"], connection.settings_dict["NAME"]),
        "MEDIA_ROOT": str(browser_drive),
        # Local drive, no outside vector store; the platform's default LLM is the fake (bots may not name a
        # loopback LLM themselves: their llm-url is held to public hosts).
        "S3_ACCESS_KEY": "",
        "QDRANT_URL": "",
        "LLM_PROVIDER": "openai",
        "LLM_URL": fake_llm.base_url,
        "LLM_MODEL": "fake-model",
        "LLM_API_KEY": "test-key",
    }
    log_path = artifacts_dir() / "server.log"
    log_path.unlink(missing_ok=True)  # one log per run; restarts within the run append to it
    server = LiveServer(env=env, log_path=log_path).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def deploy_bot(browser_tenant, browser_drive, tmp_path_factory, django_db_blocker):
    """deploy_bot(name, {path: text}) -> name: a bot package deployed into the browser tenant (committed)."""
    from django.test import override_settings
    from django_tenants.utils import schema_context

    from apps.bots.services import bot_deploy
    from apps.drive.package import package_read_dir

    packages = tmp_path_factory.mktemp("browser-packages")

    def deploy_in_schema(folder: Path):
        with (override_settings(MEDIA_ROOT=browser_drive, S3_ACCESS_KEY="", QDRANT_URL=""),
              schema_context(browser_tenant.schema_name)):
            return bot_deploy(package=package_read_dir(folder))

    def deploy(name: str, files: dict[str, str]) -> str:
        folder = write_package(packages, name, files)
        with django_db_blocker.unblock():
            report = orm_call(deploy_in_schema, folder)
        assert not report.errors, report.errors
        return name

    return deploy


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def chromium():
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM_PATH), headless=True, args=chromium_launch_args()
        )
        yield browser
        await browser.close()


# Collected in the page before any of its own scripts run (Playwright init scripts are not subject to
# the page's CSP): every Content-Security-Policy violation the browser reports.
CSP_WATCH_SCRIPT = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', function (e) {
  window.__cspViolations.push(e.violatedDirective + ' blocked ' + (e.blockedURI || 'inline') + ' ' + (e.sample || ''));
});
"""


@dataclass
class WatchedPage:
    """A page plus what it reported: console errors, uncaught exceptions, dialogs (alert/confirm/...)."""

    page: Any
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    async def csp_violations(self) -> list[str]:
        found = list(await self.page.evaluate("window.__cspViolations || []"))
        found += [text for text in self.console_errors if "Content Security Policy" in text]
        return found

    async def assert_clean(self) -> None:
        assert self.dialogs == [], f"dialogs fired: {self.dialogs}"
        assert self.page_errors == [], f"JavaScript errors: {self.page_errors}"
        assert await self.csp_violations() == [], f"CSP violations: {await self.csp_violations()}"
        assert self.console_errors == [], f"console errors: {self.console_errors}"

    async def screenshot(self, name: str) -> Path:
        path = artifacts_dir() / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest_asyncio.fixture(loop_scope="session")
async def watched_page(chromium, request):
    context = await chromium.new_context()
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = await context.new_page()
    await page.add_init_script(CSP_WATCH_SCRIPT)
    watched = WatchedPage(page)
    page.on("console", lambda message: message.type == "error" and watched.console_errors.append(
        f"{message.text} ({message.location.get('url', '')})"))
    page.on("pageerror", lambda error: watched.page_errors.append(str(error)))

    async def on_dialog(dialog) -> None:
        watched.dialogs.append(f"{dialog.type}: {dialog.message}")
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    yield watched
    try:
        await watched.screenshot(re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name))
    finally:
        await context.close()
    # A dialog is script execution: fail the test even if it did not look.
    assert watched.dialogs == [], f"dialogs fired: {watched.dialogs}"
