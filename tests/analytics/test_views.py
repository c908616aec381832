"""The console's conversations and analytics pages: filters, keyset pages, the transcript, exports, roles,
bad input, and tenant isolation (another tenant's session is not found)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django_tenants.utils import schema_context

from apps.accounts.roles import Role
from apps.analytics.selectors import ConversationFilters, conversation_list
from apps.analytics.services import daily_stats_recompute
from apps.bots.models import BotConfig
from apps.compliance.models import AuditEvent
from apps.sessions.models import ChatSession, ChatUser
from tests.analytics.conftest import DAY1, DAY2, USER, at, session_make
from tests.console.conftest import signed_in, user_with_role

pytestmark = pytest.mark.django_db


@pytest.fixture
def client_as(canary_tenants):
    made = iter(range(1_000))

    def make(role: Role | None, tenant=None):
        tenant = tenant or canary_tenants.a
        return signed_in(tenant, user_with_role(tenant, f"user-{role.value if role else 'none'}-{next(made)}", role))
    return make


def _session_ids(response) -> list[str]:
    return [str(session.pk) for session in response.context["page"].sessions]


def test_list_shows_the_tenants_sessions_most_recent_first(client_as, dataset):
    response = client_as(Role.VIEWER).get("/console/conversations/")
    assert response.status_code == 200
    assert _session_ids(response) == [str(dataset.day2.pk), str(dataset.whatsapp.pk), str(dataset.web.pk)]
    page = response.content.decode()
    assert "Fax prices" in page and dataset.b_session_id not in page


@pytest.mark.parametrize(("query", "expected"), [
    ({"bot": "helpdesk"}, ["day2"]),
    ({"channel": "whatsapp"}, ["whatsapp"]),
    ({"tools": "1"}, ["day2", "web"]),
    ({"unanswered": "1"}, ["whatsapp"]),
    ({"q": "PRICE OF"}, ["web"]),
    ({"q": "100%"}, []),  # % is a character to find, not a wildcard
    ({"date_from": DAY2.isoformat()}, ["day2"]),
    ({"date_to": DAY1.isoformat()}, ["whatsapp", "web"]),
    ({"date_from": DAY1.isoformat(), "date_to": DAY1.isoformat(), "q": "hours"}, ["whatsapp"]),
])
def test_filters_narrow_the_list(client_as, dataset, query, expected):
    response = client_as(Role.VIEWER).get("/console/conversations/", query)
    assert response.status_code == 200
    assert _session_ids(response) == [str(getattr(dataset, name).pk) for name in expected]


@pytest.mark.parametrize(("query", "message"), [
    ({"bot": "nope"}, "No bot named nope"),
    ({"date_from": "2026-13-01"}, "Enter a valid date"),
    ({"date_from": DAY2.isoformat(), "date_to": DAY1.isoformat()}, "end date is before the start date"),
    ({"q": "x"}, "at least 2 characters"),
    ({"cursor": "garbage!"}, "not valid any more"),
])
def test_bad_filters_are_explained(client_as, dataset, query, message):
    response = client_as(Role.VIEWER).get("/console/conversations/", query)
    assert response.status_code == 400
    assert message in response.content.decode()


def test_keyset_pages_cover_every_session_once(canary_tenants, dataset):
    with schema_context(canary_tenants.a.schema_name):
        user = ChatUser.objects.create(username="many")
        for n in range(5):
            session_make(dataset.bot, user, channel="web", started=at(DAY1, 12, n),
                         turns=[{"kind": USER, "content": "x"}])
        # Two sessions with the same last activity: the id breaks the tie, neither is skipped.
        ChatSession.objects.filter(user=user).update(last_activity=at(DAY1, 13))
        seen, cursor, pages = [], "", 0
        while True:
            page = conversation_list(filters=ConversationFilters(), cursor=cursor, limit=3)
            seen += [s.pk for s in page.sessions]
            pages += 1
            cursor = page.next_cursor
            if not cursor:
                break
        assert pages == 3
        assert sorted(seen) == sorted(ChatSession.objects.values_list("pk", flat=True)) and len(seen) == 8


def test_list_page_links_to_the_next_page(client_as, canary_tenants, dataset):
    with schema_context(canary_tenants.a.schema_name):
        user = ChatUser.objects.create(username="many")
        for n in range(50):
            session_make(dataset.bot, user, channel="web", started=at(DAY1, 14, n),
                         turns=[{"kind": USER, "content": "y"}])
    client = client_as(Role.VIEWER)
    first = client.get("/console/conversations/", {"channel": "web"})
    cursor = first.context["page"].next_cursor
    assert cursor and f"cursor={cursor}" in first.content.decode()
    second = client.get("/console/conversations/", {"channel": "web", "cursor": cursor})
    assert len(first.context["page"].sessions) == 50 and len(second.context["page"].sessions) == 2
    assert not second.context["page"].next_cursor and 'rel="first"' in second.content.decode()


def test_transcript_shows_tool_calls_citations_and_markers_with_text_escaped(client_as, dataset):
    page = client_as(Role.VIEWER).get(f"/console/conversations/{dataset.web.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert '<code class="tool-name">get-price</code>' in html
    assert '&quot;product&quot;: &quot;fax&quot;' in html  # the arguments, as JSON
    assert '<pre class="tool-result">42</pre>' in html
    assert "prices.md · products · page 2" in html
    assert "marker-cached" in html and "m-large" in html and "900 ms" in html
    assert "<strong>42</strong>" in html  # bot Markdown rendered
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    offline = client_as(Role.VIEWER).get(f"/console/conversations/{dataset.whatsapp.pk}/").content.decode()
    assert "marker-offline" in offline and offline.count("marker-unanswered") == 2


def test_another_tenants_session_is_not_found(client_as, dataset):
    assert client_as(Role.VIEWER).get(f"/console/conversations/{dataset.b_session_id}/").status_code == 404
    assert client_as(Role.EDITOR).get(f"/console/conversations/{dataset.b_session_id}/export.json").status_code == 404


def test_transcript_exports_are_complete_and_audited(client_as, canary_tenants, dataset):
    client = client_as(Role.EDITOR)
    response = client.get(f"/console/conversations/{dataset.web.pk}/export.json")
    assert response.status_code == 200 and "attachment" in response["Content-Disposition"]
    data = json.loads(b"".join(response.streaming_content))
    assert data["session"]["title"] == "Fax prices" and [m["index"] for m in data["messages"]] == [0, 1, 2, 3]
    assert data["messages"][1]["tool_calls"][0]["name"] == "get-price"
    assert data["messages"][3]["citations"][0]["source"] == "prices.md" and data["messages"][3]["cached"] is True
    response = client.get(f"/console/conversations/{dataset.web.pk}/export.csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [r["role"] for r in rows] == ["user", "assistant", "user", "assistant"]
    assert json.loads(rows[1]["tool_calls"])[0]["result"] == "42"
    assert rows[0]["content"] == "What is the PRICE of fax?  "
    with schema_context(canary_tenants.a.schema_name):
        events = list(AuditEvent.objects.filter(action="conversation.export").order_by("id")
                      .values_list("object_id", "summary"))
    assert [e[0] for e in events] == [str(dataset.web.pk)] * 2 and '"format": "csv"' in events[1][1]


def test_list_export_streams_the_filtered_sessions_and_neutralises_formulas(client_as, canary_tenants, dataset):
    with schema_context(canary_tenants.a.schema_name):
        ChatSession.objects.filter(pk=dataset.whatsapp.pk).update(title="=HYPERLINK(\"http://x\")")
    response = client_as(Role.EDITOR).get("/console/conversations/export.csv", {"bot": canary_tenants.a.canary})
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [r["session"] for r in rows] == [str(dataset.whatsapp.pk), str(dataset.web.pk)]
    assert rows[0]["title"].startswith("'=")
    with schema_context(canary_tenants.a.schema_name):
        assert AuditEvent.objects.filter(action="conversation.list_export").count() == 1


def test_roles_viewers_read_editors_export_others_are_refused(client_as, dataset):
    viewer = client_as(Role.VIEWER)
    for path in ("/console/conversations/", f"/console/conversations/{dataset.web.pk}/", "/console/analytics/",
                 "/console/analytics/data.json"):
        assert viewer.get(path).status_code == 200, path
    for path in (f"/console/conversations/{dataset.web.pk}/export.json", "/console/conversations/export.csv"):
        assert viewer.get(path).status_code == 403, path
    assert "Export CSV" not in viewer.get("/console/conversations/").content.decode()
    nobody = client_as(None)
    assert nobody.get("/console/conversations/").status_code == 403
    assert nobody.get("/console/analytics/data.json").status_code == 403


def test_analytics_page_and_data_show_the_aggregates(client_as, canary_tenants, dataset):
    with schema_context(canary_tenants.a.schema_name):
        daily_stats_recompute(day_from=DAY1, day_to=DAY2)
        BotConfig.objects.create(bot=dataset.bot, key="llm-price-prompt", value="2", line=90)
        BotConfig.objects.create(bot=dataset.bot, key="llm-price-completion", value="10", line=91)
    client = client_as(Role.VIEWER)
    query = {"date_from": DAY1.isoformat(), "date_to": DAY2.isoformat()}
    data = client.get("/console/analytics/data.json", query).json()
    summary = data["summary"]
    counts = (summary["messages"], summary["unanswered"], summary["llm_answers"], summary["cached_answers"])
    assert counts == (11, 2, 4, 1)
    assert summary["cache_hit_rate"] == 0.25 and summary["distinct_users"] == 2
    assert data["series"]["days"] == [DAY1.isoformat(), DAY2.isoformat()] and data["series"]["messages"] == [8, 3]
    bots = {b["bot"]: b for b in data["bots"]}
    # canary bot: (100+50) prompt x $2 + (20+10) completion x $10 per million; helpdesk has no price.
    assert bots[canary_tenants.a.canary]["cost"] == pytest.approx((150 * 2 + 30 * 10) / 1e6)
    assert bots["helpdesk"]["unpriced_tokens"] == 15 and summary["unpriced_tokens"] == 15
    assert data["tools"] == [{"tool": "get-price", "calls": 2, "errors": 1},
                             {"tool": "lookup", "calls": 1, "errors": 0}]
    assert data["unanswered_questions"] == [{"text": "opening hours", "asked": 2, "unanswered": 2}]
    assert data["top_questions"][0]["asked"] == 2
    html = client.get("/console/analytics/", query).content.decode()
    assert 'id="chart-activity"' in html and 'data-src="/console/analytics/data.json?' in html
    assert "opening hours" in html and "vendor/chart.umd.min.js" in html
    only = client.get("/console/analytics/data.json", {**query, "bot": "helpdesk"}).json()
    assert only["summary"]["messages"] == 3


@pytest.mark.parametrize(("query", "message"), [
    ({"date_from": "2026-11-11", "date_to": "2026-11-01"}, "end date is before"),
    ({"date_from": "2024-01-01", "date_to": "2026-01-01"}, "at most 366 days"),
    ({"bot": "ghost"}, "No bot named ghost"),
    # The ends of the calendar: a day is widened to the next midnight, the default range reaches 29 days back.
    ({"date_to": "9999-12-31"}, "Choose a date between"),
    ({"date_to": "0001-01-05"}, "Choose a date between"),
])
def test_analytics_bad_range_is_explained(client_as, dataset, query, message):
    client = client_as(Role.VIEWER)
    assert message in client.get("/console/analytics/data.json", query).json()["error"]
    page = client.get("/console/analytics/", query)
    assert page.status_code == 400 and message in page.content.decode()


def test_analytics_of_tenant_b_do_not_see_tenant_a(client_as, canary_tenants, dataset):
    with schema_context(canary_tenants.a.schema_name):
        daily_stats_recompute(day_from=DAY1, day_to=DAY2)
    data = client_as(Role.VIEWER, canary_tenants.b).get(
        "/console/analytics/data.json", {"date_from": DAY1.isoformat(), "date_to": DAY2.isoformat()}).json()
    assert data["summary"]["messages"] == 0 and data["bots"] == []


def test_transcript_pages_continue_from_a_message_number(client_as, canary_tenants, dataset):
    from apps.analytics.selectors import transcript_get

    with schema_context(canary_tenants.a.schema_name):
        first = transcript_get(session_id=dataset.web.pk, limit=3)
        rest = transcript_get(session_id=dataset.web.pk, limit=3, from_index=first.next_index)
    assert [m.index for m in first.messages] == [0, 1, 2] and first.truncated and first.next_index == 3
    assert [m.index for m in rest.messages] == [3] and not rest.truncated
    client = client_as(Role.VIEWER)
    page = client.get(f"/console/conversations/{dataset.web.pk}/", {"from": "2"}).content.decode()
    assert 'id="m-2"' in page and 'id="m-1"' not in page and 'rel="first"' in page
    assert client.get(f"/console/conversations/{dataset.web.pk}/", {"from": "-1"}).status_code == 400
    assert client.get(f"/console/conversations/{dataset.web.pk}/", {"from": "\u00b2"}).status_code == 400  # isdigit


@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01"])
def test_conversation_list_and_export_refuse_dates_at_the_ends_of_the_calendar(client_as, dataset, day):
    client = client_as(Role.EDITOR)
    for url in ("/console/conversations/", "/console/conversations/export.csv"):
        response = client.get(url, {"date_from": day if day < "5" else "", "date_to": day})
        assert response.status_code == 400, (url, response.status_code)
        assert "Choose a date between" in response.content.decode()


def test_pages_speak_portuguese(client_as, canary_tenants, dataset):
    client = client_as(Role.VIEWER)
    client.cookies["django_language"] = "pt-br"
    analytics = client.get("/console/analytics/").content.decode()
    assert "Análises" in analytics and "Perguntas sem resposta" in analytics
    transcript = client.get(f"/console/conversations/{dataset.web.pk}/").content.decode()
    assert "Chamada de ferramenta" in transcript and "Fontes da base de conhecimento" in transcript


def test_text_search_is_bounded_to_the_newest_messages(client_as, dataset, monkeypatch):
    from apps.analytics import selectors

    client = client_as(Role.VIEWER)
    assert _session_ids(client.get("/console/conversations/", {"q": "price of fax"})) == [str(dataset.web.pk)]
    # The helpdesk session's 3 messages are the newest: a 3-message scan no longer reaches day 1.
    monkeypatch.setattr(selectors, "SEARCH_SCAN_MESSAGES", 3)
    page = client.get("/console/conversations/", {"q": "price of fax"})
    assert _session_ids(page) == [] and "newest 3 messages" in page.content.decode()


def test_text_search_scans_the_newest_messages_of_the_filtered_bot_and_channel(client_as, dataset, monkeypatch):
    from apps.analytics import selectors

    monkeypatch.setattr(selectors, "SEARCH_SCAN_MESSAGES", 3)
    page = client_as(Role.VIEWER).get("/console/conversations/", {"q": "price of fax", "bot": dataset.bot.name,
                                                                   "channel": "web"})
    assert _session_ids(page) == [str(dataset.web.pk)]  # the helpdesk's newer messages do not push it out


def test_analytics_channel_filter(client_as, canary_tenants, dataset):
    with schema_context(canary_tenants.a.schema_name):
        daily_stats_recompute(day_from=DAY1, day_to=DAY2)
    data = client_as(Role.VIEWER).get("/console/analytics/data.json", {
        "date_from": DAY1.isoformat(), "date_to": DAY2.isoformat(), "channel": "whatsapp"}).json()
    assert (data["summary"]["messages"], data["summary"]["unanswered"], data["summary"]["distinct_users"]) == (4, 2, 1)
    assert data["channels"] == [{"channel": "whatsapp", "messages": 4}]


def test_filter_form_keeps_the_chosen_values(client_as, dataset):
    html = client_as(Role.VIEWER).get("/console/conversations/", {"bot": "helpdesk", "channel": "web",
                                                                   "tools": "1", "q": "reset"}).content.decode()
    assert '<option value="helpdesk" selected>' in html and '<option value="web" selected>' in html
    assert 'name="tools" value="1" checked' in html and 'value="reset"' in html
