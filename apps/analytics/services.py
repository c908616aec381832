"""Rebuilding the daily aggregates from the messages: `daily_stats_recompute` (the only writer).

A recompute replaces every row of its days in one transaction (delete, then insert what the messages say
now), so running it twice gives the same rows, a late message is counted by the next run, and a deleted
session disappears from the numbers. The beat task recomputes today and yesterday; the backfill command
walks older days in chunks.

Failure modes prevented:
- Two recomputes of the same days at once (beat and a backfill) inserting twice: a transaction-level
  advisory lock per schema serialises them.
- A huge backfill holding one transaction for minutes: days go in chunks of RECOMPUTE_CHUNK_DAYS.
- Question texts of unbounded size or number: texts are normalised and cut to QUESTION_MAX_CHARS, and only
  a day's head (QUESTIONS_PER_DAY) is stored.
"""

from __future__ import annotations

import logging
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.conf import settings
from django.db import connection, transaction

from apps.analytics.models import LATENCY_BUCKETS_MS, QUESTION_MAX_CHARS, DailyQuestion, DailyStat
from apps.core.locks import tenant_xact_lock
from apps.sessions.models import ChatSession, Message, MessageType, Role

logger = logging.getLogger(__name__)

# A best KB passage under this fused (reciprocal-rank) score counts as "low": with apps.kb.search's
# defaults (k=20, weights 0.7/0.3) a passage ranked first by the dense side alone scores 0.033 and one
# found by keywords alone 0.014, so 0.02 means "no passage the embedding search found relevant".
ANSWER_LOW_SCORE = 0.02
# Questions kept per day and bot (the top by asks plus the top by unanswered): a top-20 over any range
# needs only each day's head, and 100 keeps 90 days of 5 bots under 90,000 small rows.
QUESTIONS_PER_DAY = 100
# Days recomputed per transaction by a backfill: about 10,000 messages a day each take well under a second.
RECOMPUTE_CHUNK_DAYS = 7
# A question longer than this is cut before normalising (a pasted document is not worth lower-casing).
QUESTION_SCAN_CHARS = 1000


@dataclass(frozen=True)
class RecomputeReport:
    day_from: date
    day_to: date
    stats: int
    questions: int


def analytics_timezone() -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(settings.TIME_ZONE)


def day_bounds(day_from: date, day_to: date) -> tuple[datetime, datetime]:
    """[start of day_from, start of the day after day_to) as aware datetimes in the analytics time zone."""
    tz = analytics_timezone()
    return (datetime.combine(day_from, time.min, tzinfo=tz),
            datetime.combine(day_to + timedelta(days=1), time.min, tzinfo=tz))


def _tables() -> dict[str, str]:
    return {"msg": Message._meta.db_table, "sess": ChatSession._meta.db_table}


# An answer to a question (it went through the KB step, so meta has "citations") that made no tool call and
# was offline, cited nothing, or cited only weak passages. A model's answer in a session without knowledge
# bases (meta "kb": false) cites nothing by design: it counts as answered. Used in SQL with the message aliased
# `m`.
UNANSWERED_SQL = f"""(
    m.role = {int(Role.ASSISTANT)} AND m.meta ? 'citations'
    AND COALESCE(jsonb_array_length(CASE WHEN jsonb_typeof(m.meta->'tool_calls') = 'array'
                                         THEN m.meta->'tool_calls' END), 0) = 0
    AND NOT COALESCE(m.meta->'kb' = 'false'::jsonb AND m.meta->'offline' IS DISTINCT FROM 'true'::jsonb, false)
    AND (m.meta->>'offline' = 'true'
         OR jsonb_typeof(m.meta->'citations') IS DISTINCT FROM 'array'
         OR jsonb_array_length(m.meta->'citations') = 0
         OR COALESCE((SELECT max((c->>'score')::float) FROM jsonb_array_elements(m.meta->'citations') c
                      WHERE jsonb_typeof(c) = 'object' AND jsonb_typeof(c->'score') = 'number'), 0)
            < {ANSWER_LOW_SCORE})
)"""  # noqa: S608 - constants only

# The day of a message in the analytics time zone.
DAY_SQL = "(timezone(%(tz)s, {alias}.created_at))::date"

