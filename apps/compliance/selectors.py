"""Reading the audit log: search for the console, CSV export for auditors.

Failure modes prevented:
- CSV formula injection (OWASP): a cell starting with =, +, -, @, tab or carriage return is prefixed with
  a quote, so a crafted username or summary cannot run as a formula when an auditor opens the export.
- An export that loads the whole log in memory: rows are streamed in chunks (`iterator`).
- Reading another tenant's events: every query runs in the connection's current (tenant) schema only.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import datetime

from django.db.models import Q, QuerySet

from apps.compliance.models import AuditEvent

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


def audit_event_csv_lines(events: Iterable[AuditEvent]) -> Iterator[str]:
    """The events as CSV text, header first, one line per event (for a streaming download)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        line = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return line

    writer.writerow(CSV_COLUMNS)
    yield flush()
    if isinstance(events, QuerySet):
        events = events.iterator(chunk_size=EXPORT_CHUNK_SIZE)
    for event in events:
        writer.writerow([_csv_cell(getattr(event, column)) for column in CSV_COLUMNS])
        yield flush()


def audit_event_export_csv(events: Iterable[AuditEvent]) -> str:
    """The events as one CSV document."""
    return "".join(audit_event_csv_lines(events))
