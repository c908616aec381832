"""Writing to the audit log: `audit_record`, the one way an event gets in.

Failure modes prevented:
- A forged client address in the log: the IP is REMOTE_ADDR, the peer the server actually talked to.
  X-Forwarded-For is read only when that peer is a proxy listed in settings.TRUSTED_PROXY_IPS, and then
  the right-most address not added by a trusted proxy is taken (left-most entries are client-controlled).
- Log injection and unbounded rows: free text (a typed username, a summary) has control characters
  replaced and is cut to a fixed length before it is stored.
- Silently losing events: writing never swallows a database error (ASVS 16.5.3: fail closed); the only
  place without a log is the public schema, which has no audit table, and that is an explicit error here.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest
from django_tenants.utils import get_public_schema_name

from apps.compliance.models import (
    ACTION_MAX_LENGTH,
    ACTOR_MAX_LENGTH,
    ACTOR_SYSTEM,
    OBJECT_ID_MAX_LENGTH,
    OBJECT_TYPE_MAX_LENGTH,
    REQUEST_ID_MAX_LENGTH,
    AuditEvent,
)
from apps.core.logging import request_id_current

# A summary is a before/after description, not a data dump: 4000 characters keep a row small.
SUMMARY_MAX_LENGTH = 4000
# C0/C1 control characters (newlines included) would let a value forge lines in exports and log views.
CONTROL_CHARS_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Action names are dotted lower-case words: a typo or user input as an action is a programming error.
ACTION_RE = re.compile(r"^[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+$")


class AuditLogUnavailable(Exception):
    """The current schema has no audit log (the public schema or no tenant selected)."""


def audit_log_available() -> bool:
    """Whether the connection's current schema is a tenant schema, the only place with an audit table."""
    schema = getattr(connection, "schema_name", "")
    return bool(schema) and schema != get_public_schema_name()


def audit_text_clean(value: object, *, max_length: int) -> str:
    """Free text as stored: control characters replaced by a space, cut to `max_length`."""
    return CONTROL_CHARS_RE.sub(" ", str(value))[:max_length]


def request_client_ip(request: HttpRequest | None) -> str | None:
    """The client's address: REMOTE_ADDR, or the nearest untrusted X-Forwarded-For hop behind a trusted proxy."""
    if request is None:
        return None
    peer = _ip_or_none(request.META.get("REMOTE_ADDR", ""))
    trusted = set(getattr(settings, "TRUSTED_PROXY_IPS", ()))
    if peer is None or peer not in trusted:
        return peer
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _ip_or_none(hop)
        if address is None:
            return peer  # a malformed hop: trust nothing left of it
        if address not in trusted:
            return address
    return peer


def _ip_or_none(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def _actor(actor: Any) -> tuple[str, int | None]:
    if actor is None:
        return ACTOR_SYSTEM, None
    if isinstance(actor, str):
        return audit_text_clean(actor, max_length=ACTOR_MAX_LENGTH) or ACTOR_SYSTEM, None
    if getattr(actor, "is_authenticated", False):
        return audit_text_clean(actor.get_username(), max_length=ACTOR_MAX_LENGTH), actor.pk
    return "anonymous", None


def _summary(summary: str | dict | list) -> str:
    if isinstance(summary, dict | list):
        # Keys sorted so equal summaries read the same. JSON escapes C0 controls itself; the cleaning
        # catches the C1 range it leaves as is.
        text = json.dumps(summary, sort_keys=True, default=str, ensure_ascii=False)
        return audit_text_clean(text, max_length=SUMMARY_MAX_LENGTH)
    return audit_text_clean(summary, max_length=SUMMARY_MAX_LENGTH)


def audit_record(
    *,
    action: str,
    actor: Any = None,
    object_type: str = "",
    object_id: str | int = "",
    summary: str | dict | list = "",
    request: HttpRequest | None = None,
) -> AuditEvent:
    """Append one event to the current tenant's audit log and return it.

    `actor` is a user (its username and id are stored), a name, or None for the platform itself
    ("system"); without an actor, the request's user is used ("anonymous" when not signed in). IP and
    request id come from `request` (or the current request context for the id).
    """
    if not ACTION_RE.match(action) or len(action) > ACTION_MAX_LENGTH:
        raise ValueError(f"audit action {action!r} must be dotted lower-case words, e.g. 'bot.deploy'")
    if not audit_log_available():
        raise AuditLogUnavailable(f"no audit log in schema {getattr(connection, 'schema_name', '')!r}")
    if actor is None and request is not None and getattr(request, "user", None) is not None:
        actor = request.user  # an anonymous visitor is recorded as "anonymous", not as the platform
    actor_name, actor_pk = _actor(actor)
    request_id = (getattr(request, "request_id", "") if request is not None else "") or request_id_current()
    return AuditEvent.objects.create(
        actor=actor_name,
        actor_id=actor_pk,
        action=action,
        object_type=audit_text_clean(object_type, max_length=OBJECT_TYPE_MAX_LENGTH),
        object_id=audit_text_clean(object_id, max_length=OBJECT_ID_MAX_LENGTH),
        summary=_summary(summary),
        ip=request_client_ip(request),
        request_id=audit_text_clean(request_id, max_length=REQUEST_ID_MAX_LENGTH),
    )
