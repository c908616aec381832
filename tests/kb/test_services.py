"""Removing a document while an indexer writes it: no vector of a removed document may stay searchable.

Real PostgreSQL row locks between two threads (each with its own connection), and the real Qdrant store talking
to our Qdrant server on loopback, selected the way production selects it (QDRANT_URL, QDRANT_API_KEY).
"""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, connections
from django_tenants.utils import schema_context

from apps.bots.models import Bot
from apps.drive.storage import tenant_drive
from apps.kb.indexing import document_index
from apps.kb.models import Document
from apps.kb.services import document_register, document_remove
from apps.kb.vectorstores import QdrantStore, vector_store_for_settings

TEXT = ("Harbor tents are waterproof. " * 60).encode()
# Upper bound for each step of the choreography; a step normally takes well under a second (the embedding
# of the document, the longest, a few seconds on a slow machine).
STEP_TIMEOUT_S = 60


def _waiting_on_a_lock(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # activity is otherwise frozen for the transaction
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return row is not None and row[0] == "Lock"


@pytest.mark.django_db(transaction=True)
def test_a_document_removed_while_its_indexer_writes_leaves_no_vectors(canary_tenants, local_storage, qdrant_platform,
                                                                      monkeypatch):
    store = vector_store_for_settings()  # the one the indexer and the removal get (one per server and process)
    assert isinstance(store, QdrantStore)
    schema = canary_tenants.a.schema_name
    with schema_context(schema):
        bot = Bot.objects.create(name="race-kb")
        path = "race-kb.gbai/race-kb.gbkb/faq/tents.txt"
        document = document_register(bot=bot, kb_name="faq", path=path, etag=tenant_drive().write(path, TEXT),
                                     size=len(TEXT))

    indexer_writing = threading.Event()  # the indexer holds the row lock and is about to write its points
    remover_pid: list[int] = []
    remover_deleted_points = threading.Event()
    outcome: list[str] = []
    errors: list[BaseException] = []
    real_replace, real_delete = store.replace_document, store.delete_document

    def replace_when_the_remover_is_under_way(**kwargs):
        indexer_writing.set()
        # Write only once the removal has reached the document: it either deleted the points already (no lock
        # taken) or waits for the row lock this indexer holds.
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while not remover_deleted_points.is_set() and not (remover_pid and _waiting_on_a_lock(remover_pid[0])):
            assert time.monotonic() < deadline, "the removal never reached the document"
            time.sleep(0.02)
        real_replace(**kwargs)

    def delete_and_say_so(**kwargs):
        real_delete(**kwargs)
        remover_deleted_points.set()

    monkeypatch.setattr(store, "replace_document", replace_when_the_remover_is_under_way)
    monkeypatch.setattr(store, "delete_document", delete_and_say_so)

    def index() -> None:
        try:
            with schema_context(schema):
                outcome.append(document_index(document_id=document.pk).status)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
            indexer_writing.set()
        finally:
            connections.close_all()

    indexer = threading.Thread(target=index)
    indexer.start()
    try:
        assert indexer_writing.wait(STEP_TIMEOUT_S)
        with schema_context(schema):
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                remover_pid.append(cursor.fetchone()[0])
            assert document_remove(path=path)
        indexer.join(STEP_TIMEOUT_S)
        assert errors == [] and outcome == ["indexed"]
        with schema_context(schema):
            assert not Document.objects.filter(path=path).exists()
        assert store.count(tenant=schema, bot="race-kb") == 0  # nothing of the removed document is searchable
        # ... though the indexer's points did reach Qdrant.
        assert [r.status for r in qdrant_platform.requests if r.method == "PUT" and r.path.endswith("/points")] == [200]
    finally:
        indexer.join(STEP_TIMEOUT_S)
        with schema_context(schema):
            Bot.objects.filter(name="race-kb").delete()