STATS_SQL = """
SELECT {day} AS day, s.bot_id, s.channel,
       count(*),
       count(*) FILTER (WHERE m.role = {user}),
       count(*) FILTER (WHERE m.role = {assistant}),
       count(DISTINCT m.session_id),
       count(DISTINCT s.user_id) FILTER (WHERE m.role = {user}),
       count(*) FILTER (WHERE m.role = {assistant} AND m.meta ? 'cached'),
       count(*) FILTER (WHERE m.role = {assistant} AND m.meta->>'cached' = 'true'),
       count(*) FILTER (WHERE m.role = {assistant} AND m.meta->>'offline' = 'true'),
       count(*) FILTER (WHERE {unanswered}),
       count(m.latency_ms) FILTER (WHERE m.role = {assistant}),
       COALESCE(sum(m.latency_ms) FILTER (WHERE m.role = {assistant}), 0)
FROM {msg} m JOIN {sess} s ON s.id = m.session_id
WHERE m.created_at >= %(start)s AND m.created_at < %(end)s
GROUP BY 1, 2, 3
"""

NEW_SESSIONS_SQL = """
SELECT {day} AS day, s.bot_id, s.channel, count(*)
FROM {sess} s WHERE s.created_at >= %(start)s AND s.created_at < %(end)s
GROUP BY 1, 2, 3
"""

# Tokens of assistant messages by model: meta's prompt/completion split when the LLM reported it, else the
# whole `tokens` count as completion (older rows).
MODELS_SQL = """
SELECT day, bot_id, channel, model, sum(prompt), sum(total - LEAST(prompt, total))
FROM (
  SELECT {day} AS day, s.bot_id, s.channel, m.model, m.tokens::bigint AS total,
         CASE WHEN jsonb_typeof(m.meta->'prompt_tokens') = 'number'
              THEN (m.meta->>'prompt_tokens')::numeric::bigint ELSE 0 END AS prompt
  FROM {msg} m JOIN {sess} s ON s.id = m.session_id
  WHERE m.created_at >= %(start)s AND m.created_at < %(end)s AND m.role = {assistant}
        AND (m.tokens > 0 OR m.model <> '')
) t
GROUP BY 1, 2, 3, 4
"""

TOOLS_SQL = """
SELECT {day} AS day, s.bot_id, s.channel, left(COALESCE(tc->>'name', ''), 100), count(*),
       count(*) FILTER (WHERE COALESCE(tc->>'error', '') <> '')
FROM {msg} m JOIN {sess} s ON s.id = m.session_id
     CROSS JOIN LATERAL jsonb_array_elements(m.meta->'tool_calls') tc
WHERE m.created_at >= %(start)s AND m.created_at < %(end)s AND m.role = {assistant}
      AND jsonb_typeof(m.meta->'tool_calls') = 'array'
GROUP BY 1, 2, 3, 4
"""

# width_bucket over the bounds + 1 gives 1 for <= first bound... shifted: bucket i (0-based) holds
# values in (bounds[i-1], bounds[i]]; values above the last bound land in len(bounds).
LATENCY_SQL = """
SELECT {day} AS day, s.bot_id, s.channel,
       width_bucket(m.latency_ms - 1, %(bounds)s::int[]) AS bucket, count(*)
FROM {msg} m JOIN {sess} s ON s.id = m.session_id
WHERE m.created_at >= %(start)s AND m.created_at < %(end)s AND m.role = {assistant}
      AND m.latency_ms IS NOT NULL
GROUP BY 1, 2, 3, 4
"""

# A question's normal form: its first QUESTION_SCAN_CHARS, lower case, runs of white space as one space,
# no surrounding spaces or end punctuation, cut to QUESTION_MAX_CHARS.
NORMALISE_SQL = ("left(btrim(regexp_replace(lower(left({col}, {scan})), '\\s+', ' ', 'g'), ' ?!.,;:'), {keep})")

