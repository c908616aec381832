"""Indexing tasks on queue `index`: thin wrappers over apps.kb.indexing (idempotent per document ETag)."""

from apps.kb.embeddings import EmbeddingError
from apps.kb.indexing import document_index
from gbplatform.celery import app

# An embedding service that is down gets this many tries, spaced out, before the document shows the error.
EMBEDDING_RETRIES = 5


@app.task(
    name="kb.document_index",
    queue="index",
    autoretry_for=(EmbeddingError,),
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=EMBEDDING_RETRIES,
)
def document_index_task(document_id: int, etag: str) -> str:
    return document_index(document_id=document_id, etag=etag).status
