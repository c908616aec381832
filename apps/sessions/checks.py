"""Whether PostgreSQL admits the connections the web processes may open under chat load.

Each web process keeps a database connection per chat pool thread (apps.sessions.consumers:
CHAT_TURN_THREADS for turns, CHAT_QUICK_THREADS for connects and replays) plus Django's own for pages. An
operator who raises WEB_PROCESSES or CHAT_TURN_THREADS past what the server admits would find out under load,
when turns fail with "too many clients". This says so when a web process starts (gbplatform.asgi, in the
log) and in `manage.py check --database default`, with the figures to change.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core import checks

logger = logging.getLogger(__name__)

# Connections of a web process besides its two chat pools: Django's thread for pages and admin views, and
# the health report's probe.
WEB_PROCESS_OTHER_CONNECTIONS = 2
# Left for everything else that connects: Celery workers and beat, migrations, an operator's psql. Their
# number is the deployment's; below this margin the web processes alone would fill the server.
OTHER_CLIENTS_RESERVE = 20


def web_processes() -> int:
    """The web processes of this deployment (gbplatform.serve tells its children; else its default)."""
    from gbplatform import serve

    try:
        return serve.processes_default()
    except SystemExit:  # a malformed WEB_PROCESSES: serve refuses it with its own message
        return 1


def web_connections_per_process() -> int:
    return int(settings.CHAT_TURN_THREADS) + int(settings.CHAT_QUICK_THREADS) + WEB_PROCESS_OTHER_CONNECTIONS


def connection_budget_problem(processes: int, using: str = "default") -> str | None:
    """What is wrong with the database's connection limit for `processes` web processes, or None."""
    from django.db import connections

    with connections[using].cursor() as cursor:
        cursor.execute("SELECT current_setting('max_connections')::int, "
                       "current_setting('superuser_reserved_connections')::int")
        max_connections, reserved = cursor.fetchone()
    admitted = max_connections - reserved
    per_process = web_connections_per_process()
    needed = processes * per_process + OTHER_CLIENTS_RESERVE
    if admitted >= needed:
        return None
    return (f"PostgreSQL admits {admitted} connections (max_connections {max_connections} minus "
            f"{reserved} reserved), but {processes} web process(es) may open {processes * per_process} under "
            f"chat load ({per_process} each: CHAT_TURN_THREADS {settings.CHAT_TURN_THREADS} and the chat's other "
            f"pools) and {OTHER_CLIENTS_RESERVE} are kept for workers and tools: turns will fail with "
            f"'too many clients'. Raise max_connections to at least {needed + reserved}, put a pooler in front, "
            f"or lower WEB_PROCESSES or CHAT_TURN_THREADS.")


def connection_budget_log() -> None:
    """At a web process's start (in the background): a warning in the log when the budget does not fit."""
    try:
        problem = connection_budget_problem(web_processes())
    except Exception as exc:  # noqa: BLE001 - the database may still be starting; requests will report it
        logger.info("chat: connection budget not checked (%s)", exc)
        return
    finally:
        from django.db import connection

        connection.close()  # this thread's connection is not needed again
    if problem:
        logger.warning("chat: %s", problem)


@checks.register(checks.Tags.database)
def check_connection_budget(app_configs=None, databases=None, **kwargs) -> list[checks.CheckMessage]:
    if not databases or "default" not in databases:
        return []
    try:
        problem = connection_budget_problem(web_processes())
    except Exception:  # noqa: BLE001 - an unreachable database is reported by Django's own checks
        return []
    return [checks.Warning(problem, id="chat.W001")] if problem else []


def turn_slots_problem() -> str | None:
    """What is wrong with CHAT_TURNS_PER_TENANT against the pool it shares out, or None."""
    per_tenant, threads = int(settings.CHAT_TURNS_PER_TENANT), int(settings.CHAT_TURN_THREADS)
    if per_tenant < 1:
        return (f"CHAT_TURNS_PER_TENANT is {per_tenant}: taken as 1 (with none, no tenant's chat turn would ever "
                "start). Set it to 1 or more.")
    if per_tenant >= threads:
        return (f"CHAT_TURNS_PER_TENANT ({per_tenant}) is not below CHAT_TURN_THREADS ({threads}): one tenant whose "
                "model hangs can hold every turn thread of a web process and stop every other tenant's chat. Keep "
                "it well below (a quarter by default).")
    return None


@checks.register()
def check_turn_slots(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    problem = turn_slots_problem()
    return [checks.Warning(problem, id="chat.W002")] if problem else []
