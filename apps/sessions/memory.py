"""Episodic memory (spec 7.6): the older exchanges of a long conversation, summarised by the bot's model into
one history row (role EPISODIC), so the model keeps their gist while the history sent with each question
stays within `history-limit`.

Config keys: `episodic-memory-threshold` (exchanges beyond the kept recent ones that trigger a summary;
0 or absent: off) and `history-limit` (the recent exchanges kept verbatim, see turns.history_limit). An
LLM turn that finds the threshold reached queues `chat.compact_history`; the task asks the model outside
the session's lock (a user's next message is not held up by it) and writes the summary under the lock, after
checking that no other summary was written meanwhile. The summary row records the last index it covers
(`meta.upto_index`): history assembly sends it as a system message, followed by the messages after it.
Summaries are never shown to the user (the clients' history reads user and bot rows only).
"""

from __future__ import annotations

import logging

from django.db import transaction

from apps.bots.config_csv import config_lookup
from apps.bots.selectors import bot_config_values
from apps.sessions.models import ChatSession, Message, MessageType, Role

logger = logging.getLogger(__name__)

THRESHOLD_KEY = "episodic-memory-threshold"
# Exchanges a threshold may name: beyond this the summary would cover more than one model call can read.
THRESHOLD_MAX = 100
# Text of the exchanges sent for one summary: a summary covers the oldest rows that fit (at least one, cut if
# it alone is longer), and the rest wait for the next one; none is marked summarised without being read.
TRANSCRIPT_MAX_CHARS = 48_000
# Rows read for one summary (a session whose summaries kept failing may have thousands waiting).
SUMMARY_ROWS_MAX = 400
# A summary longer than this is cut: it must leave the history budget to the recent exchanges.
SUMMARY_MAX_CHARS = 4_000
SUMMARY_INSTRUCTIONS = (
    "You keep the memory of a conversation between a user and an assistant. Write a concise summary of the "
    "conversation below for the assistant to continue it: the user's goals, facts they gave (names, dates, "
    "choices), what was answered or decided, and anything still open. Plain sentences, no greeting, at most "
    "200 words. If an earlier summary is given, merge it in."
)


def episodic_threshold(config: dict[str, str]) -> int:
    raw = config_lookup(config, THRESHOLD_KEY, "")
    try:
        value = int(str(raw).strip() or 0)
    except ValueError:
        return 0  # a typo switches the feature off rather than failing turns
    return max(0, min(value, THRESHOLD_MAX))


def latest_summary(session: ChatSession, before_index: int | None = None) -> Message | None:
    rows = Message.objects.filter(session=session, role=Role.EPISODIC)
    if before_index is not None:
        rows = rows.filter(index__lt=before_index)
    return rows.order_by("-index").first()


def summary_upto(summary: Message | None) -> int:
    """The last message index a summary covers (-1: none)."""
    meta = summary.meta if summary is not None and isinstance(summary.meta, dict) else {}
    try:
        return int(meta.get("upto_index", -1))
    except (TypeError, ValueError):
        return -1


def _exchanges_after(session: ChatSession, upto: int):
    return (Message.objects.filter(session=session, index__gt=upto, role__in=[Role.USER, Role.ASSISTANT])
            .exclude(message_type=MessageType.TOOL_EXEC))


def compaction_due(session: ChatSession, config: dict[str, str], upto: int | None = None) -> bool:
    """Whether the exchanges after the latest summary (or after index `upto`, when the caller read it) reach
    the threshold beyond the kept ones."""
    from apps.sessions.turns import history_limit

    threshold = episodic_threshold(config)
    if not threshold:
        return False
    if upto is None:
        upto = summary_upto(latest_summary(session))
    return _exchanges_after(session, upto).count() >= (threshold + history_limit(config)) * 2


def compaction_queue(session: ChatSession, config: dict[str, str]) -> None:
    """Queue a summary when the session has grown past the threshold (after this turn's rows commit)."""
    if not compaction_due(session, config):
        return
    from apps.sessions.tasks import compact_history

    session_id = str(session.pk)
    # Robust: the broker down must not fail the turn; the next turn finds the summary still due.
    transaction.on_commit(lambda: compact_history.delay(session_id), robust=True)


def _line(message: Message) -> str:
    return f"{'User' if message.role == Role.USER else 'Assistant'}: {message.content}"


def _fitting(rows: list[Message]) -> list[Message]:
    """The oldest rows whose lines fit TRANSCRIPT_MAX_CHARS (the first one always)."""
    fitting, used = [], 0
    for row in rows:
        used += len(_line(row)) + 1
        if fitting and used > TRANSCRIPT_MAX_CHARS:
            break
        fitting.append(row)
    return fitting


def _transcript(previous: Message | None, rows: list[Message]) -> str:
    text = "\n".join(_line(m) for m in rows)
    if len(text) > TRANSCRIPT_MAX_CHARS:  # one row longer than the whole budget
        text = text[:TRANSCRIPT_MAX_CHARS] + "…"
    if previous is not None:
        text = f"Earlier summary:\n{previous.content}\n\nConversation since:\n{text}"
    return text


def compact(session_id: str) -> Message | None:
    """Summarise what the session's history no longer carries verbatim; the new summary row, or None when
    nothing is due (or no model answered: the next LLM turn queues it again)."""
    from apps.llm.errors import LLMError
    from apps.llm.services import bot_llm_configured, chat, llm_settings_for
    from apps.sessions.turns import history_limit, session_locked

    session = ChatSession.objects.select_related("bot").filter(pk=session_id).first()
    if session is None:
        return None  # erased since
    config = bot_config_values(session.bot)
    previous = latest_summary(session)
    upto = summary_upto(previous)
    if not compaction_due(session, config, upto) or not bot_llm_configured(session.bot, config):
        return None
    exchanges = _exchanges_after(session, upto)
    due = exchanges.count() - history_limit(config) * 2  # the newest exchanges stay verbatim
    if due <= 0:
        return None
    to_summarise = _fitting(list(exchanges.order_by("index")[:min(due, SUMMARY_ROWS_MAX)]))
    messages = [{"role": "system", "content": SUMMARY_INSTRUCTIONS},
                {"role": "user", "content": _transcript(previous, to_summarise)}]
    try:
        result = chat(llm_settings_for(session.bot, config), messages, use_cache=False)
    except LLMError as exc:
        logger.warning("chat: no summary for session %s: %s", session_id, exc)
        return None
    summary = result.text.strip()[:SUMMARY_MAX_CHARS]
    if not summary:
        return None
    with session_locked(session_id) as locked:
        if locked is None or summary_upto(latest_summary(locked)) != upto:
            return None  # erased, or another worker summarised first
        row = Message.objects.create(
            session=locked, index=locked.message_count, role=Role.EPISODIC, message_type=MessageType.SYSTEM,
            content=summary, tokens=result.total_tokens, model=result.model[:200],
            meta={"upto_index": to_summarise[-1].index, "summarised": len(to_summarise)})
        locked.message_count += 1
        locked.total_tokens = (locked.total_tokens or 0) + result.total_tokens
        locked.save(update_fields=["message_count", "total_tokens"])
    return row
