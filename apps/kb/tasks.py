"""Indexing tasks on queue `index`: thin wrappers over apps.kb.indexing (idempotent per document ETag)."""

from datetime import timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from apps.kb.indexing import (
    document_index,
    document_index_give_up,
    document_index_retrying,
    index_failure_message,
)
from apps.kb.services import documents_requeue_stale
from apps.tenants.celery import PlatformTask, each_ready_tenant
from gbplatform.celery import app

# A run that raises (an embedding service or the vector store down, a database hiccup) gets this many more
# tries, spaced out, before the document shows the error as failed. Without a bound and a recorded reason, the
# document stayed pending with no error, the stale sweep re-ran it, and after MAX_INDEX_ATTEMPTS it was blamed
# on the file ("may crash the indexer").
INDEX_RETRIES = 5
RETRY_BACKOFF_MAX_S = 300


@app.task(bind=True, name="kb.document_index", max_retries=INDEX_RETRIES, when_not_ready="skip")
def document_index_task(self, document_id: int, etag: str) -> str:
    try:
        return document_index(document_id=document_id, etag=etag).status
    except SoftTimeLimitExceeded:
        document_index_give_up(document_id=document_id, etag=etag, message="indexing took too long")
        raise
    except Exception as exc:
        message = index_failure_message(exc)
        if self.request.retries >= self.max_retries:
            document_index_give_up(document_id=document_id, etag=etag, message=message)
            raise
        document_index_retrying(document_id=document_id, etag=etag, message=message)
        raise self.retry(exc=exc, countdown=min(RETRY_BACKOFF_MAX_S, 2 ** (self.request.retries + 2))) from exc


@app.task(name="kb.requeue_stale", base=PlatformTask)
def documents_requeue_stale_task() -> int:
    """Beat: in every ready tenant, queue again the documents whose indexing task was lost."""
    older_than = timedelta(seconds=settings.KB_INDEX_STALE_S)
    return each_ready_tenant(lambda: documents_requeue_stale(older_than=older_than), what="kb.requeue_stale")
