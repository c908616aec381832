"""Automation tests work on committed rows: the tick, the Celery workers (separate processes) and the test
all see the same data, as in production (see `outside_test_transaction`)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection, connections
from django_tenants.utils import schema_context

from apps.automation.models import JobRun
from apps.bots import services as bot_services
from apps.bots.models import Bot, BotSchedule, BotScript
from tests.support.llm_fake import llm_platform, llm_server  # noqa: F401 - shared fixtures

ROOT = Path(__file__).resolve().parents[2]
# Worker processes start in a few seconds; a run they pick up finishes in well under a second.
WAIT_S = 45


def outside_test_transaction(test):
    """Run a test's body on a database connection of its own, in autocommit, as the tick and the workers
    do: what it writes is committed at once and seen by worker processes, and the tick's durable
    transaction and on-commit queueing behave as in production. (The test's own connection sits in
    pytest-django's transaction, which must stay: the database is only set up for marked tests.)
    Afterwards the scripts the test deployed (and their runs) are removed from both canary tenants."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        outcome: dict[str, BaseException] = {}

        def body() -> None:
            try:
                test(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
                outcome["error"] = exc
            finally:
                try:
                    _cleanup(kwargs["canary_tenants"])
                finally:
                    connections.close_all()

        thread = threading.Thread(target=body)
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]

    return run


def _cleanup(canary_tenants) -> None:
    for tenant in (canary_tenants.a, canary_tenants.b):
        with schema_context(tenant.schema_name):
            for script in BotScript.objects.filter(path__contains="/automation-test/"):
                bot_services.script_remove(bot=script.bot, path=script.path)
            JobRun.objects.filter(script_name__startswith="at-").delete()
            # Mail the scheduled scripts sent (committed rows of the canary bot): later tests count mail.
            from apps.mail.models import OutgoingMail

            OutgoingMail.objects.all().delete()


def deploy(schema: str, name: str, source: str) -> BotScript:
    """Store and compile a script of the tenant's canary bot (as the DriveMonitor does), committed."""
    assert name.startswith("at-")
    with schema_context(schema):
        bot = Bot.objects.get()
        path = f"{bot.name}.gbai/{bot.name}.gbdialog/automation-test/{name}.bas"
        script = bot_services.script_sync(bot=bot, path=path, data=source.encode())
        assert script.ok, script.errors
        return script


def schedules_align_ids(*schemas: str) -> None:
    """Make the next BotSchedule id the same in every schema (sequences move in other tests' rolled-back
    transactions), so two tenants get schedules with the same primary key."""
    with connection.cursor() as cursor:
        values = []
        for schema in schemas:
            cursor.execute(f"SELECT last_value FROM {schema}.bots_botschedule_id_seq")  # noqa: S608 - our schemas
            values.append(cursor.fetchone()[0])
        target = max(values) + 1
        for schema in schemas:
            cursor.execute("SELECT setval(%s, %s)", [f"{schema}.bots_botschedule_id_seq", target])


def wait_for(predicate, timeout: float = WAIT_S, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def runs(schema: str, **filters) -> list[JobRun]:
    with schema_context(schema):
        return list(JobRun.objects.filter(**filters).order_by("scheduled_for", "id"))


def schedule_of(schema: str, script: BotScript) -> BotSchedule:
    with schema_context(schema):
        return BotSchedule.objects.get(script=script)


def _worker(env: dict, name: str, log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "gbplatform", "worker", "-Q", "dispatch,jobs,mail", "-c", "1", "-n",
             f"{name}@%h", "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT,
        )


@pytest.fixture(scope="module")
def job_workers(canary_tenants, tmp_path_factory):
    """Two real worker processes on queues `dispatch` and `jobs` (and `mail`, for what scheduled scripts send), as
    production's, on the test database and the run's Redis. Bots may name a loopback mail server (the tests'
    aiosmtpd)."""
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "gbplatform.settings.test",
        "DATABASE_URL": f"postgresql://{db['USER']}@{quote(db['HOST'], safe='')}:{db['PORT']}/{db['NAME']}",
        "S3_ACCESS_KEY": "",
        "QDRANT_URL": "",
        "MEDIA_ROOT": str(tmp_path_factory.mktemp("media")),
        "MAIL_ALLOW_PRIVATE_HOSTS": "true",
    }
    log = tmp_path_factory.mktemp("workers") / "workers.log"
    workers = [_worker(env, f"jobs{i}", log) for i in (1, 2)]
    yield workers
    for worker in workers:
        if worker.poll() is None:
            os.killpg(worker.pid, 15)
    for worker in workers:
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, 9)
            worker.wait()
