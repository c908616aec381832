"""A tenant task used by the Celery isolation tests (registered on the real app, run by a real worker)."""

from django.db import connection

from gbplatform.celery import app


@app.task(name="tests.read_canary_bot", ignore_result=False)
def read_canary_bot() -> dict:
    from apps.bots.models import Bot

    return {"bot": Bot.objects.get(pk=1).name, "schema": connection.schema_name}