QUESTIONS_SQL = """
WITH asked AS (
  SELECT {day_m} AS day, s.bot_id, {norm_m} AS text, count(*) AS n
  FROM {msg} m JOIN {sess} s ON s.id = m.session_id
  WHERE m.created_at >= %(start)s AND m.created_at < %(end)s AND m.role = {user} AND m.message_type = {typed}
  GROUP BY 1, 2, 3
), unanswered AS (
  SELECT {day_m} AS day, s.bot_id, {norm_q} AS text, count(*) AS n
  FROM {msg} m JOIN {sess} s ON s.id = m.session_id
       CROSS JOIN LATERAL (SELECT q.content FROM {msg} q
                           WHERE q.session_id = m.session_id AND q.index < m.index AND q.role = {user}
                           ORDER BY q.index DESC LIMIT 1) q
  WHERE m.created_at >= %(start)s AND m.created_at < %(end)s AND {unanswered}
  GROUP BY 1, 2, 3
), merged AS (
  SELECT day, bot_id, text, COALESCE(a.n, 0) AS asked, COALESCE(u.n, 0) AS unanswered
  FROM asked a FULL JOIN unanswered u USING (day, bot_id, text)
  WHERE text <> ''
), ranked AS (
  SELECT *, row_number() OVER (PARTITION BY day, bot_id ORDER BY asked DESC, text) AS by_asked,
            row_number() OVER (PARTITION BY day, bot_id ORDER BY unanswered DESC, text) AS by_unanswered
  FROM merged
)
SELECT day, bot_id, text, asked, unanswered FROM ranked
WHERE by_asked <= {keep_rows} OR (unanswered > 0 AND by_unanswered <= {keep_rows})
"""


def _sql(template: str, alias: str = "m") -> str:
    return template.format(day=DAY_SQL.format(alias=alias), user=int(Role.USER), assistant=int(Role.ASSISTANT),
                           unanswered=UNANSWERED_SQL, **_tables())


def _questions_sql() -> str:
    norm = {"col": "m.content", "scan": QUESTION_SCAN_CHARS, "keep": QUESTION_MAX_CHARS}
    return QUESTIONS_SQL.format(
        day_m=DAY_SQL.format(alias="m"), norm_m=NORMALISE_SQL.format(**norm),
        norm_q=NORMALISE_SQL.format(**{**norm, "col": "q.content"}), user=int(Role.USER),
        typed=int(MessageType.USER), unanswered=UNANSWERED_SQL, keep_rows=QUESTIONS_PER_DAY, **_tables())


def _rows(sql: str, params: dict) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _stats_for(start: datetime, end: datetime) -> list[DailyStat]:
    params = {"start": start, "end": end, "tz": settings.TIME_ZONE, "bounds": list(LATENCY_BUCKETS_MS)}
    stats: dict[tuple, DailyStat] = {}

    def row(day: date, bot_id: int, channel: str) -> DailyStat:
        key = (day, bot_id, channel)
        if key not in stats:
            stats[key] = DailyStat(day=day, bot_id=bot_id, channel=channel, tokens_by_model={}, tools={},
                                   latency_histogram=[0] * (len(LATENCY_BUCKETS_MS) + 1))
        return stats[key]

    for (day, bot_id, channel, messages, user_messages, bot_messages, sessions, active_users, llm_answers,
         cached, offline, unanswered, latency_count, latency_sum) in _rows(_sql(STATS_SQL), params):
        stat = row(day, bot_id, channel)
        stat.messages, stat.user_messages, stat.bot_messages = messages, user_messages, bot_messages
        stat.sessions, stat.active_users = sessions, active_users
        stat.llm_answers, stat.cached_answers, stat.offline_answers = llm_answers, cached, offline
        stat.unanswered, stat.latency_count, stat.latency_sum_ms = unanswered, latency_count, int(latency_sum)
    for day, bot_id, channel, count in _rows(_sql(NEW_SESSIONS_SQL, alias="s"), params):
        row(day, bot_id, channel).new_sessions = count
    for day, bot_id, channel, model, prompt, completion in _rows(_sql(MODELS_SQL), params):
        stat = row(day, bot_id, channel)
        stat.tokens_by_model[model or ""] = [int(prompt), int(completion)]
        stat.prompt_tokens += int(prompt)
        stat.completion_tokens += int(completion)
    for day, bot_id, channel, name, calls, errors in _rows(_sql(TOOLS_SQL), params):
        stat = row(day, bot_id, channel)
        stat.tools[name] = [calls, errors]
        stat.tool_calls += calls
        stat.tool_errors += errors
    for day, bot_id, channel, bucket, count in _rows(_sql(LATENCY_SQL), params):
        row(day, bot_id, channel).latency_histogram[min(bucket, len(LATENCY_BUCKETS_MS))] += count
    return list(stats.values())


