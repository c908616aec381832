"""Sign-in events into the audit log, from Django's auth signals (connected in ComplianceConfig.ready).

Failure modes prevented:
- Brute force and account takeover going unseen (ASVS 16.3.1): every login, logout and failed login of a
  tenant's console is recorded with the typed username, the client IP and the request id.
- The public host's admin breaking on a missing table: the public schema has no audit log, so its sign-in
  events go to the structured log instead of failing the login.
- A password in the log: only the username of the failed attempt is kept (Django already masks the
  credentials it passes; we read nothing else from them).
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import connection
from django.http import HttpRequest

from apps.compliance.models import ACTOR_MAX_LENGTH
from apps.compliance.services import audit_log_available, audit_record, audit_text_clean, request_client_ip

logger = logging.getLogger(__name__)

# dispatch_uid: connecting twice (tests re-running ready()) must not record every event twice.
DISPATCH_PREFIX = "apps.compliance.audit."


def _record(*, action: str, actor: Any, request: HttpRequest | None, summary: str = "") -> None:
    if audit_log_available():
        audit_record(action=action, actor=actor, object_type="user", object_id=_username(actor), summary=summary,
                     request=request)
        return
    logger.info(
        "auth event outside a tenant",
        extra={"action": action, "actor": _username(actor), "ip": request_client_ip(request),
               "schema": getattr(connection, "schema_name", "")},
    )


def _username(actor: Any) -> str:
    if actor is None:
        return ""
    if isinstance(actor, str):
        return audit_text_clean(actor, max_length=ACTOR_MAX_LENGTH)
    return audit_text_clean(actor.get_username(), max_length=ACTOR_MAX_LENGTH)


def on_user_logged_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    _record(action="auth.login", actor=user, request=request)


def on_user_logged_out(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    # `user` is None when the session had no authenticated user; there is nothing to attribute then.
    if user is None:
        return
    _record(action="auth.logout", actor=user, request=request)


def on_user_login_failed(sender: Any, credentials: dict, request: HttpRequest | None = None, **kwargs: Any) -> None:
    typed = credentials.get("username") or ""
    _record(action="auth.login_failed", actor=typed or "anonymous", request=request,
            summary="wrong username or password")


def auth_signals_connect() -> None:
    user_logged_in.connect(on_user_logged_in, dispatch_uid=DISPATCH_PREFIX + "login")
    user_logged_out.connect(on_user_logged_out, dispatch_uid=DISPATCH_PREFIX + "logout")
    user_login_failed.connect(on_user_login_failed, dispatch_uid=DISPATCH_PREFIX + "login_failed")
