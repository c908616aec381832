"""Celery tasks of the chat: resuming a dialog suspended at WAIT when it is due; summarising the older part of a
long conversation (episodic memory)."""

from __future__ import annotations

from celery import shared_task
from django.db import connection

from apps.sessions import events
from apps.sessions.models import ChatSession


@shared_task(name="chat.resume_wait", ignore_result=True)
def resume_wait(session_id: str, token: str) -> None:
    from apps.sessions.turns import turn_execute

    if not ChatSession.objects.filter(pk=session_id).exists():
        return  # erased since
    turn_execute(session_id, text="", wait_token=token, sink=events.GroupSink(connection.schema_name, session_id))


@shared_task(name="chat.compact_history", ignore_result=True, when_not_ready="skip")
def compact_history(session_id: str) -> None:
    """Idempotent: it re-checks that a summary is due and that no other one was written meanwhile."""
    from apps.sessions.memory import compact

    compact(session_id)
