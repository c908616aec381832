"""Episodic memory (spec 7.6): a long conversation's older exchanges summarised by the model into one hidden
history row that leads the history of later questions."""

from __future__ import annotations

import pytest
from django_tenants.utils import schema_context

from apps.bots.selectors import bot_config_values
from apps.sessions import memory, services
from apps.sessions.models import Message, Role
from apps.sessions.tasks import compact_history
from tests.sessions.test_turns import _bot
from tests.support import llm_fake
from tests.support.llm_fake import Reply

pytestmark = pytest.mark.django_db
llm_server, llm_platform = llm_fake.llm_server, llm_fake.llm_platform

SUMMARY = "The visitor asked about tickets and chose the Saturday tour."


def test_older_exchanges_are_summarised_once_and_the_summary_leads_later_history(
        canary_tenants, llm_platform, django_capture_on_commit_callbacks):
    llm_platform.script(*(Reply(text=f"answer {i}") for i in (1, 2, 3)), Reply(text=SUMMARY), Reply(text="answer 4"))
    with schema_context(canary_tenants.a.schema_name):
        bot = _bot("memo", {}, {"llm-cache": "false", "episodic-memory-threshold": "2", "history-limit": "1"})
        session = services.session_bootstrap(bot_name="memo")
        queued = []
        for i in (1, 2, 3):
            with django_capture_on_commit_callbacks() as callbacks:
                services.turn_run(session, text=f"question {i}")
            queued.append(len(callbacks))
        # (2 exchanges over the threshold + 1 kept) x 2 rows: due after the third exchange, queued once then.
        assert queued == [0, 0, 1]

        compact_history.apply(args=[str(session.pk)])  # what the queued task runs
        row = Message.objects.get(session=session, role=Role.EPISODIC)
        assert row.content == SUMMARY
        kept = Message.objects.get(session=session, content="question 3")
        assert row.meta["upto_index"] == kept.index - 1 and row.meta["summarised"] == 4
        assert memory.compact(str(session.pk)) is None  # nothing due any more: no second summary
        assert not memory.compaction_due(session, bot_config_values(bot))

        services.turn_run(session, text="question 4")
        shown = [m["content"] for m in services.history(session)]
        assert SUMMARY not in shown and "question 1" in shown  # the user's transcript is untouched

    summary_request, last_request = llm_platform.chat_requests()[3:5]
    transcript = summary_request.body["messages"][-1]["content"]
    assert "question 1" in transcript and "answer 2" in transcript and "question 3" not in transcript
    history = last_request.body["messages"][1:]
    assert history[0]["role"] == "system" and SUMMARY in history[0]["content"]
    assert [(m["role"], m["content"]) for m in history[1:]] == [
        ("user", "question 3"), ("assistant", "answer 3"), ("user", "question 4")]


def test_without_a_threshold_nothing_is_summarised(canary_tenants, llm_platform, django_capture_on_commit_callbacks):
    llm_platform.script(*(Reply(text=f"answer {i}") for i in range(6)))
    with schema_context(canary_tenants.a.schema_name):
        _bot("nomemo", {}, {"llm-cache": "false", "history-limit": "1", "episodic-memory-threshold": "soon"})
        session = services.session_bootstrap(bot_name="nomemo")
        with django_capture_on_commit_callbacks() as callbacks:
            for i in range(6):
                services.turn_run(session, text=f"question {i}")
        assert callbacks == [] and memory.compact(str(session.pk)) is None
        assert not Message.objects.filter(session=session, role=Role.EPISODIC).exists()


def test_a_summary_covers_only_the_rows_its_transcript_holds(canary_tenants, llm_platform, monkeypatch):
    """Exchanges longer than the transcript's budget: the rows left out wait for the next summary instead of
    being marked summarised unread."""
    monkeypatch.setattr(memory, "TRANSCRIPT_MAX_CHARS", 120)
    llm_platform.default = lambda request: Reply(text="summary or answer " + "z" * 40)
    with schema_context(canary_tenants.a.schema_name):
        _bot("memo2", {}, {"llm-cache": "false", "episodic-memory-threshold": "2", "history-limit": "1"})
        session = services.session_bootstrap(bot_name="memo2")
        summaries = []
        for i in range(1, 9):
            services.turn_run(session, text=f"question {i} " + "y" * 40)
            row = memory.compact(str(session.pk))
            if row is not None:
                summaries.append(row)
        read = "\n".join(r.body["messages"][-1]["content"] for r in llm_platform.chat_requests()
                         if r.body["messages"][0]["content"] == memory.SUMMARY_INSTRUCTIONS)
        assert len(summaries) >= 2 and all(row.meta["summarised"] < 4 for row in summaries)
        summarised = Message.objects.filter(session=session, role__in=[Role.USER, Role.ASSISTANT],
                                            index__lte=summaries[-1].meta["upto_index"])
        for message in summarised:  # every row a summary claims was in one summary's transcript
            assert message.content[:60] in read, message.content
