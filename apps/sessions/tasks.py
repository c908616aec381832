"""Celery tasks of the chat: resuming a dialog suspended at WAIT when it is due."""

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
