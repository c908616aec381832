"""Reads for the console's conversations and analytics pages; every query is bounded.

- Conversations: `conversation_list` (filters, keyset pagination on last activity), `conversation_rows`
  (the same filters for the streamed CSV export), `transcript_get` (one session with its messages).
- Analytics: `analytics_overview` reads only the daily aggregates (apps.analytics.models), plus one count
  of distinct users over the sessions active in the range.

Failure modes prevented:
- A page that slows down with the tenant's size: the list pages by keyset (no COUNT, no OFFSET), text
  search scans at most SEARCH_SCAN_MESSAGES of the newest messages in the range, a transcript shows at
  most TRANSCRIPT_MAX_MESSAGES, and analytics never touches raw messages.
- Another tenant's data: everything runs in the request's schema; nothing here takes a schema name.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import BooleanField, Count, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.utils.dateparse import parse_datetime

from apps.analytics.models import LATENCY_BUCKETS_MS, DailyQuestion, DailyStat
from apps.analytics.pricing import ModelPrice, model_prices_for_bots
from apps.analytics.services import UNANSWERED_SQL, day_bounds
from apps.bots.models import Bot
from apps.sessions.models import ChatSession, Message, MessageType, Role

# Sessions per list page: a screenful, and a bounded query.
CONVERSATIONS_PAGE_SIZE = 50
# Text search scans at most this many of the newest messages in the date range (ILIKE has no index to
# use): the page says so, and a narrower date range reaches further back.
SEARCH_SCAN_MESSAGES = 100_000
# Messages per transcript page (a longer conversation continues on the next page; exports have it all):
# each bot message goes through the Markdown renderer (about 0.3 ms), so 200 keep a page near 60 ms.
TRANSCRIPT_MAX_MESSAGES = 200
# Rows of the top-questions tables.
TOP_QUESTIONS = 20
# Longest range an analytics page aggregates: a year of daily rows per bot and channel.
ANALYTICS_MAX_DAYS = 366
# Longest accepted search text: a search is a phrase, not a document.
SEARCH_MAX_CHARS = 200


@dataclass(frozen=True)
class ConversationFilters:
    bot: Bot | None = None
    channel: str = ""
    date_from: date | None = None
    date_to: date | None = None
    tools: bool = False
    unanswered: bool = False
    text: str = ""

    def as_summary(self) -> dict[str, Any]:
        return {"bot": self.bot.name if self.bot else "", "channel": self.channel,
                "from": self.date_from.isoformat() if self.date_from else "",
                "to": self.date_to.isoformat() if self.date_to else "", "tools": self.tools,
                "unanswered": self.unanswered, "q": self.text}


@dataclass(frozen=True)
class ConversationPage:
    sessions: list[ChatSession]
    next_cursor: str
    search_bounded: bool = False
    # How many of the newest messages a text search looked through (0: no text search).
    scan_limit: int = 0


class CursorInvalid(ValueError):
    """A pagination cursor that this code did not make."""


def cursor_encode(session: ChatSession) -> str:
    raw = f"{session.last_activity.isoformat()}|{session.pk}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def cursor_decode(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, pk = raw.partition("|")
        moment = parse_datetime(stamp)
        if moment is None or moment.tzinfo is None:
            raise ValueError(stamp)
        return moment, uuid.UUID(pk)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise CursorInvalid("this page link is not valid any more; start again from the first page") from exc


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _sessions_filtered(filters: ConversationFilters) -> tuple[QuerySet[ChatSession], bool]:
    sessions = ChatSession.objects.all()
    msg = Message._meta.db_table
    sess = ChatSession._meta.db_table
    if filters.bot is not None:
        sessions = sessions.filter(bot=filters.bot)
    if filters.channel:
        sessions = sessions.filter(channel=filters.channel)
    start = end = None
    if filters.date_from or filters.date_to:
        start, end = day_bounds(filters.date_from or date(1970, 1, 1), filters.date_to or date(9999, 12, 30))
        # Active in the range: some activity after its start and created before its end.
        if filters.date_from:
            sessions = sessions.filter(last_activity__gte=start)
        if filters.date_to:
            sessions = sessions.filter(created_at__lt=end)
    # Table names and fixed SQL of our own only; every value goes in as a parameter.
    if filters.tools:
        sessions = sessions.alias(has_tools=RawSQL(  # noqa: S611
            f"EXISTS (SELECT 1 FROM {msg} m WHERE m.session_id = {sess}.id AND m.role = %s "  # noqa: S608
            f"AND m.meta ? 'tool_calls')", [int(Role.ASSISTANT)], output_field=BooleanField())).filter(has_tools=True)
    if filters.unanswered:
        sessions = sessions.alias(has_unanswered=RawSQL(  # noqa: S611
            f"EXISTS (SELECT 1 FROM {msg} m WHERE m.session_id = {sess}.id AND {UNANSWERED_SQL})",  # noqa: S608
            [], output_field=BooleanField())).filter(has_unanswered=True)
    bounded = False
    if filters.text:
        where, params = ["TRUE"], []
        if start is not None and filters.date_from:
            where.append("created_at >= %s")
            params.append(start)
        if end is not None and filters.date_to:
            where.append("created_at < %s")
            params.append(end)
        # The scan window is the newest messages of the sessions the other filters keep (a bot's, a
        # channel's), not of the whole tenant: a quiet bot's matches are not pushed out by a busy one's.
        scope, scope_params = [], []
        if filters.bot is not None:
            scope.append("bot_id = %s")
            scope_params.append(filters.bot.pk)
        if filters.channel:
            scope.append("channel = %s")
            scope_params.append(filters.channel)
        if scope:
            where.append(f"session_id IN (SELECT id FROM {sess} WHERE {' AND '.join(scope)})")  # noqa: S608
            params.extend(scope_params)
        sessions = sessions.filter(id__in=RawSQL(  # noqa: S611
            f"SELECT t.session_id FROM (SELECT session_id, content FROM {msg} WHERE {' AND '.join(where)} "  # noqa: S608
            f"ORDER BY created_at DESC LIMIT %s) t WHERE t.content ILIKE %s",
            [*params, SEARCH_SCAN_MESSAGES, f"%{_like_escape(filters.text)}%"]))
        bounded = True
    return sessions, bounded


def conversation_list(*, filters: ConversationFilters, cursor: str = "",
                      limit: int = CONVERSATIONS_PAGE_SIZE) -> ConversationPage:
    """One page of sessions, most recently active first; `next_cursor` is empty on the last page."""
    sessions, bounded = _sessions_filtered(filters)
    if cursor:
        moment, pk = cursor_decode(cursor)
        sessions = sessions.filter(Q(last_activity__lt=moment) | Q(last_activity=moment, id__lt=pk))
    rows = list(sessions.select_related("bot", "user").defer("state").order_by("-last_activity", "-id")[: limit + 1])
    next_cursor = cursor_encode(rows[limit - 1]) if len(rows) > limit else ""
    return ConversationPage(sessions=rows[:limit], next_cursor=next_cursor, search_bounded=bounded,
                            scan_limit=SEARCH_SCAN_MESSAGES if bounded else 0)


def conversation_rows(*, filters: ConversationFilters, chunk: int = 2000) -> Iterator[ChatSession]:
    """Every session matching `filters`, newest activity first, read page by page (keyset) for an export."""
    cursor = ""
    while True:
        page = conversation_list(filters=filters, cursor=cursor, limit=chunk)
        yield from page.sessions
        if not page.next_cursor:
            return
        cursor = page.next_cursor


def conversation_channels() -> list[str]:
    """The channels sessions exist on (for the filter's choices), from the bots' channel index."""
    return sorted(set(ChatSession.objects.order_by().values_list("channel", flat=True).distinct()[:50]))


# -- transcripts ---------------------------------------------------------------------------------------

@dataclass
class TranscriptMessage:
    index: int
    role: str
    message_type: str
    content: str
    created_at: datetime
    model: str
    tokens: int
    latency_ms: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    provider: str
    cached: bool
    offline: bool
    unanswered: bool
    tool_calls: list[dict] = field(default_factory=list)
    citations: list[dict] = field(default_factory=list)
    error: str = ""
    script: str = ""

    def as_export(self) -> dict[str, Any]:
        return {"index": self.index, "role": self.role, "type": self.message_type, "content": self.content,
                "created_at": self.created_at.isoformat(), "model": self.model, "tokens": self.tokens,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "latency_ms": self.latency_ms, "provider": self.provider, "cached": self.cached,
                "offline": self.offline, "unanswered": self.unanswered, "tool_calls": self.tool_calls,
                "citations": self.citations, "error": self.error, "script": self.script}


@dataclass
class Transcript:
    session: ChatSession
    messages: list[TranscriptMessage]
    truncated: bool
    # Index of the first message of the next page (when truncated), and of the first shown.
    next_index: int | None = None
    first_index: int = 0


def _int_or_none(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _json_text(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str)


def _tool_calls(meta: dict) -> list[dict]:
    calls = meta.get("tool_calls")
    if not isinstance(calls, list):
        return []
    return [{"name": str(c.get("name") or ""), "arguments": _json_text(c.get("arguments", {})),
             "result": _json_text(c.get("result")) if c.get("result") is not None else "",
             "error": _json_text(c.get("error")) if c.get("error") else ""}
            for c in calls if isinstance(c, dict)]


def _citations(meta: dict) -> list[dict]:
    items = meta.get("citations")
    if not isinstance(items, list):
        return []
    return [{"n": c.get("n"), "source": str(c.get("source") or ""), "kb": str(c.get("kb") or ""),
             "page": c.get("page"), "score": c.get("score")} for c in items if isinstance(c, dict)]


def message_is_unanswered(message: Message) -> bool:
    """The Python twin of services.UNANSWERED_SQL (same definition; tests hold them together)."""
    from apps.analytics.services import ANSWER_LOW_SCORE

    meta = message.meta if isinstance(message.meta, dict) else {}
    if message.role != Role.ASSISTANT or "citations" not in meta:
        return False
    if isinstance(meta.get("tool_calls"), list) and meta["tool_calls"]:
        return False
    if meta.get("kb") is False and meta.get("offline") is not True:
        return False  # a model's answer in a session without knowledge bases: nothing to cite
    citations = meta.get("citations")
    if meta.get("offline") is True or not isinstance(citations, list) or not citations:
        return True
    scores = [c["score"] for c in citations if isinstance(c, dict) and isinstance(c.get("score"), int | float)
              and not isinstance(c.get("score"), bool)]
    return (max(scores) if scores else 0) < ANSWER_LOW_SCORE


def transcript_message(message: Message) -> TranscriptMessage:
    meta = message.meta if isinstance(message.meta, dict) else {}
    error = meta.get("error")
    return TranscriptMessage(
        index=message.index, role=Role(message.role).label if message.role in Role.values else str(message.role),
        message_type=(MessageType(message.message_type).label if message.message_type in MessageType.values
                      else str(message.message_type)),
        content=message.content, created_at=message.created_at, model=message.model, tokens=message.tokens,
        latency_ms=message.latency_ms, prompt_tokens=_int_or_none(meta.get("prompt_tokens")),
        completion_tokens=_int_or_none(meta.get("completion_tokens")), provider=str(meta.get("provider") or ""),
        cached=meta.get("cached") is True, offline=meta.get("offline") is True,
        unanswered=message_is_unanswered(message), tool_calls=_tool_calls(meta), citations=_citations(meta),
        error=_json_text(error) if error else "", script=str(meta.get("script") or ""),
    )


def transcript_get(*, session_id: uuid.UUID, limit: int = TRANSCRIPT_MAX_MESSAGES,
                   from_index: int = 0) -> Transcript | None:
    """The session with `limit` messages in order from `from_index`, or None when this tenant has no such
    session."""
    session = ChatSession.objects.select_related("bot", "user").defer("state").filter(pk=session_id).first()
    if session is None:
        return None
    rows = list(Message.objects.filter(session=session, index__gte=from_index).order_by("index")[: limit + 1])
    truncated = len(rows) > limit
    return Transcript(session=session, messages=[transcript_message(m) for m in rows[:limit]], truncated=truncated,
                      next_index=rows[limit].index if truncated else None, first_index=from_index)


# -- analytics -----------------------------------------------------------------------------------------

def latency_percentile(histogram: list[int], fraction: float) -> float | None:
    """The `fraction` quantile (0..1) of the latencies counted in `histogram`, in ms, or None when empty.

    Method: find the bucket holding the nearest rank ceil(fraction x N); assuming its c values spread
    evenly, the k-th of them sits at (k - 0.5) / c of the way from the bucket's lower to its upper bound
    (a lone value reads as the bucket's middle). The last, open bucket reports its lower bound. The value
    returned is always inside the bucket of the true nearest-rank value: off by less than its width.
    """
    total = sum(histogram)
    if total == 0:
        return None
    rank = max(1, -(-fraction * total // 1))  # ceil, at least the first value
    seen = 0
    for i, count in enumerate(histogram):
        if count and seen + count >= rank:
            lower = 0 if i == 0 else LATENCY_BUCKETS_MS[i - 1]
            if i >= len(LATENCY_BUCKETS_MS):
                return float(lower)
            upper = LATENCY_BUCKETS_MS[i]
            return lower + (upper - lower) * (rank - seen - 0.5) / count
        seen += count
    return None


@dataclass
class AnalyticsFilters:
    day_from: date
    day_to: date
    bot: Bot | None = None
    channel: str = ""

    @property
    def days(self) -> list[date]:
        return [self.day_from + timedelta(days=n) for n in range((self.day_to - self.day_from).days + 1)]


def _merge(target: list[int], source: list[int]) -> None:
    for i, value in enumerate(source or []):
        if i < len(target):
            target[i] += value


def _cost(tokens: list[int], price: ModelPrice | None) -> float | None:
    if price is None:
        return None
    return (tokens[0] * price.prompt + tokens[1] * price.completion) / 1_000_000


def _json_pair_sums(rows: QuerySet[DailyStat]) -> list[tuple[str, int, str, int, int]]:
    """("tools" | "tokens_by_model", bot id, key, sum of first, sum of second) over the rows' {key: [a, b]}
    columns, summed by PostgreSQL (decoding ~1,800 JSON documents in Python took longer than the query)."""
    base = rows.values("id").query.sql_with_params()
    table = DailyStat._meta.db_table
    parts = []
    for column in ("tools", "tokens_by_model"):
        parts.append(f"""SELECT '{column}', d.bot_id, e.key, sum((e.value->>0)::bigint), sum((e.value->>1)::bigint)
            FROM {table} d CROSS JOIN LATERAL jsonb_each(d.{column}) e
            WHERE d.id IN ({base[0]}) AND jsonb_typeof(e.value) = 'array'
            GROUP BY d.bot_id, e.key""")  # noqa: S608 - our table, columns and Django's own compiled query
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(parts), [*base[1], *base[1]])
        return [(c, b, k, int(x or 0), int(y or 0)) for c, b, k, x, y in cursor.fetchall()]


def analytics_overview(filters: AnalyticsFilters) -> dict[str, Any]:
    """Everything the analytics page shows for the range, as JSON-ready values (also the charts' data)."""
    rows = DailyStat.objects.filter(day__gte=filters.day_from, day__lte=filters.day_to)
    if filters.bot is not None:
        rows = rows.filter(bot=filters.bot)
    if filters.channel:
        rows = rows.filter(channel=filters.channel)
    buckets = len(LATENCY_BUCKETS_MS) + 1
    counters = ("messages", "user_messages", "bot_messages", "sessions", "new_sessions", "active_users",
                "llm_answers", "cached_answers", "offline_answers", "unanswered", "prompt_tokens",
                "completion_tokens", "tool_calls", "tool_errors", "latency_count", "latency_sum_ms")
    # Tuples, not model instances: a 90-day range of 5 bots on 4 channels is ~1,800 rows, and building
    # models for them cost more than the query.
    json_sums = _json_pair_sums(rows)
    rows = list(rows.order_by("day").values_list("day", "bot_id", "channel", "latency_histogram", *counters))
    bot_names = dict(Bot.objects.filter(pk__in={row[1] for row in rows}).values_list("pk", "name"))
    per_day: dict[date, list[int]] = {d: [0] * len(counters) for d in filters.days}
    per_day_histogram: dict[date, list[int]] = {d: [0] * buckets for d in filters.days}
    bots: dict[str, dict[str, Any]] = {}
    tools: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    channels: dict[str, int] = defaultdict(int)
    prices = model_prices_for_bots(Bot.objects.filter(pk__in=bot_names))
    messages_at = counters.index("messages")
    prompt_at, completion_at = counters.index("prompt_tokens"), counters.index("completion_tokens")
    for day, bot_id, channel, histogram, *values in rows:
        if day in per_day:
            per_day[day] = [a + b for a, b in zip(per_day[day], values, strict=True)]
            if histogram:
                per_day_histogram[day] = [a + b for a, b in zip(per_day_histogram[day], histogram, strict=False)]
        channels[channel] += values[messages_at]
        name = bot_names[bot_id]
        bot = bots.setdefault(name, {"bot": name, "messages": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                     "cost": 0.0, "unpriced_tokens": 0, "models": defaultdict(lambda: [0, 0])})
        bot["messages"] += values[messages_at]
        bot["prompt_tokens"] += values[prompt_at]
        bot["completion_tokens"] += values[completion_at]
    for column, bot_id, key, first, second in json_sums:
        if column == "tools":
            _merge(tools[key], [first, second])
        else:
            _merge(bots[bot_names[bot_id]]["models"][key], [first, second])
    totals: dict[str, Any] = dict(zip(counters, (sum(column) for column in zip(*per_day.values(), strict=True)),
                                      strict=True))
    totals["histogram"] = [sum(column) for column in zip(*per_day_histogram.values(), strict=True)]
    for name, bot in bots.items():
        for model, pair in bot["models"].items():
            cost = _cost(pair, prices.get((name, model)))
            if cost is None:
                bot["unpriced_tokens"] += pair[0] + pair[1]
            else:
                bot["cost"] += cost
        bot["cost"] = round(bot["cost"], 6)
        bot["models"] = {m: {"prompt_tokens": p[0], "completion_tokens": p[1],
                             "price": vars(price) if (price := prices.get((name, m))) else None}
                         for m, p in sorted(bot["models"].items())}
    answers = totals["llm_answers"]
    summary = {name: totals[name] for name in counters}
    summary.update(
        cache_hit_rate=(totals["cached_answers"] / answers) if answers else None,
        latency_p50=latency_percentile(totals["histogram"], 0.50),
        latency_p95=latency_percentile(totals["histogram"], 0.95),
        latency_p99=latency_percentile(totals["histogram"], 0.99),
        latency_mean=(totals["latency_sum_ms"] / totals["latency_count"]) if totals["latency_count"] else None,
        distinct_users=_distinct_users(filters),
        cost=round(sum(b["cost"] for b in bots.values()), 6),
        unpriced_tokens=sum(b["unpriced_tokens"] for b in bots.values()),
    )
    series = {
        "days": [d.isoformat() for d in filters.days],
        **{name: [per_day[d][counters.index(name)] for d in filters.days]
           for name in ("messages", "user_messages", "sessions", "new_sessions", "active_users", "llm_answers",
                        "cached_answers", "unanswered", "prompt_tokens", "completion_tokens", "tool_calls")},
        "latency_p50": [latency_percentile(per_day_histogram[d], 0.50) for d in filters.days],
        "latency_p95": [latency_percentile(per_day_histogram[d], 0.95) for d in filters.days],
    }
    questions = top_questions(filters)
    return {
        "range": {"from": filters.day_from.isoformat(), "to": filters.day_to.isoformat(),
                  "bot": filters.bot.name if filters.bot else "", "channel": filters.channel},
        "summary": summary,
        "series": series,
        "bots": sorted(bots.values(), key=lambda b: -(b["prompt_tokens"] + b["completion_tokens"])),
        "tools": [{"tool": name, "calls": pair[0], "errors": pair[1]}
                  for name, pair in sorted(tools.items(), key=lambda item: (-item[1][0], item[0]))],
        "channels": [{"channel": name, "messages": n} for name, n in sorted(channels.items(), key=lambda i: -i[1])],
        "top_questions": questions[0],
        "unanswered_questions": questions[1],
        "latency_buckets_ms": list(LATENCY_BUCKETS_MS),
        "latency_histogram": totals["histogram"],
    }


def _distinct_users(filters: AnalyticsFilters) -> int:
    """Distinct chat users with a session active in the range (sessions carry their user; messages do not)."""
    start, end = day_bounds(filters.day_from, filters.day_to)
    sessions = ChatSession.objects.filter(last_activity__gte=start, created_at__lt=end)
    if filters.bot is not None:
        sessions = sessions.filter(bot=filters.bot)
    if filters.channel:
        sessions = sessions.filter(channel=filters.channel)
    return sessions.aggregate(n=Count("user_id", distinct=True))["n"] or 0


def top_questions(filters: AnalyticsFilters, *, limit: int = TOP_QUESTIONS) -> tuple[list[dict], list[dict]]:
    """The most asked and the most often unanswered normalised questions of the range, in one pass over the
    daily question rows (grouped once, ranked twice)."""
    table = DailyQuestion._meta.db_table
    where, params = ["day >= %s", "day <= %s"], [filters.day_from, filters.day_to]
    if filters.bot is not None:
        where.append("bot_id = %s")
        params.append(filters.bot.pk)
    sql = f"""
        SELECT text, asked, unanswered, by_asked, by_unanswered FROM (
          SELECT text, asked, unanswered,
                 row_number() OVER (ORDER BY asked DESC, text) AS by_asked,
                 row_number() OVER (ORDER BY unanswered DESC, asked DESC, text) AS by_unanswered
          FROM (SELECT text, sum(asked) AS asked, sum(unanswered) AS unanswered FROM {table}
                WHERE {' AND '.join(where)} GROUP BY text) grouped
        ) ranked
        WHERE by_asked <= %s OR (unanswered > 0 AND by_unanswered <= %s)"""  # noqa: S608 - table name and fixed clauses
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, limit, limit])
        rows = cursor.fetchall()
    top = [{"text": t, "asked": int(a), "unanswered": int(u)} for t, a, u, ra, _ in sorted(rows, key=lambda r: r[3])
           if ra <= limit]
    unanswered = [{"text": t, "asked": int(a), "unanswered": int(u)}
                  for t, a, u, _, ru in sorted(rows, key=lambda r: r[4]) if u > 0 and ru <= limit]
    return top, unanswered
