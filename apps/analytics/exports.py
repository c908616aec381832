"""Transcript and conversation-list exports (JSON, CSV), streamed in chunks.

Failure modes prevented:
- Formula injection (OWASP CSV injection): a cell starting with =, +, -, @, tab or carriage return is
  prefixed with a quote, so a user's message cannot run as a formula in a spreadsheet.
- Reading the wrong tenant while streaming: the body is produced after the view returned, and on an ASGI
  server other requests may switch the thread's connection to their schema between two chunks. Each chunk
  is read inside `schema_context(<the request's schema>)`, entered and left around the read only.
- Unbounded memory: rows are read in keyset chunks and written line by line.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from typing import TypeVar

from django_tenants.utils import schema_context

from apps.analytics.selectors import (
    ConversationFilters,
    Transcript,
    TranscriptMessage,
    conversation_list,
    transcript_message,
)
from apps.sessions.models import ChatSession, Message

T = TypeVar("T")
CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# Rows read per query while streaming: big enough to be quick, small enough to start sending at once.
EXPORT_CHUNK_ROWS = 1000
TRANSCRIPT_CSV_COLUMNS = ("index", "created_at", "role", "type", "content", "model", "tokens", "prompt_tokens",
                          "completion_tokens", "latency_ms", "cached", "offline", "unanswered", "tool_calls",
                          "citations", "error")
LIST_CSV_COLUMNS = ("session", "bot", "channel", "user", "title", "created_at", "last_activity", "messages",
                    "tokens")


def csv_cell(value: object) -> str:
    text = "" if value is None else value if isinstance(value, str) else (
        value.isoformat() if hasattr(value, "isoformat") else
        json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else str(value))
    return "'" + text if text.startswith(CSV_FORMULA_PREFIXES) else text


class _CsvLines:
    def __init__(self) -> None:
        self.buffer = io.StringIO()
        self.writer = csv.writer(self.buffer)

    def line(self, values: list | tuple) -> str:
        self.writer.writerow([csv_cell(v) for v in values])
        text = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        return text


def _chunks(schema: str, fetch: Callable[[object], tuple[list[T], object]]) -> Iterator[T]:
    """Rows from `fetch(state) -> (rows, next_state or None)`, each call made inside the tenant's schema."""
    state: object = None
    while True:
        with schema_context(schema):
            rows, state = fetch(state)
        yield from rows
        if state is None:
            return


def _transcript_rows(schema: str, session: ChatSession) -> Iterator[TranscriptMessage]:
    def fetch(last: object) -> tuple[list[TranscriptMessage], object]:
        after = -1 if last is None else last
        rows = list(Message.objects.filter(session=session, index__gt=after).order_by("index")[:EXPORT_CHUNK_ROWS])
        done = len(rows) < EXPORT_CHUNK_ROWS
        return [transcript_message(r) for r in rows], (None if done else rows[-1].index)

    return _chunks(schema, fetch)


def _session_header(session: ChatSession) -> dict:
    return {"id": str(session.pk), "bot": session.bot.name, "channel": session.channel,
            "user": session.user.username, "title": session.title, "created_at": session.created_at.isoformat(),
            "last_activity": session.last_activity.isoformat(), "message_count": session.message_count,
            "total_tokens": session.total_tokens}


def transcript_json_chunks(schema: str, transcript: Transcript) -> Iterator[str]:
    """{"session": {...}, "messages": [...]} as JSON text, one message per chunk."""
    yield '{"session": ' + json.dumps(_session_header(transcript.session), ensure_ascii=False) + ', "messages": ['
    first = True
    for message in _transcript_rows(schema, transcript.session):
        yield ("" if first else ",") + "\n" + json.dumps(message.as_export(), ensure_ascii=False, default=str)
        first = False
    yield "\n]}\n"


def transcript_csv_lines(schema: str, transcript: Transcript) -> Iterator[str]:
    lines = _CsvLines()
    yield lines.line(TRANSCRIPT_CSV_COLUMNS)
    for message in _transcript_rows(schema, transcript.session):
        data = message.as_export()
        yield lines.line([data[column] if data[column] != [] else "" for column in TRANSCRIPT_CSV_COLUMNS])


def conversation_csv_lines(schema: str, filters: ConversationFilters) -> Iterator[str]:
    """The filtered session list as CSV, newest activity first, read by keyset pages."""
    lines = _CsvLines()
    yield lines.line(LIST_CSV_COLUMNS)

    def fetch(cursor: object) -> tuple[list[ChatSession], object]:
        page = conversation_list(filters=filters, cursor=str(cursor or ""), limit=EXPORT_CHUNK_ROWS)
        return page.sessions, (page.next_cursor or None)

    for session in _chunks(schema, fetch):
        yield lines.line([str(session.pk), session.bot.name, session.channel, session.user.username,
                          session.title, session.created_at, session.last_activity, session.message_count,
                          session.total_tokens])

