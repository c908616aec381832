"""Transcript and conversation-list exports (JSON, CSV), streamed in chunks.

Failure modes prevented:
- Formula injection (OWASP CSV injection): a cell starting with =, +, -, @, tab or carriage return is
  prefixed with a quote, so a user's message cannot run as a formula in a spreadsheet.
- Reading the wrong tenant while streaming: the body is produced after the view returned, outside the
  tenant middleware's activation. Each chunk is read and formatted inside `schema_context(<the request's
  schema>)`, entered and left around that chunk only (apps.core.streaming.tenant_chunks).
- Unbounded memory: rows are read in keyset chunks of `EXPORT_CHUNK_ROWS`; each generator here yields one
  chunk's text at a time, and the views serve it with apps.core.streaming.tenant_streaming_response, which
  reads the next chunk only when the previous one has been handed to the server (under ASGI too, where a
  plain generator would be consumed whole before the first byte).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from apps.analytics.selectors import (
    ConversationFilters,
    Transcript,
    TranscriptMessage,
    conversation_list,
    transcript_message,
)
from apps.core.streaming import CsvLines, tenant_chunks
from apps.sessions.models import ChatSession, Message

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


class _CsvLines(CsvLines):
    def line(self, values: list | tuple) -> str:
        return super().line([csv_cell(v) for v in values])


def _transcript_page(session: ChatSession, last: int | None) -> tuple[list[TranscriptMessage], int | None]:
    """One keyset chunk of the session's messages after index `last`, and the index to continue from (None: done)."""
    after = -1 if last is None else last
    rows = list(Message.objects.filter(session=session, index__gt=after).order_by("index")[:EXPORT_CHUNK_ROWS])
    done = len(rows) < EXPORT_CHUNK_ROWS
    return [transcript_message(r) for r in rows], (None if done else rows[-1].index)


def _session_header(session: ChatSession) -> dict:
    return {"id": str(session.pk), "bot": session.bot.name, "channel": session.channel,
            "user": session.user.username, "title": session.title, "created_at": session.created_at.isoformat(),
            "last_activity": session.last_activity.isoformat(), "message_count": session.message_count,
            "total_tokens": session.total_tokens}


def transcript_json_chunks(schema: str, transcript: Transcript) -> Iterator[str]:
    """{"session": {...}, "messages": [...]} as JSON text, one message per line, one chunk of messages per item."""
    yield '{"session": ' + json.dumps(_session_header(transcript.session), ensure_ascii=False) + ', "messages": ['
    first = True

    def fetch(last: int | None) -> tuple[str, int | None]:
        nonlocal first
        messages, following = _transcript_page(transcript.session, last)
        parts = []
        for message in messages:
            parts.append(("" if first else ",") + "\n" + json.dumps(message.as_export(), ensure_ascii=False,
                                                                     default=str))
            first = False
        return "".join(parts), following

    yield from tenant_chunks(schema, fetch)
    yield "\n]}\n"


def transcript_csv_lines(schema: str, transcript: Transcript) -> Iterator[str]:
    """The transcript as CSV, header first, one chunk of messages per item."""
    lines = _CsvLines()
    yield lines.line(TRANSCRIPT_CSV_COLUMNS)

    def fetch(last: int | None) -> tuple[str, int | None]:
        messages, following = _transcript_page(transcript.session, last)
        text = []
        for message in messages:
            data = message.as_export()
            text.append(lines.line([data[column] if data[column] != [] else "" for column in TRANSCRIPT_CSV_COLUMNS]))
        return "".join(text), following

    yield from tenant_chunks(schema, fetch)


def conversation_csv_lines(schema: str, filters: ConversationFilters) -> Iterator[str]:
    """The filtered session list as CSV, newest activity first, read by keyset pages; one page per item."""
    lines = _CsvLines()
    yield lines.line(LIST_CSV_COLUMNS)

    def fetch(cursor: str | None) -> tuple[str, str | None]:
        page = conversation_list(filters=filters, cursor=cursor or "", limit=EXPORT_CHUNK_ROWS)
        text = "".join(lines.line([str(session.pk), session.bot.name, session.channel, session.user.username,
                                   session.title, session.created_at, session.last_activity,
                                   session.message_count, session.total_tokens]) for session in page.sessions)
        return text, (page.next_cursor or None)

    yield from tenant_chunks(schema, fetch)
