"""Realistic chat history for benchmarks, written with COPY: shared by bench_analytics and bench_console.

generate() writes users, sessions and messages of the given bots over DAYS days: users ask questions from a
skewed pool, bots answer with a realistic mix of cache hits, offline answers, tool calls and KB citations.
"""

from __future__ import annotations

import io
import json
import random
import uuid
from datetime import UTC, datetime, timedelta

DAYS = 90
CHANNELS = (("web", 0.6), ("whatsapp", 0.25), ("email", 0.1), ("teams", 0.05))
USERS = 20_000
SEED = 20261121
# Rows per COPY write: large enough to keep round trips few, small enough to bound the client's buffer.
COPY_BATCH = 50_000

VERBS = ("reset", "change", "cancel", "find", "download", "renew", "update", "pay", "track", "return", "book",
         "open", "close", "transfer", "activate", "configure", "install", "share", "delete", "export")
NOUNS = ("password", "order", "invoice", "subscription", "account", "card", "address", "ticket", "report",
         "contract", "vacation", "payslip", "laptop", "printer", "vpn", "mailbox", "meeting", "refund",
         "delivery", "plan", "badge", "license", "backup", "phone", "profile")
TOOLS = ("get-price", "create-ticket", "lookup-order", "book-room", "check-balance")
MODELS = ("gpt-4o-mini", "gpt-4o", "llama-3.1-8b")


def _questions() -> list[str]:
    return [f"How do I {verb} my {noun}?" for verb in VERBS for noun in NOUNS]  # 500 distinct


def _copy(cursor, table: str, columns: tuple[str, ...], lines: list[str]) -> None:
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        buffer = io.StringIO()
        for n, line in enumerate(lines, 1):
            buffer.write(line)
            if n % COPY_BATCH == 0:
                copy.write(buffer.getvalue())
                buffer = io.StringIO()
        copy.write(buffer.getvalue())


def generate(schema: str, bot_ids: list[int], messages: int, sessions: int) -> None:
    """Users, sessions and messages written with COPY (text format; no value holds a tab or backslash).
    The first bot gets the most sessions (exponential spread over bot_ids)."""
    from django.db import connection

    rng = random.Random(SEED)
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=DAYS)
    questions = _questions()
    weights = [1 / (rank + 1) ** 1.1 for rank in range(len(questions))]  # Zipf-like: a few questions dominate
    users = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(USERS)]
    user_lines = [f"{u}\tvisitor-{n}\t\t\tt\t{{}}\t{start.isoformat()}\n" for n, u in enumerate(users)]
    # Messages per session: 2..38 around the mean messages / sessions, the last session takes the remainder.
    mean = messages / sessions
    lengths = [max(2, int(rng.triangular(2, 2 * mean - 2, mean))) for _ in range(sessions)]
    missing = messages - sum(lengths)
    step = 1 if missing > 0 else -1
    n = 0
    while missing:  # spread the rounding over many sessions, one message each
        if lengths[n % sessions] + step >= 2:
            lengths[n % sessions] += step
            missing -= step
        n += 1
    channel_names = [c for c, _ in CHANNELS]
    channel_weights = [w for _, w in CHANNELS]
    session_lines, message_lines = [], []
    for length in lengths:
        sid = str(uuid.UUID(int=rng.getrandbits(128)))
        # More traffic lately (growth) and in working hours.
        day = int(DAYS * rng.random() ** 0.8)
        began = start + timedelta(days=day, hours=rng.choice((8, 9, 10, 11, 13, 14, 15, 16, 19, 21)),
                                  minutes=rng.randrange(60), seconds=rng.randrange(60))
        bot = bot_ids[min(len(bot_ids) - 1, int(rng.expovariate(0.7)))]
        channel = rng.choices(channel_names, channel_weights)[0]
        moment = began
        total_tokens = 0
        question = ""
        for index in range(length):
            moment += timedelta(seconds=rng.randrange(5, 90))
            if index % 2 == 0:
                question = rng.choices(questions, weights)[0]
                text = question if rng.random() < 0.7 else question.lower().rstrip("?")
                message_lines.append(f"{sid}\t{index}\t1\t1\t{text}\t0\t\t\\N\t{{}}\t{moment.isoformat()}\n")
                continue
            meta: dict = {}
            tokens, model, latency = 0, "", "\\N"
            roll = rng.random()
            if roll < 0.05:
                meta = {"offline": True, "citations": []}
                content = "The language model is unavailable right now, so I can only quote the knowledge base."
            else:
                model = MODELS[bot % len(MODELS)]
                cached = rng.random() < 0.3
                prompt = 0 if cached else rng.randrange(300, 3000)
                completion = 0 if cached else rng.randrange(20, 400)
                tokens = prompt + completion
                total_tokens += tokens
                latency = str(int(rng.lognormvariate(3.5, 0.5)) if cached else int(rng.lognormvariate(7.2, 0.6)))
                citations = [{"n": n, "source": f"docs/{rng.choice(NOUNS)}.md", "kb": "main", "page": None,
                              "score": round(rng.uniform(0.005, 0.05), 4)} for n in range(1, rng.randrange(0, 4) + 1)]
                meta = {"citations": citations, "cached": cached, "provider": "openai",
                        "prompt_tokens": prompt, "completion_tokens": completion}
                if rng.random() < 0.1:
                    meta["tool_calls"] = [{"name": rng.choice(TOOLS), "arguments": {"q": question[:20]},
                                           "result": "ok", "error": None if rng.random() < 0.95 else "timeout"}]
                content = f"Here is how to handle that: {question.lower()} Follow the steps in the portal."
            message_lines.append(f"{sid}\t{index}\t2\t2\t{content}\t{tokens}\t{model}\t{latency}\t"
                                 f"{json.dumps(meta)}\t{moment.isoformat()}\n")
        session_lines.append(f"{sid}\t{rng.choice(users)}\t{bot}\t{channel}\t{question[:60]}\t\t{began.isoformat()}\t"
                             f"{moment.isoformat()}\t{length}\t{total_tokens}\t{{}}\n")
    with connection.cursor() as django_cursor:
        cursor = django_cursor.cursor  # psycopg's own cursor, for COPY
        _copy(cursor, f"{schema}.chat_chatuser",
              ("id", "username", "email", "external_id", "is_anonymous", "memory", "created_at"), user_lines)
        _copy(cursor, f"{schema}.chat_chatsession",
              ("id", "user_id", "bot_id", "channel", "title", "thread_key", "created_at", "last_activity",
               "message_count", "total_tokens", "state"), session_lines)
        _copy(cursor, f"{schema}.chat_message",
              ("session_id", "index", "role", "message_type", "content", "tokens", "model", "latency_ms", "meta",
               "created_at"), message_lines)
        cursor.execute(f"ANALYZE {schema}.chat_chatuser, {schema}.chat_chatsession, {schema}.chat_message")
