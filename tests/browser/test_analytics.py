"""The console's transcript and analytics pages in Chromium against a live daphne: a tool call visible in a
transcript, and charts drawn by Chart.js with the data of the JSON endpoint, with no CSP violation.

The conversation is written into the browser tenant directly (committed, so the server process sees it)
and aggregated with daily_stats_recompute; the admin signs in through the local password form.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest

from tests.browser.conftest import artifacts_dir, orm_call

pytestmark = [pytest.mark.django_db, pytest.mark.asyncio(loop_scope="session")]

ADMIN = "analytics-admin"
PASSWORD = "analytics-browser-9f8e7d"  # noqa: S105


def _seed(schema: str) -> dict:
    from django.contrib.auth import get_user_model
    from django_tenants.utils import schema_context

    from apps.analytics.services import analytics_today, daily_stats_recompute
    from apps.bots.models import Bot
    from apps.sessions.models import ChatSession, ChatUser, Message, MessageType, Role

    today = analytics_today()
    with schema_context(schema):
        if not get_user_model().objects.filter(username=ADMIN).exists():
            get_user_model().objects.create_user(username=ADMIN, password=PASSWORD, is_staff=True)
        bot, _ = Bot.objects.get_or_create(name="analytics-shop")
        user = ChatUser.objects.create(username="shopper")
        session = ChatSession.objects.create(bot=bot, user=user, channel="web", title="Price of a fax")
        start = datetime(today.year, today.month, today.day, tzinfo=UTC) - timedelta(days=2)
        turns = [
            (Role.USER, MessageType.USER, "How much is the fax?", {}, 0, "", None),
            (Role.ASSISTANT, MessageType.BOT_RESPONSE, "The fax costs **42**.", {
                "citations": [{"n": 1, "source": "catalog/prices.md", "kb": "products", "page": 3, "score": 0.031}],
                "cached": False, "provider": "fake", "prompt_tokens": 120, "completion_tokens": 12,
                "tool_calls": [{"name": "get-price", "arguments": {"product": "fax"}, "result": "42",
                                "error": None}]}, 132, "fake-model", 850),
            (Role.USER, MessageType.USER, "And the printer?", {}, 0, "", None),
            (Role.ASSISTANT, MessageType.BOT_RESPONSE, "I found nothing about that.",
             {"citations": [], "offline": True}, 0, "", None),
        ]
        for index, (role, kind, content, meta, tokens, model, latency) in enumerate(turns):
            message = Message.objects.create(session=session, index=index, role=role, message_type=kind,
                                             content=content, meta=meta, tokens=tokens, model=model, latency_ms=latency)
            Message.objects.filter(pk=message.pk).update(created_at=start + timedelta(hours=index))
        ChatSession.objects.filter(pk=session.pk).update(created_at=start, last_activity=start + timedelta(hours=3),
                                                          message_count=len(turns), total_tokens=132)
        daily_stats_recompute(day_from=today - timedelta(days=29), day_to=today)
        from apps.analytics.models import DailyStat

        messages = sum(DailyStat.objects.values_list("messages", flat=True))
    return {"session": str(session.pk), "messages": messages}


@pytest.fixture(scope="module")
def seeded(browser_tenant, django_db_blocker):
    with django_db_blocker.unblock():
        return orm_call(_seed, browser_tenant.schema_name)


async def _sign_in(page, server, host: str, next_path: str) -> None:
    await page.goto(server.url(host, f"/accounts/login/?next={quote(next_path)}"))
    await page.fill("input[name=username]", ADMIN)
    await page.fill("input[name=password]", PASSWORD)
    async with page.expect_navigation():
        await page.click("form button[type=submit] >> text=Sign in")


async def _assert_clean(watched) -> None:
    """The page's own errors: the sign-in page (templates/base.html, not ours) links no icon, so Chromium's
    request for /favicon.ico answers 404 there; that one line is left out."""
    watched.console_errors[:] = [e for e in watched.console_errors if "/favicon.ico" not in e]
    await watched.assert_clean()


async def test_transcript_shows_the_tool_call_with_arguments_result_and_citation(
        watched_page, chat_server, browser_tenant, seeded):
    page = watched_page.page
    await _sign_in(page, chat_server, browser_tenant.host, "/console/conversations/?tools=1&bot=analytics-shop")
    link = page.locator("table.conversations a", has_text="Price of a fax")
    assert await link.count() == 1  # the filtered list finds the session with a tool call
    assert await page.locator("select[name=bot]").input_value() == "analytics-shop"
    await page.screenshot(path=str(artifacts_dir() / "analytics-conversations-list.png"), full_page=True)
    async with page.expect_navigation():
        await link.click()
    assert f"/console/conversations/{seeded['session']}/" in page.url
    call = page.locator(".tool-call").first
    await call.wait_for(state="visible")
    assert await call.locator(".tool-name").inner_text() == "get-price"
    assert '"product": "fax"' in await call.locator(".tool-arguments").inner_text()
    assert await call.locator(".tool-result").inner_text() == "42"
    assert "catalog/prices.md" in await page.locator(".citation").first.inner_text()
    assert await page.locator(".marker-offline").count() == 1
    assert await page.locator(".turn-assistant strong", has_text="42").count() == 1
    await page.screenshot(path=str(artifacts_dir() / "analytics-transcript-tool-call.png"), full_page=True)
    await _assert_clean(watched_page)


async def test_analytics_page_draws_charts_with_the_data(watched_page, chat_server, browser_tenant, seeded):
    page = watched_page.page
    await _sign_in(page, chat_server, browser_tenant.host, "/console/analytics/")
    await page.wait_for_selector("#analytics-charts[data-drawn=true]")
    drawn = await page.evaluate("""() => {
        const chart = Chart.getChart(document.getElementById('chart-activity'));
        const tokens = Chart.getChart(document.getElementById('chart-tokens'));
        const tools = Chart.getChart(document.getElementById('chart-tools'));
        const sum = (values) => values.reduce((a, b) => a + (b || 0), 0);
        return {messages: sum(chart.data.datasets[0].data), points: chart.data.datasets[0].data.length,
                tokenBots: tokens.data.labels, tools: tools.data.labels, toolCalls: sum(tools.data.datasets[0].data),
                width: chart.width, height: chart.height};
    }""")
    assert drawn["messages"] == seeded["messages"] > 0
    assert drawn["points"] == 30  # one point per day of the default range
    assert "analytics-shop" in drawn["tokenBots"] and "get-price" in drawn["tools"] and drawn["toolCalls"] >= 1
    assert drawn["width"] > 0 and drawn["height"] > 0
    assert await page.locator("#unanswered-questions", has_text="and the printer").count() == 1
    await asyncio.sleep(0.2)  # let the canvases paint before the screenshot
    await page.screenshot(path=str(artifacts_dir() / "analytics-charts.png"), full_page=True)
    await _assert_clean(watched_page)
