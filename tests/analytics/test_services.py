"""daily_stats_recompute on the hand-made dataset: exact counts, percentiles by the documented method,
idempotence, late and deleted messages, and tenant isolation."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from django_tenants.utils import schema_context

from apps.analytics.models import LATENCY_BUCKETS_MS, DailyQuestion, DailyStat
from apps.analytics.selectors import latency_percentile
from apps.analytics.services import daily_stats_recompute, daily_stats_refresh_recent
from apps.analytics.tasks import analytics_refresh_task
from apps.sessions.models import ChatUser, Message
from tests.analytics.conftest import BOT, DAY1, DAY2, USER, at, session_make

pytestmark = pytest.mark.django_db

FIELDS = ("messages", "user_messages", "bot_messages", "sessions", "new_sessions", "active_users", "llm_answers",
          "cached_answers", "offline_answers", "unanswered", "prompt_tokens", "completion_tokens", "tool_calls",
          "tool_errors", "latency_count", "latency_sum_ms")


def _histogram(*latencies: int) -> list[int]:
    counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    for value in latencies:
        counts[next((i for i, bound in enumerate(LATENCY_BUCKETS_MS) if value <= bound), len(LATENCY_BUCKETS_MS))] += 1
    return counts


def _stats(schema: str) -> dict[tuple, dict]:
    with schema_context(schema):
        return {(s.day, s.bot.name, s.channel): {**{f: getattr(s, f) for f in FIELDS}, "tools": s.tools,
                                                   "tokens_by_model": s.tokens_by_model,
                                                   "histogram": s.latency_histogram}
                for s in DailyStat.objects.select_related("bot")}


def _questions(schema: str) -> set[tuple]:
    with schema_context(schema):
        return set(DailyQuestion.objects.values_list("day", "bot__name", "text", "asked", "unanswered"))


def test_recompute_counts_exactly_what_the_messages_say(canary_tenants, dataset):
    a = canary_tenants.a
    with schema_context(a.schema_name):
        report = daily_stats_recompute(day_from=DAY1, day_to=DAY2)
    assert (report.stats, report.questions) == (3, 3)
    stats = _stats(a.schema_name)
    assert stats[(DAY1, a.canary, "web")] == {
        "messages": 4, "user_messages": 2, "bot_messages": 2, "sessions": 1, "new_sessions": 1, "active_users": 1,
        "llm_answers": 2, "cached_answers": 1, "offline_answers": 0,
        "unanswered": 0,  # the first answer called a tool, the second cited a strong passage
        "prompt_tokens": 100, "completion_tokens": 20, "tool_calls": 1, "tool_errors": 0,
        "latency_count": 2, "latency_sum_ms": 940, "tools": {"get-price": [1, 0]},
        "tokens_by_model": {"m-large": [100, 20]}, "histogram": _histogram(40, 900)}
    assert stats[(DAY1, a.canary, "whatsapp")] == {
        "messages": 4, "user_messages": 2, "bot_messages": 2, "sessions": 1, "new_sessions": 1, "active_users": 1,
        "llm_answers": 1, "cached_answers": 0, "offline_answers": 1,
        "unanswered": 2,  # offline, then a best passage scoring 0.011 < ANSWER_LOW_SCORE
        "prompt_tokens": 50, "completion_tokens": 10, "tool_calls": 0, "tool_errors": 0,
        "latency_count": 1, "latency_sum_ms": 3000, "tools": {}, "tokens_by_model": {"m-small": [50, 10]},
        "histogram": _histogram(3000)}
    assert stats[(DAY2, "helpdesk", "web")] == {
        "messages": 3, "user_messages": 1, "bot_messages": 1, "sessions": 1, "new_sessions": 1, "active_users": 1,
        "llm_answers": 1, "cached_answers": 0, "offline_answers": 0, "unanswered": 0,
        "prompt_tokens": 10, "completion_tokens": 5, "tool_calls": 2, "tool_errors": 1,
        "latency_count": 1, "latency_sum_ms": 150, "tools": {"get-price": [1, 1], "lookup": [1, 0]},
        "tokens_by_model": {"m-small": [10, 5]}, "histogram": _histogram(150)}
    assert len(stats) == 3
    # Questions normalised (case, spaces, end punctuation), unanswered ones tied to the question before them.
    assert _questions(a.schema_name) == {
        (DAY1, a.canary, "what is the price of fax", 2, 0),
        (DAY1, a.canary, "opening hours", 2, 2),
        (DAY2, "helpdesk", "reset my password", 1, 0),
    }


def test_percentiles_come_from_the_histogram_within_one_bucket():
    latencies = [40, 120, 130, 450, 900, 905, 2500, 70000]
    histogram = _histogram(*latencies)
    for fraction in (0.5, 0.95, 0.99):
        true_value = sorted(latencies)[math.ceil(fraction * len(latencies)) - 1]  # nearest rank
        bucket = next((i for i, bound in enumerate(LATENCY_BUCKETS_MS) if true_value <= bound),
                      len(LATENCY_BUCKETS_MS))
        lower = 0 if bucket == 0 else LATENCY_BUCKETS_MS[bucket - 1]
        upper = LATENCY_BUCKETS_MS[bucket] if bucket < len(LATENCY_BUCKETS_MS) else lower
        assert lower <= latency_percentile(histogram, fraction) <= upper, (fraction, true_value)
    # Rank 4 of 8 is the only value in (400, 500]: read as the bucket's middle; 2 of 2 in (100, 150] at 3/4.
    assert latency_percentile(histogram, 0.5) == 450
    assert latency_percentile(histogram, 3 / 8) == 137.5
    assert latency_percentile([0] * len(histogram), 0.5) is None


def test_recompute_is_idempotent_and_follows_late_and_deleted_messages(canary_tenants, dataset):
    a = canary_tenants.a
    with schema_context(a.schema_name):
        daily_stats_recompute(day_from=DAY1, day_to=DAY2)
        first = _stats(a.schema_name), _questions(a.schema_name)
        daily_stats_recompute(day_from=DAY1, day_to=DAY2)
        daily_stats_recompute(day_from=DAY1, day_to=DAY1)
        assert (_stats(a.schema_name), _questions(a.schema_name)) == first
        assert DailyStat.objects.count() == 3
        # A late answer on day 1, then the helpdesk session deleted.
        late = Message.objects.create(session=dataset.web, index=4, role=BOT[0], message_type=BOT[1],
                                      content="late", meta={"cached": True, "citations": []}, latency_ms=60)
        Message.objects.filter(pk=late.pk).update(created_at=at(DAY1, 23, 59))
        dataset.day2.delete()
        daily_stats_recompute(day_from=DAY1, day_to=DAY2)
    stats = _stats(a.schema_name)
    web = stats[(DAY1, a.canary, "web")]
    assert (web["messages"], web["cached_answers"], web["unanswered"], web["latency_count"]) == (5, 2, 1, 3)
    assert (DAY2, "helpdesk", "web") not in stats
    assert (DAY2, "helpdesk", "reset my password", 1, 0) not in _questions(a.schema_name)


def test_other_tenants_messages_are_never_counted(canary_tenants, dataset):
    with schema_context(canary_tenants.b.schema_name):
        daily_stats_recompute(day_from=DAY1, day_to=DAY2)
        b_stats = list(DailyStat.objects.values_list("messages", "unanswered"))
    with schema_context(canary_tenants.a.schema_name):
        daily_stats_recompute(day_from=DAY1, day_to=DAY2)
        texts = list(DailyQuestion.objects.values_list("text", flat=True))
    assert b_stats == [(6, 3)]  # B's own numbers, computed in B
    stats = _stats(canary_tenants.a.schema_name)
    assert sum(s["messages"] for s in stats.values()) == 11  # A's 4 + 4 + 3, none of B's 6
    assert not any(canary_tenants.b.canary in text for text in texts)


def test_refresh_task_recomputes_today_and_yesterday_in_its_tenant(canary_tenants, dataset):
    from apps.analytics.services import analytics_today

    today = analytics_today()
    with schema_context(canary_tenants.a.schema_name):
        carol = ChatUser.objects.create(username="carol")
        session_make(dataset.bot, carol, channel="web", started=at(today, 0, 1),
                     turns=[{"kind": USER, "content": "hello there"}, {**BOT_ANSWER_TODAY}])
        session_make(dataset.bot, carol, channel="web", started=at(today - timedelta(days=3), 12),
                     turns=[{"kind": USER, "content": "too old for the refresh"}])
        result = analytics_refresh_task()
        days = set(DailyStat.objects.values_list("day", "messages"))
    assert result["from"] == (today - timedelta(days=1)).isoformat() and result["to"] == today.isoformat()
    assert days == {(today, 2)}


BOT_ANSWER_TODAY = {"kind": BOT, "content": "hi", "meta": {"cached": False, "citations": []}, "latency_ms": 10}


def test_recompute_refuses_a_reversed_range(canary_tenants):
    with schema_context(canary_tenants.a.schema_name), pytest.raises(ValueError, match="before"):
        daily_stats_recompute(day_from=DAY2, day_to=DAY1)


def test_refresh_recent_covers_the_asked_days(canary_tenants, db):
    with schema_context(canary_tenants.a.schema_name):
        report = daily_stats_refresh_recent(days=3)
    assert (report.day_to - report.day_from).days == 2


def test_question_texts_follow_the_message_retention(canary_tenants, dataset):
    from apps.analytics.services import daily_questions_retention_apply
    from apps.compliance.models import RetentionPolicy

    with schema_context(canary_tenants.a.schema_name):
        daily_stats_recompute(day_from=DAY1, day_to=DAY2)
        assert daily_questions_retention_apply(today=DAY2 + timedelta(days=5)) == 0  # no policy: kept
        RetentionPolicy.objects.create(data_class=RetentionPolicy.DataClass.MESSAGES, days=5)
        # Day 1 is 6 days old, day 2 exactly 5: only day 1's texts go; the counts stay.
        assert daily_questions_retention_apply(today=DAY2 + timedelta(days=5)) == 2
        assert list(DailyQuestion.objects.values_list("day", flat=True)) == [DAY2]
        assert DailyStat.objects.filter(day=DAY1).count() == 2


def test_erased_sessions_leave_the_aggregates_of_their_days(canary_tenants, dataset):
    from apps.analytics.services import daily_stats_forget_sessions

    with schema_context(canary_tenants.a.schema_name):
        daily_stats_recompute(day_from=DAY1, day_to=DAY2)
        spans = [(dataset.whatsapp.created_at, dataset.whatsapp.last_activity)]
        dataset.whatsapp.user.delete()  # an erasure deletes the chat user and, with it, the sessions
        reports = daily_stats_forget_sessions(spans=spans)
        texts = set(DailyQuestion.objects.values_list("text", flat=True))
    assert [(r.day_from, r.day_to) for r in reports] == [(DAY1, DAY1)]
    assert (DAY1, canary_tenants.a.canary, "whatsapp") not in _stats(canary_tenants.a.schema_name)
    assert "opening hours" not in texts and "what is the price of fax" in texts


def test_an_answer_without_knowledge_bases_is_not_unanswered_for_citing_nothing(canary_tenants, db):
    """The chat marks whether the session had knowledge bases (meta "kb"): a model's answer without any cites
    nothing by design; an offline one, or one that had KBs and cited nothing, still counts as unanswered."""
    from apps.analytics.selectors import message_is_unanswered
    from apps.bots.models import Bot

    answers = {
        "no kb, answered": ({"citations": [], "kb": False, "cached": False}, False),
        "no kb, offline": ({"citations": [], "kb": False, "offline": True}, True),
        "kb, nothing cited": ({"citations": [], "kb": True, "cached": False}, True),
        "before the flag": ({"citations": [], "cached": False}, True),
    }
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="no-kb-bot")
        user = ChatUser.objects.create(username="dora")
        turns = []
        for question, (meta, _) in answers.items():
            turns += [{"kind": USER, "content": question}, {"kind": BOT, "content": "answer", "meta": meta}]
        session = session_make(bot, user, channel="web", started=at(DAY2, 15), turns=turns)
        daily_stats_recompute(day_from=DAY2, day_to=DAY2)
        stat = DailyStat.objects.get(bot=bot)
        assert stat.unanswered == sum(expected for _, expected in answers.values()) == 3
        rows = Message.objects.filter(session=session, role=BOT[0]).order_by("index")
        assert [message_is_unanswered(m) for m in rows] == [expected for _, expected in answers.values()]
