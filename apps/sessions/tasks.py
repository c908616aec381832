"""Celery tasks of the chat: resuming a dialog suspended at WAIT when it is due (and beat's sweep queuing again
the resumes that were lost); summarising the older part of a long conversation (episodic memory)."""

from __future__ import annotations

from celery import shared_task
from django.db import connection

from apps.sessions import events
from apps.sessions.models import ChatSession
from apps.tenants.celery import PlatformTask, each_ready_tenant


@shared_task(name="chat.resume_wait", ignore_result=True)
def resume_wait(session_id: str, token: str) -> None:
    from apps.sessions.turns import turn_execute

    if not ChatSession.objects.filter(pk=session_id).exists():
        return  # erased since
    turn_execute(session_id, text="", wait_token=token, sink=events.GroupSink(connection.schema_name, session_id))


@shared_task(name="chat.sweep_lost_waits", base=PlatformTask)
def waits_requeue_lost_task() -> int:
    """Beat, every minute (queue `dispatch`): in every ready tenant, queue again the resumes of dialogs at a WAIT
    whose own resume was lost."""
    from apps.sessions.services import waits_requeue_lost

    return each_ready_tenant(waits_requeue_lost, what="chat.sweep_lost_waits")


@shared_task(name="chat.compact_history", ignore_result=True, when_not_ready="skip")
def compact_history(session_id: str) -> None:
    """Idempotent: it re-checks that a summary is due and that no other one was written meanwhile."""
    from apps.sessions.memory import compact

    compact(session_id)
