"""A tenant task used by the Celery isolation tests (registered on the real app, run by a real worker)."""

from django.db import connection

from gbplatform.celery import app


@app.task(name="tests.read_canary_bot", ignore_result=False, when_not_ready="skip")
def read_canary_bot() -> dict:
    from apps.bots.models import Bot

    return {"bot": Bot.objects.get(pk=1).name, "schema": connection.schema_name}


# Nothing consumes this queue: a test reads what was queued on it.
POSTPONED_QUEUE = "tests-postponed"


@app.task(name="tests.postponed_probe", queue=POSTPONED_QUEUE)
def postponed_probe(marker: str) -> str:
    return marker
