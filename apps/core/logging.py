"""Structured logs: one JSON object per line carrying the request id and the tenant.

The ids live in context variables, so they follow a request through sync and async code alike; the
filter copies them onto every record and the formatter writes JSON. Messages are never interpolated with
user input by us, and the JSON encoder escapes control characters, so a crafted value cannot forge lines.
"""

from __future__ import annotations

import contextvars
import logging

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="")


def request_context_set(*, request_id: str | None = None, tenant: str | None = None) -> None:
    if request_id is not None:
        _request_id.set(request_id)
    if tenant is not None:
        _tenant.set(tenant)


def request_context_clear() -> None:
    _request_id.set("")
    _tenant.set("")


def request_id_current() -> str:
    return _request_id.get()


class RequestContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = _request_id.get()
        if not getattr(record, "tenant", None):
            record.tenant = _tenant.get()
        return True


class JsonFormatter(_JsonFormatter):
    def add_fields(self, log_record, record, message_dict) -> None:
        super().add_fields(log_record, record, message_dict)
        log_record.setdefault("request_id", getattr(record, "request_id", ""))
        log_record.setdefault("tenant", getattr(record, "tenant", ""))
