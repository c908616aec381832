"""Indexing tasks on queue `index`: thin wrappers over apps.kb.indexing (idempotent per document ETag)."""

from datetime import timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from apps.kb.embeddings import EmbeddingError
from apps.kb.indexing import document_index, document_index_give_up
from apps.kb.services import documents_requeue_stale
from apps.tenants.celery import PlatformTask, each_ready_tenant
from gbplatform.celery import app

# An embedding service that is down gets this many tries, spaced out, before the document shows the error.
EMBEDDING_RETRIES = 5
RETRY_BACKOFF_MAX_S = 300


@app.task(bind=True, name="kb.document_index", max_retries=EMBEDDING_RETRIES, when_not_ready="skip")
def document_index_task(self, document_id: int, etag: str) -> str:
    try:
        return document_index(document_id=document_id, etag=etag).status
    except EmbeddingError as exc:
        if self.request.retries >= self.max_retries:
            document_index_give_up(document_id=document_id, etag=etag, message=f"embedding failed: {exc}")
            raise
        raise self.retry(exc=exc, countdown=min(RETRY_BACKOFF_MAX_S, 2 ** (self.request.retries + 2))) from exc
    except SoftTimeLimitExceeded:
        document_index_give_up(document_id=document_id, etag=etag, message="indexing took too long")
        raise


@app.task(name="kb.requeue_stale", base=PlatformTask)
def documents_requeue_stale_task() -> int:
    """Beat: in every ready tenant, queue again the documents whose indexing task was lost."""
    older_than = timedelta(seconds=settings.KB_INDEX_STALE_S)
    return each_ready_tenant(lambda: documents_requeue_stale(older_than=older_than), what="kb.requeue_stale")
