"""The meeting page in Chromium: a guest opens an invite link, joins, and the LiveKit JS client reaches the
LiveKit URL with the guest's token, without a single Content-Security-Policy violation.

The server is the production ASGI app in daphne (tests.browser.harness.LiveServer) with LIVEKIT_* pointing
at our LiveKit fake; the fake has no media server, so the client's signalling connection is refused there
after the fake recorded it (the token it carried is what the test checks).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, quote, urlsplit

import jwt
import pytest
from django.test import override_settings
from django_tenants.utils import schema_context

from tests.browser.harness import (
    CHROMIUM_PATH,
    LiveServer,
    chromium_launch_args,
    chromium_missing_reason,
    database_url_for,
)
from tests.support.livekit_fake import FakeLiveKit

pytestmark = pytest.mark.django_db

MEET_HOST = "meet-browser.test.localhost"
# Page load, the token request and the LiveKit client giving up on a refused signalling connection.
UI_TIMEOUT_MS = 30_000
# Collected before the page's own scripts run (init scripts are not subject to the page's CSP).
CSP_WATCH_SCRIPT = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', function (e) {
  window.__cspViolations.push(e.violatedDirective + ' blocked ' + (e.blockedURI || 'inline'));
});
"""


def committed(fn, *args):
    """Run ORM code on its own thread and connection, committed at once, so the server process sees it
    (the test's own connection is inside a transaction that is rolled back)."""

    def run():
        from django.db import connections

        try:
            return fn(*args)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


@pytest.fixture(autouse=True)
def _chromium_required():
    reason = chromium_missing_reason()
    if reason:
        pytest.skip(f"browser test skipped: {reason}")


@pytest.fixture(scope="module")
def meet_livekit():
    fake = FakeLiveKit().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def meet_schema(canary_tenants, django_db_blocker) -> str:
    """A tenant of this module's own, committed so the server process sees it."""
    from apps.tenants.services import tenant_create

    with django_db_blocker.unblock():
        tenant, _password = tenant_create(name="Meet browser", domain=MEET_HOST)
    return tenant.schema_name


@pytest.fixture(scope="module")
def meet_server(meet_schema, meet_livekit, tmp_path_factory):
    from django.conf import settings
    from django.db import connection

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "gbplatform.settings.test",
        "DATABASE_URL": database_url_for(os.environ["DATABASE_URL"], connection.settings_dict["NAME"]),
        "MEDIA_ROOT": str(tmp_path_factory.mktemp("meet-drive")),
        "S3_ACCESS_KEY": "",
        "QDRANT_URL": "",
        "LIVEKIT_URL": meet_livekit.url,
        "LIVEKIT_PUBLIC_URL": "",
        "LIVEKIT_API_KEY": meet_livekit.api_key,
        "LIVEKIT_API_SECRET": meet_livekit.api_secret,
    }
    log_path = settings.VAR_DIR / "test-artifacts" / "meet" / "server.log"
    server = LiveServer(env=env, log_path=log_path).start()
    yield server
    server.stop()


def test_a_guest_joins_from_an_invite_and_the_client_reaches_livekit_within_the_csp(
    meet_server, meet_livekit, meet_schema, django_db_blocker
):
    from playwright.sync_api import sync_playwright

    from apps.meet.services import invite_create, room_create

    lk_settings = {"LIVEKIT_URL": meet_livekit.url, "LIVEKIT_API_KEY": meet_livekit.api_key,
                   "LIVEKIT_API_SECRET": meet_livekit.api_secret}

    def make_room() -> str:
        with override_settings(**lk_settings), schema_context(meet_schema):
            return invite_create(room=room_create(name="browser-room", title="Browser room"))

    with django_db_blocker.unblock():
        invite = committed(make_room)
    page_url = meet_server.url(MEET_HOST, f"/meet/browser-room/?invite={quote(invite)}")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM_PATH), headless=True, args=chromium_launch_args()
        )
        try:
            context = browser.new_context()
            context.set_default_timeout(UI_TIMEOUT_MS)
            page = context.new_page()
            page.add_init_script(CSP_WATCH_SCRIPT)
            csp_console = []
            page.on("console", lambda m: "Content Security Policy" in m.text and csp_console.append(m.text))
            response = page.goto(page_url)
            assert response.status == 200
            assert page.evaluate("typeof LivekitClient") == "object"
            page.fill("#meet-name", "Browser Guest")
            page.click("#meet-join button[type=submit]")
            # a function, not an expression string: the page's CSP forbids eval, which strings would need
            page.wait_for_function(
                "() => { const s = document.getElementById('meet-status').textContent;"
                " return s && !s.startsWith('Joining'); }"
            )
            status = page.text_content("#meet-status")
            violations = page.evaluate("window.__cspViolations")
        finally:
            browser.close()

    assert violations == [] and csp_console == []
    signalling = [path for path in meet_livekit.browser_requests if path.startswith("/rtc")]
    assert signalling, f"the LiveKit client never reached LiveKit; page said {status!r}"
    token = parse_qs(urlsplit(signalling[0]).query)["access_token"][0]
    claims = jwt.decode(token, meet_livekit.api_secret, algorithms=["HS256"], issuer=meet_livekit.api_key)
    assert claims["name"] == "Browser Guest" and claims["sub"].startswith("guest-")
    assert claims["video"]["room"] == f"{meet_schema}--browser-room"
    assert claims["video"]["canPublish"] is True and claims["video"]["roomAdmin"] is False
    assert not status.startswith("In the meeting")  # no media server: the page reports the failure
