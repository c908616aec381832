"""Reading the audit log: search for the console, CSV export for auditors.

Failure modes prevented:
- CSV formula injection (OWASP): a cell starting with =, +, -, @, tab or carriage return is prefixed with
  a quote, so a crafted username or summary cannot run as a formula when an auditor opens the export.
- An export that loads the whole log in memory: `audit_event_csv_chunks` reads the rows in keyset chunks
  (newest first, `EXPORT_CHUNK_SIZE` a query), each inside the tenant's schema, one chunk at a time; the
  console serves it with apps.core.streaming.tenant_streaming_response.
- Reading another tenant's events: every query runs in the connection's current (tenant) schema only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from django.db.models import Q, QuerySet

from apps.compliance.models import AuditEvent
from apps.core.streaming import CsvLines, tenant_chunks

# Cells a spreadsheet would evaluate (OWASP CSV injection): neutralised with a leading apostrophe.
CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
CSV_COLUMNS = ("id", "at", "actor", "actor_id", "action", "object_type", "object_id", "summary", "ip", "request_id")
# Rows fetched per round trip while exporting: bounded memory on a large log.
EXPORT_CHUNK_SIZE = 2000


def audit_event_search(
    *,
    action: str = "",
    actor: str = "",
    object_type: str = "",
    object_id: str = "",
    text: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[AuditEvent]:
    """Events of the current tenant, newest first, filtered by whatever is given.

    `action` ending in "." matches a family ("auth." for every sign-in event); `text` searches the
    summary and object id.
    """
    events = AuditEvent.objects.all()
    if action:
        events = events.filter(action__startswith=action) if action.endswith(".") else events.filter(action=action)
    if actor:
        events = events.filter(actor=actor)
    if object_type:
        events = events.filter(object_type=object_type)
    if object_id:
        events = events.filter(object_id=object_id)
    if text:
        events = events.filter(Q(summary__icontains=text) | Q(object_id__icontains=text))
    if since is not None:
        events = events.filter(at__gte=since)
    if until is not None:
        events = events.filter(at__lt=until)
    return events


def _csv_cell(value: object) -> str:
    text = "" if value is None else value.isoformat() if isinstance(value, datetime) else str(value)
    return "'" + text if text.startswith(CSV_FORMULA_PREFIXES) else text


def _csv_event_line(lines: CsvLines, event: AuditEvent) -> str:
    return lines.line([_csv_cell(getattr(event, column)) for column in CSV_COLUMNS])


def audit_event_csv_lines(events: Iterable[AuditEvent]) -> Iterator[str]:
    """The events as CSV text, header first, one line per event."""
    lines = CsvLines()
    yield lines.line(CSV_COLUMNS)
    if isinstance(events, QuerySet):
        events = events.iterator(chunk_size=EXPORT_CHUNK_SIZE)
    for event in events:
        yield _csv_event_line(lines, event)


def audit_event_csv_chunks(schema: str, events: QuerySet[AuditEvent]) -> Iterator[str]:
    """`events` (a search, any order given is replaced by newest first) as CSV text for a streamed download:
    the header, then one item per keyset chunk of `EXPORT_CHUNK_SIZE` events, each read in `schema`. The
    same text as `audit_event_csv_lines` of the search ordered by ("-at", "-id")."""
    lines = CsvLines()
    yield lines.line(CSV_COLUMNS)
    newest_first = events.order_by("-at", "-id")

    def fetch(last: tuple[datetime, int] | None) -> tuple[str, tuple[datetime, int] | None]:
        page = newest_first
        if last is not None:
            at, pk = last
            # `at <= last` alone bounds the scan of the `at` index; ties on `at` continue below the last id.
            page = page.filter(Q(at__lte=at) & (Q(at__lt=at) | Q(id__lt=pk)))
        rows = list(page[:EXPORT_CHUNK_SIZE])
        following = (rows[-1].at, rows[-1].pk) if len(rows) == EXPORT_CHUNK_SIZE else None
        return "".join(_csv_event_line(lines, event) for event in rows), following

    yield from tenant_chunks(schema, fetch)


def audit_event_export_csv(events: Iterable[AuditEvent]) -> str:
    """The events as one CSV document."""
    return "".join(audit_event_csv_lines(events))
