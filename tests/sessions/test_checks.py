"""apps.sessions.checks: the web processes' database connections against what PostgreSQL admits, said at a
web process's start and by `manage.py check --database default`."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connection

from apps.sessions.checks import OTHER_CLIENTS_RESERVE, connection_budget_problem, web_connections_per_process

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


def _admitted() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('max_connections')::int - "
                       "current_setting('superuser_reserved_connections')::int")
        return cursor.fetchone()[0]


def _turn_threads_filling(admitted: int, processes: int) -> int:
    """CHAT_TURN_THREADS at which `processes` web processes need one connection more than is admitted."""
    others = web_connections_per_process() - int(django_settings.CHAT_TURN_THREADS)
    return -(-(admitted + 1 - OTHER_CLIENTS_RESERVE) // processes) - others  # rounded up


def test_processes_that_fit_pass_and_one_connection_too_many_is_named_with_the_fix(settings):
    admitted = _admitted()
    assert connection_budget_problem(1) is None  # the test server (max_connections 300) fits one process
    settings.CHAT_TURN_THREADS = _turn_threads_filling(admitted, 2)
    problem = connection_budget_problem(2)
    assert problem is not None
    assert f"PostgreSQL admits {admitted} connections" in problem
    assert f"CHAT_TURN_THREADS {settings.CHAT_TURN_THREADS}" in problem and "too many clients" in problem
    settings.CHAT_TURN_THREADS -= 1
    assert connection_budget_problem(2) is None


def test_manage_check_with_the_database_warns(settings):
    settings.CHAT_TURN_THREADS = _admitted()  # one process alone would fill the server
    out, err = io.StringIO(), io.StringIO()
    call_command("check", "--database", "default", stdout=out, stderr=err)
    assert "chat.W001" in err.getvalue() + out.getvalue()
    settings.CHAT_TURN_THREADS = 8
    out, err = io.StringIO(), io.StringIO()
    call_command("check", "--database", "default", stdout=out, stderr=err)
    assert "chat.W001" not in err.getvalue() + out.getvalue()


# Imports the ASGI module as daphne does and waits for the start's checks.
PROBE = """
import threading
from gbplatform import asgi
for thread in threading.enumerate():
    if thread.name == "web-startup-checks":
        thread.join(60)
"""


@pytest.mark.parametrize(("threads", "warned"), [("5000", True), ("8", False)])
def test_a_web_process_starting_over_the_budget_says_so_in_its_log(threads, warned):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "gbplatform.settings.test", "CHAT_TURN_THREADS": threads,
           "WEB_PROCESSES": "2", "LOG_LEVEL": "INFO"}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    log = done.stdout + done.stderr
    assert ("too many clients" in log) is warned, log[-2000:]
    assert "connection budget not checked" not in log, log[-2000:]


@pytest.mark.parametrize(("per_tenant", "threads", "expected"), [
    (8, 32, []), (32, 32, ["chat.W002"]), (40, 32, ["chat.W002"]), (0, 32, ["chat.W002"])])
def test_a_per_tenant_turn_cap_that_shares_nothing_out_is_warned_about(settings, per_tenant, threads, expected):
    from django.core.checks import run_checks

    settings.CHAT_TURNS_PER_TENANT, settings.CHAT_TURN_THREADS = per_tenant, threads
    assert [m.id for m in run_checks() if m.id.startswith("chat.")] == expected