def _questions_for(start: datetime, end: datetime) -> list[DailyQuestion]:
    params = {"start": start, "end": end, "tz": settings.TIME_ZONE}
    return [DailyQuestion(day=day, bot_id=bot_id, text=text, asked=asked, unanswered=unanswered)
            for day, bot_id, text, asked, unanswered in _rows(_questions_sql(), params)]


def _recompute_chunk(day_from: date, day_to: date) -> tuple[int, int]:
    start, end = day_bounds(day_from, day_to)
    with transaction.atomic():
        # One recompute at a time per tenant: a second one waits, then replaces the same days again.
        tenant_xact_lock("analytics", key_format="{name}:{schema}")  # the key text as before
        stats = _stats_for(start, end)
        questions = _questions_for(start, end)
        DailyStat.objects.filter(day__gte=day_from, day__lte=day_to).delete()
        DailyQuestion.objects.filter(day__gte=day_from, day__lte=day_to).delete()
        DailyStat.objects.bulk_create(stats, batch_size=1000)
        DailyQuestion.objects.bulk_create(questions, batch_size=2000)
    return len(stats), len(questions)


def daily_stats_recompute(*, day_from: date, day_to: date) -> RecomputeReport:
    """Replace the aggregates of every day in [day_from, day_to] (in the current tenant) from its messages."""
    if day_to < day_from:
        raise ValueError(f"day_to {day_to} is before day_from {day_from}")
    stats = questions = 0
    chunk_start = day_from
    while chunk_start <= day_to:
        chunk_end = min(day_to, chunk_start + timedelta(days=RECOMPUTE_CHUNK_DAYS - 1))
        made = _recompute_chunk(chunk_start, chunk_end)
        stats, questions = stats + made[0], questions + made[1]
        chunk_start = chunk_end + timedelta(days=1)
    return RecomputeReport(day_from=day_from, day_to=day_to, stats=stats, questions=questions)


def analytics_today() -> date:
    return datetime.now(analytics_timezone()).date()


def daily_stats_refresh_recent(*, days: int = 2) -> RecomputeReport:
    """Recompute the last `days` days (today included): what the beat task runs."""
    today = analytics_today()
    return daily_stats_recompute(day_from=today - timedelta(days=max(1, days) - 1), day_to=today)


def daily_stats_forget_sessions(*, spans: Iterable[tuple[datetime, datetime]]) -> list[RecomputeReport]:
    """Recompute every day touched by sessions that were just erased ((created_at, last_activity) each),
    so their question texts and counts leave the aggregates too (apps.compliance's data-subject erasure
    calls this after its transaction commits). Contiguous days are recomputed together."""
    tz = analytics_timezone()
    touched: set[date] = set()
    for start, end in spans:
        first, last = start.astimezone(tz).date(), end.astimezone(tz).date()
        touched.update(first + timedelta(days=n) for n in range((last - first).days + 1))
    days = sorted(touched)
    reports, run = [], []
    for day in days:
        if run and day != run[-1] + timedelta(days=1):
            reports.append(daily_stats_recompute(day_from=run[0], day_to=run[-1]))
            run = []
        run.append(day)
    if run:
        reports.append(daily_stats_recompute(day_from=run[0], day_to=run[-1]))
    return reports


def daily_questions_retention_apply(*, today: date | None = None) -> int:
    """Delete stored question texts older than the tenant keeps its chat messages; returns rows deleted.

    Question texts are users' words: when the retention purge (apps.compliance.retention) deletes messages
    or sessions after N days, their texts must not live on here. Counts in DailyStat hold no personal data
    and are kept."""
    from apps.compliance.models import RetentionPolicy

    days = RetentionPolicy.objects.filter(data_class__in=[RetentionPolicy.DataClass.MESSAGES,
                                                          RetentionPolicy.DataClass.SESSIONS]).values_list("days",
                                                                                                          flat=True)
    keep = min(days, default=None)
    if keep is None:
        return 0
    cutoff = (today or analytics_today()) - timedelta(days=keep)
    return DailyQuestion.objects.filter(day__lt=cutoff).delete()[0]


def daily_stats_backfill(*, days: int) -> RecomputeReport:
    """Recompute the last `days` days, oldest first (the `analytics_backfill` command)."""
    return daily_stats_refresh_recent(days=days)

