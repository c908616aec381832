"""Indexing one KB document: read it from the drive, extract, chunk, embed, store, all or nothing.

Idempotent per (document, ETag): a redelivered or duplicated task finds `indexed_etag == etag` and does
nothing, and a task for an ETag that is no longer current steps aside for the newer one (a run refused by
the document's lock is covered by the holder, which queues newer content when it lets go). A re-index of the
same content (the bot's embedding model changed) moves the document's `index_generation`: a run that started
before it stores nothing and ends "superseded", and its hand-over queues the re-index. The chunks of a
document are replaced in one transaction, so a search never sees half of a re-index, and a worker killed
mid-way leaves the previous chunks in place (its PostgreSQL advisory lock dies with its connection, and
the redelivered task starts over). Progress (chunks embedded / total) is saved as it goes, for the console.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import F, Q

from apps.bots.selectors import bot_config_values
from apps.core.locks import tenant_lock_try
from apps.drive.backends import DriveObjectTooLarge, drive_error_detail
from apps.drive.storage import tenant_drive
from apps.kb.chunking import DEFAULT_MAX_CHUNKS, chunk_document, chunk_settings_from_config, document_text
from apps.kb.embeddings import EmbeddingConfigError, EmbeddingError, embedding_provider_for
from apps.kb.extract import EXTRACT_MAX_TEXT_CHARS, ExtractionError, extract
from apps.kb.models import Chunk, Document
from apps.kb.vectorstores import ChunkRecord, PgVectorStore, VectorStoreError, vector_store_for_settings

logger = logging.getLogger(__name__)

# Chunks embedded per model call: large enough to keep the model busy, small enough that progress moves
# and one batch's vectors stay small in memory.
EMBED_BATCH_SIZE = 32
# Error text kept on a failed document (shown in the console with a retry button).
MAX_ERROR_CHARS = 1000
# The largest file any extractor accepts (apps.kb.extract's per-type limits go up to this): a bigger one is
# refused from its listed size before it is read, and the read itself is bounded by it (the file may have been
# replaced since it was listed), so a huge upload never lands in a worker's memory.
INDEX_READ_MAX_BYTES = 50 * 1024 * 1024
# Runs that may start for one ETag: the embedding retries of the task plus a few worker crashes. Beyond
# this the file itself is the likely cause (it keeps killing workers), so it fails instead of looping.
MAX_INDEX_ATTEMPTS = 10


@dataclass(frozen=True)
class IndexOutcome:
    status: str  # indexed | unchanged | superseded | locked | missing | failed
    chunks: int = 0
    error: str = ""
    etag: str = ""  # the content the run worked on (the task's ETag, or the current one without it)
    generation: int | None = None  # the document's index_generation when the run started (None: not read)


def document_index(*, document_id: int, etag: str | None = None) -> IndexOutcome:
    """Index the document if its current content is not indexed yet (the Celery task calls this).

    A run that finds the document's lock taken steps aside at once ("locked"). It may carry newer content than
    the run holding the lock, which then ends "superseded"; so the holder, once it has let go of the lock,
    queues the document's current content if that is still waiting. Otherwise the newer content waited for
    the stale sweep (KB_INDEX_STALE_S and more) with the old chunks still served.
    """
    with tenant_lock_try(f"kb-index:{document_id}") as acquired:
        if not acquired:
            return IndexOutcome("locked")  # the holder hands newer content on when it is done (below)
        outcome = _index(document_id, etag)
    if outcome.status != "missing":
        _hand_over_newer_content(document_id, outcome.etag, outcome.generation)
    return outcome


def _hand_over_newer_content(document_id: int, handled_etag: str, handled_generation: int | None) -> None:
    """After a run let go of the lock: queue the current content if it is pending and not what the run did
    (another ETag, or the same one to index again under a newer generation: a new embedding model).
    Read after the release, so a run refused while this one held the lock is always seen (its registration
    committed before its task was queued); a duplicate task is harmless (idempotent per ETag)."""
    from apps.kb.services import document_index_enqueue

    newer = ~Q(etag=handled_etag)
    if handled_generation is not None:
        newer |= ~Q(index_generation=handled_generation)
    current = (Document.objects.filter(newer, pk=document_id, status=Document.Status.PENDING)
               .values_list("etag", flat=True).first())
    if current is None:
        return
    try:
        document_index_enqueue(document_id=document_id, etag=current)
    except Exception:  # noqa: BLE001 - the broker is down: the stale sweep queues it later; this run's outcome stands
        logger.warning("kb: could not queue newer content of document %s", document_id, exc_info=True)


def index_failure_message(exc: BaseException) -> str:
    """What a document shows when a run raised: the real reason, for the console (and its retry button)."""
    if isinstance(exc, EmbeddingError):
        return f"embedding failed: {exc}"[:MAX_ERROR_CHARS]
    # Without the server's file paths (a drive read refused) or service URLs: the tenant's console shows it.
    return f"indexing failed ({type(exc).__name__}): {drive_error_detail(exc) or 'no details'}"[:MAX_ERROR_CHARS]


def document_index_retrying(*, document_id: int, etag: str, message: str) -> None:
    """A run raised and the task will try again: keep the document pending but show why, so it is not a
    silent wait (and a later 'started N times' failure can say what went wrong)."""
    Document.objects.filter(pk=document_id, etag=etag).exclude(status=Document.Status.INDEXED).update(
        error=message[:MAX_ERROR_CHARS]
    )


def document_index_give_up(*, document_id: int, etag: str, message: str) -> None:
    """The task will not try again (retries exhausted, time limit): show the document as failed, with why,
    instead of leaving it pending for the stale sweep to queue again and again."""
    Document.objects.filter(pk=document_id, etag=etag).exclude(status=Document.Status.INDEXED).update(
        status=Document.Status.FAILED, error=message[:MAX_ERROR_CHARS]
    )


def _fail(document: Document, message: str) -> IndexOutcome:
    # Only the content and generation this run read: a re-index queued meanwhile stays pending (and is handed
    # over), instead of showing a failure of the old embedding settings.
    Document.objects.filter(pk=document.pk, etag=document.etag, index_generation=document.index_generation).update(
        status=Document.Status.FAILED, error=message[:MAX_ERROR_CHARS]
    )
    return IndexOutcome("failed", error=message, etag=document.etag, generation=document.index_generation)


def _too_large_message(size: int) -> str:
    return f"file is {size} bytes; documents over {INDEX_READ_MAX_BYTES} are not indexed"


def _index(document_id: int, etag: str | None) -> IndexOutcome:
    document = Document.objects.select_related("kb__bot").filter(pk=document_id).first()
    if document is None:
        return IndexOutcome("missing")
    generation = document.index_generation
    if etag is not None and document.etag != etag:
        return IndexOutcome("superseded", etag=etag, generation=generation)
    # INDEXED is only ever written by a run of the current generation (checked under the row lock below).
    if document.indexed_etag == document.etag and document.status == Document.Status.INDEXED:
        return IndexOutcome("unchanged", etag=document.etag, generation=generation)
    if document.index_attempts >= MAX_INDEX_ATTEMPTS:
        last = f"; the last run said: {document.error}" if document.error else ""
        return _fail(document, f"indexing was started {document.index_attempts} times without finishing "
                               f"(the file may crash the indexer); replace the file to try again{last}")
    # Counted before the work, committed at once: a run that kills the worker still counts.
    Document.objects.filter(pk=document.pk).update(index_attempts=F("index_attempts") + 1)
    bot = document.kb.bot
    config = bot_config_values(bot)
    # The provider first: settings that cannot work fail the document now, with the reason, before the file is
    # read (they were retried five times per document, each re-reading and re-extracting its file).
    try:
        provider = embedding_provider_for(config)
    except EmbeddingConfigError as exc:
        return _fail(document, index_failure_message(exc))
    if document.size > INDEX_READ_MAX_BYTES:
        return _fail(document, _too_large_message(document.size))
    # Bounded by what the drive holds now, not by the size registered: the file may have been replaced by a far
    # larger one since. The drive refuses it from its size without reading it (or stops one byte past the limit
    # if it grows during the read); a file too large now is not transient, so it fails rather than retries.
    try:
        data = tenant_drive().read(document.path, max_bytes=INDEX_READ_MAX_BYTES)
    except FileNotFoundError:
        return _fail(document, "the file is no longer in the drive")
    except DriveObjectTooLarge as exc:
        return _fail(document, _too_large_message(exc.size))
    try:
        extracted = extract(document.path.rsplit("/", 1)[-1], data)
        size, overlap = chunk_settings_from_config(config)
        chunks = chunk_document(extracted, size=size, overlap=overlap)
    except (ExtractionError, ValueError) as exc:
        return _fail(document, str(exc))
    if not chunks:
        return _fail(document, "no text to index")
    notice = _truncation_notice(chunks, len(document_text(extracted)), text_cut=extracted.truncated,
                                read_only=extracted.read_only)

    Document.objects.filter(pk=document.pk).update(chunks_total=len(chunks), chunks_done=0, error="")
    # An EmbeddingError (like any outside service's failure) is raised: the task records it and retries. The
    # settings' own errors (vectors of another size than embedding-dimensions) would fail every retry alike.
    vectors: list[list[float]] = []
    for start in range(0, len(chunks), EMBED_BATCH_SIZE):
        batch = chunks[start : start + EMBED_BATCH_SIZE]
        try:
            vectors.extend(provider.embed([chunk.text for chunk in batch]))
        except EmbeddingConfigError as exc:
            return _fail(document, index_failure_message(exc))
        Document.objects.filter(pk=document.pk).update(chunks_done=len(vectors))

    records = [
        ChunkRecord(document_id=document.pk, document_path=document.path, kb=document.kb.name, index=c.index,
                    text=c.text, start_char=c.start_char, end_char=c.end_char, page=c.page, heading=c.heading,
                    vector=vector)
        for c, vector in zip(chunks, vectors, strict=True)
    ]
    store = vector_store_for_settings()
    try:
        with transaction.atomic():
            current = Document.objects.select_for_update().filter(pk=document.pk).first()
            # Changed, removed or queued again (a new embedding model) while we embedded: these vectors are
            # not the document's; the hand-over queues what is current.
            if current is None or current.etag != document.etag or current.index_generation != generation:
                return IndexOutcome("superseded", etag=document.etag, generation=generation)
            store.replace_document(tenant=connection.schema_name, bot=bot.name, bot_id=bot.pk,
                                   kb_id=document.kb_id, document_id=document.pk, records=records,
                                   model=provider.model)
            if not isinstance(store, PgVectorStore):
                _replace_text_rows(document, records)
            current.status, current.indexed_etag, current.error = Document.Status.INDEXED, document.etag, notice
            current.chunks_done = current.chunks_total = len(records)
            current.save(update_fields=["status", "indexed_etag", "error", "chunks_done", "chunks_total",
                                        "updated_at"])
    except VectorStoreError as exc:
        # The store refused these vectors (e.g. a model's size it cannot hold): the same run would fail again.
        return _fail(document, f"the vector store refused the chunks: {exc}")
    return IndexOutcome("indexed", chunks=len(records), etag=document.etag, generation=generation)


def _truncation_notice(chunks: list, text_chars: int, *, text_cut: bool = False, read_only: str = "") -> str:
    """What an indexed document's row says when the chunk limit (or the extraction's text budget, or a PDF's page
    limit: `read_only` says what was read) left part of its text out ("" otherwise): upstream drops the rest
    silently, and the admin believed the whole file searchable."""
    read = read_only or f"the first {EXTRACT_MAX_TEXT_CHARS:,} characters of the file's text"
    if text_cut and (len(chunks) < DEFAULT_MAX_CHUNKS or chunks[-1].end_char >= text_chars):
        return f"only {read} were read; split the file to make the rest searchable"
    if len(chunks) < DEFAULT_MAX_CHUNKS or not text_chars or chunks[-1].end_char >= text_chars:
        return ""
    covered = int(100 * chunks[-1].end_char / text_chars)
    of_what = f"of {read}, which were read" if text_cut else "of the text"
    return (f"only the first {len(chunks)} chunks are searchable (about {covered}% {of_what}): a document keeps "
            f"at most {DEFAULT_MAX_CHUNKS}; split the file to make the rest searchable")


def _replace_text_rows(document: Document, records: list[ChunkRecord]) -> None:
    """With an outside vector store, PostgreSQL still keeps the text: lexical search and citations."""
    Chunk.objects.filter(document=document).delete()
    Chunk.objects.bulk_create(
        Chunk(document=document, kb_id=document.kb_id, bot_id=document.kb.bot_id, index=r.index, text=r.text,
              start_char=r.start_char, end_char=r.end_char, page=r.page, heading=r.heading[:300])
        for r in records
    )
