"""Kill the indexing worker (SIGKILL) while 200 documents index, start another: every document ends
indexed exactly once, with no lost, duplicated or stuck chunks. Real worker processes, real broker."""

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db.models import Count, Sum
from django_tenants.utils import schema_context

from apps.bots.models import Bot
from apps.drive.storage import tenant_drive
from apps.kb.models import Chunk, Document
from apps.kb.services import document_register, documents_requeue_stale
from apps.tenants.services import tenant_create, tenant_delete

# The test body only reads (inside its transaction, it sees what the workers commit); everything the
# workers need is committed by the module fixture, outside any test transaction.
pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = 200
# The first worker is killed once this many documents are done: well inside the run, never at its end.
KILL_AFTER = 40
DEADLINE_S = 240


def _worker(env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "gbplatform", "worker", "-Q", "index", "-c", "2", "--loglevel",
         "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _indexed(schema: str) -> int:
    with schema_context(schema):
        return Document.objects.filter(status=Document.Status.INDEXED).count()


@pytest.fixture(scope="module")
def crash_tenant(canary_tenants, django_db_blocker, tmp_path_factory):
    media = tmp_path_factory.mktemp("media")
    previous = settings.MEDIA_ROOT, settings.S3_ACCESS_KEY, settings.QDRANT_URL
    settings.MEDIA_ROOT, settings.S3_ACCESS_KEY, settings.QDRANT_URL = media, "", ""
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "gbplatform.settings.test",
        "DATABASE_URL": f"postgresql://{db['USER']}@{quote(db['HOST'], safe='')}:{db['PORT']}/{db['NAME']}",
        "MEDIA_ROOT": str(media),
        "S3_ACCESS_KEY": "",
        "QDRANT_URL": "",
    }
    with django_db_blocker.unblock():
        tenant, _ = tenant_create(name="Crash", domain="crash.test.localhost", admin_username=None)
        with schema_context(tenant.schema_name):
            bot = Bot.objects.create(name="crash")
            drive = tenant_drive()
            for i in range(DOCUMENTS):
                key = f"crash.gbai/crash.gbkb/docs/doc-{i:03}.txt"
                text = f"Document {i} explains topic {i}. " + "Details about the topic follow here. " * 60
                etag = drive.write(key, text.encode())
                document_register(bot=bot, kb_name="docs", path=key, etag=etag, size=len(text))  # commits: queued
        yield tenant, env
        tenant_delete(schema_name=tenant.schema_name)
    settings.MEDIA_ROOT, settings.S3_ACCESS_KEY, settings.QDRANT_URL = previous


def test_documents_are_indexed_exactly_once_across_a_killed_worker(crash_tenant):
    tenant, env = crash_tenant
    schema = tenant.schema_name
    workers = [_worker(env)]
    try:
        deadline = time.monotonic() + DEADLINE_S
        while _indexed(schema) < KILL_AFTER and time.monotonic() < deadline:
            time.sleep(0.2)
        _kill(workers[0])
        at_kill = _indexed(schema)
        assert KILL_AFTER <= at_kill < DOCUMENTS, "the worker must die in the middle of the run"
        workers.append(_worker(env))
        with schema_context(schema):
            # The killed worker's own messages sit in Redis' unacked set until the visibility timeout; the
            # sweep that beat runs every few minutes queues their documents again, here at once.
            documents_requeue_stale(older_than=timedelta(0))
        while _indexed(schema) < DOCUMENTS and time.monotonic() < deadline:
            time.sleep(0.5)
        with schema_context(schema):
            states = dict(Document.objects.values_list("status").annotate(n=Count("id")))
            assert states == {Document.Status.INDEXED: DOCUMENTS}, states
            totals = Document.objects.aggregate(total=Sum("chunks_total"))["total"]
            assert Chunk.objects.count() == totals  # nothing duplicated, nothing missing
            per_document = Chunk.objects.values("document").annotate(n=Count("id"))
            expected = dict(Document.objects.values_list("pk", "chunks_total"))
            assert len(per_document) == DOCUMENTS
            assert all(row["n"] == expected[row["document"]] > 0 for row in per_document)
    finally:
        for worker in workers:
            _kill(worker)
