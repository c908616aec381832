"""Registering and removing KB documents as the drive changes; called by the DriveMonitor.

A registered document is `pending` until the indexer (apps.kb.indexing, queue `index`) has extracted,
chunked and embedded it; the task is queued only after the registering transaction commits. Removing a
document removes its chunks with it (and its vectors from an outside store, under the row's lock so that an
indexer cannot write them back).
"""

from __future__ import annotations

from datetime import timedelta

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from apps.bots.models import Bot
from apps.kb.models import Document, KnowledgeBase


def _enqueue_index(document_id: int, etag: str) -> None:
    # Robust: with the broker down the document is registered (pending) and the stale sweep queues it later;
    # the drive scan or upload that registered it must not fail after its commit.
    transaction.on_commit(lambda: document_index_enqueue(document_id=document_id, etag=etag), robust=True)


@transaction.atomic
def document_register(*, bot: Bot, kb_name: str, path: str, etag: str, size: int) -> Document:
    """New or changed file in `<bot>.gbkb/<kb_name>/`: (re)queue it for indexing. Idempotent per ETag."""
    kb, _ = KnowledgeBase.objects.get_or_create(bot=bot, name=kb_name)
    document = Document.objects.filter(path=path).first()
    if document is not None and document.etag == etag and document.kb_id == kb.pk:
        return document
    if document is None:
        document = Document(kb=kb, path=path)
    document.kb, document.etag, document.size = kb, etag, size
    document.status, document.error = Document.Status.PENDING, ""
    document.chunks_done = document.chunks_total = document.index_attempts = 0
    document.save()
    _enqueue_index(document.pk, etag)
    return document


@transaction.atomic
def document_retry(*, document: Document) -> None:
    """A failed document, queued again as it is (after fixing the cause, e.g. the embedding service)."""
    Document.objects.filter(pk=document.pk).update(status=Document.Status.PENDING, error="", index_attempts=0)
    _enqueue_index(document.pk, document.etag)


def documents_requeue_stale(*, older_than: timedelta) -> int:
    """Queue again documents left `pending` longer than `older_than` (their task was lost, e.g. with a
    killed worker: Redis returns its message only after the visibility timeout). Safe to repeat: indexing
    is idempotent per ETag, so a document queued twice is indexed once."""
    stale = Document.objects.filter(status=Document.Status.PENDING, updated_at__lt=timezone.now() - older_than)
    count = 0
    for document_id, etag in stale.values_list("pk", "etag"):
        document_index_enqueue(document_id=document_id, etag=etag)
        count += 1
    return count


def documents_reindex(*, bot) -> int:
    """Index every document of `bot` again, queued after commit: its embedding model changed, and vectors of
    two models cannot be compared (search reads only the current model's; the old ones serve no query).

    The content is the same, so the ETag cannot tell a run of the old model from one of the new: the document's
    `index_generation` moves on, and a run that started before (with the old model) ends "superseded" instead
    of storing its vectors and marking them current (apps.kb.indexing)."""
    documents = Document.objects.filter(kb__bot=bot)
    queued = list(documents.values_list("pk", "etag"))
    documents.update(status=Document.Status.PENDING, indexed_etag="", index_attempts=0, error="",
                     index_generation=F("index_generation") + 1)
    for document_id, etag in queued:
        transaction.on_commit(lambda document_id=document_id, etag=etag: document_index_enqueue(
            document_id=document_id, etag=etag), robust=True)  # pending either way: the stale sweep
    return len(queued)


def document_index_enqueue(*, document_id: int, etag: str) -> None:
    """Queue the indexing of the document's content `etag` now (callers in a transaction use on_commit)."""
    from apps.kb.tasks import document_index_task

    document_index_task.apply_async(args=[document_id, etag], queue="index")


@transaction.atomic
def document_remove(*, path: str) -> bool:
    """The file is gone from the drive (or erased for a data subject): forget the document, its chunks and
    its vectors.

    The document's row is locked first. The indexer writes an outside store's points only while it holds that
    lock (apps.kb.indexing), so an indexer already writing finishes before the points are deleted here, and one
    that comes later finds no row and writes nothing. Without the lock, an indexer committing while this ran
    wrote its points after their delete and its chunk rows under the document's delete, so the removal failed
    (a foreign-key violation) and a drive sync or a data-subject erasure had to be retried. The points are
    deleted inside the transaction, not after it commits: if the store is down the removal fails as a whole
    and is retried, instead of forgetting the row and leaving its points behind for good.
    """
    from apps.kb.vectorstores import PgVectorStore, vector_store_for_settings

    document = Document.objects.select_for_update(of=("self",)).select_related("kb__bot").filter(path=path).first()
    if document is None:
        return False
    store = vector_store_for_settings()
    if not isinstance(store, PgVectorStore):  # pgvector rows go with the document (cascade)
        store.delete_document(tenant=connection.schema_name, bot=document.kb.bot.name, document_id=document.pk)
    document.delete()
    return True
