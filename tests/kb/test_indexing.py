"""Indexing a document: idempotent per ETag, atomic replacement, specific failures, removal."""

import pytest
from django_tenants.utils import schema_context

from apps.bots.models import Bot
from apps.drive.storage import tenant_drive
from apps.kb.indexing import document_index
from apps.kb.models import Chunk, Document
from apps.kb.services import document_register, document_remove

pytestmark = pytest.mark.django_db

TEXT = ("Harbor tents are waterproof. " * 60).encode()
# Upper bound for one step of a test that waits on a worker thread (each normally takes a second or two).
WAIT_S = 60


@pytest.fixture
def bot(canary_tenants, local_storage):
    with schema_context(canary_tenants.a.schema_name):
        yield Bot.objects.create(name="shop")


def _document(bot: Bot, name: str, data: bytes) -> Document:
    path = f"shop.gbai/shop.gbkb/faq/{name}"
    etag = tenant_drive().write(path, data)
    return document_register(bot=bot, kb_name="faq", path=path, etag=etag, size=len(data))


def test_indexing_stores_chunks_with_vectors_and_progress(bot):
    document = _document(bot, "tents.txt", TEXT)
    outcome = document_index(document_id=document.pk)
    assert outcome.status == "indexed" and outcome.chunks > 1
    document.refresh_from_db()
    assert document.status == "indexed" and document.chunks_done == document.chunks_total == outcome.chunks
    chunks = list(Chunk.objects.filter(document=document))
    assert len(chunks) == outcome.chunks
    assert all(c.dimensions == 384 and len(c.embedding) == 384 for c in chunks)


def test_a_document_past_the_chunk_limit_says_how_much_is_searchable():
    """Upstream (and we) keep at most 1000 chunks per document and dropped the rest silently. (The notice
    is what document_index stores on the indexed row; embedding 1000 chunks here would take a minute.)"""
    from apps.kb.chunking import DEFAULT_MAX_CHUNKS, chunk_document, document_text
    from apps.kb.extract import extract
    from apps.kb.indexing import _truncation_notice

    paragraph = b"Tents come in many sizes and each one packs down small for carrying in a rucksack. " * 9
    huge = extract("huge.txt", (paragraph + b"\n\n") * 1300)
    chunks = chunk_document(huge)
    assert len(chunks) == DEFAULT_MAX_CHUNKS
    notice = _truncation_notice(chunks, len(document_text(huge)))
    assert notice.startswith("only the first 1000 chunks are searchable (about ") and "split the file" in notice
    small = extract("small.txt", TEXT)
    assert _truncation_notice(chunk_document(small), len(document_text(small))) == ""
    # Text cut by the extraction's budget (EXTRACT_MAX_TEXT_CHARS) is said to be cut, even within the chunks.
    cut = _truncation_notice(chunk_document(small), len(document_text(small)), text_cut=True)
    assert cut.startswith("only the first 5,000,000 characters of the file's text were read")


def test_indexing_the_same_content_twice_changes_nothing(bot):
    document = _document(bot, "tents.txt", TEXT)
    document_index(document_id=document.pk)
    ids = list(Chunk.objects.filter(document=document).values_list("id", flat=True))
    assert document_index(document_id=document.pk).status == "unchanged"
    assert list(Chunk.objects.filter(document=document).values_list("id", flat=True)) == ids


def test_new_content_replaces_every_chunk_and_an_old_task_steps_aside(bot):
    document = _document(bot, "tents.txt", TEXT)
    old_etag = document.etag
    document_index(document_id=document.pk)
    document = _document(bot, "tents.txt", b"Boots need wax twice a year. " * 5)
    assert document_index(document_id=document.pk, etag=old_etag).status == "superseded"
    assert document_index(document_id=document.pk, etag=document.etag).status == "indexed"
    texts = list(Chunk.objects.filter(document=document).values_list("text", flat=True))
    assert texts and all("Boots" in t for t in texts)


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "PDF"),
        ("broken.docx", b"PK\x03\x04 not a docx", "DOCX"),
        ("latin1.txt", "Ação".encode("latin-1") * 10, "UTF-8"),
    ],
)
def test_unreadable_documents_fail_with_a_reason_and_leave_no_chunks(bot, name, data, reason):
    document = _document(bot, name, data)
    outcome = document_index(document_id=document.pk)
    assert outcome.status == "failed"
    document.refresh_from_db()
    assert document.status == "failed" and reason.lower() in document.error.lower()
    assert not Chunk.objects.filter(document=document).exists()


def test_removing_a_document_removes_its_chunks(bot):
    document = _document(bot, "tents.txt", TEXT)
    document_index(document_id=document.pk)
    assert document_remove(path=document.path)
    assert not Chunk.objects.filter(bot=bot).exists()


def test_a_file_over_the_size_limit_fails_before_it_is_read(bot, monkeypatch):
    from apps.kb import indexing

    monkeypatch.setattr(indexing, "INDEX_READ_MAX_BYTES", 100)
    document = _document(bot, "big.txt", TEXT)
    assert document_index(document_id=document.pk).status == "failed"
    document.refresh_from_db()
    assert "not indexed" in document.error and not Chunk.objects.exists()


def test_embedding_outage_retries_then_shows_the_document_failed(bot, settings):
    from apps.bots.models import BotConfig
    from apps.kb.tasks import INDEX_RETRIES, document_index_task
    from gbplatform.localservices import free_port

    settings.LLM_ALLOW_PRIVATE_HOSTS = True  # a model server on loopback, down
    BotConfig.objects.create(bot=bot, key="embedding-url", value=f"http://127.0.0.1:{free_port()}/v1", line=1)
    BotConfig.objects.create(bot=bot, key="embedding-model", value="m", line=2)
    BotConfig.objects.create(bot=bot, key="embedding-dimensions", value="384", line=3)
    document = _document(bot, "tents.txt", TEXT)
    # Run eagerly, Celery performs the retries inline: the result is the state after the last one.
    retried = document_index_task.apply(args=[document.pk, document.etag], retries=INDEX_RETRIES - 1)
    assert retried.state == "FAILURE"
    document.refresh_from_db()
    assert document.status == "failed" and "embedding failed" in document.error
    assert not Chunk.objects.filter(document=document).exists()


def test_a_vector_store_outage_retries_then_shows_the_document_failed_with_the_real_reason(bot, settings):
    from apps.kb.tasks import INDEX_RETRIES, document_index_task
    from gbplatform.localservices import free_port

    settings.QDRANT_URL = f"http://127.0.0.1:{free_port()}"  # Qdrant configured, and down
    document = _document(bot, "tents.txt", TEXT)
    retried = document_index_task.apply(args=[document.pk, document.etag], retries=INDEX_RETRIES - 1)
    assert retried.state == "FAILURE"
    document.refresh_from_db()
    # Not left pending for the stale sweep (which, after 10 runs, blamed the file for crashing the indexer).
    assert document.status == "failed" and document.error.startswith("indexing failed (")
    assert "crash" not in document.error and not Chunk.objects.filter(document=document).exists()


def test_vectors_the_store_refuses_fail_the_document_at_once_with_the_reason(bot, settings, embeddings_server):
    from apps.bots.models import BotConfig
    from apps.kb.vectorstores import MAX_DIMENSIONS

    embeddings_server.dimensions = MAX_DIMENSIONS + 1
    for line, (key, value) in enumerate({"embedding-url": embeddings_server.base_url, "embedding-model": "huge",
                                         "embedding-dimensions": str(MAX_DIMENSIONS + 1)}.items(), 1):
        BotConfig.objects.create(bot=bot, key=key, value=value, line=line)
    document = _document(bot, "tents.txt", TEXT)
    outcome = document_index(document_id=document.pk)
    assert outcome.status == "failed"
    document.refresh_from_db()
    assert document.status == "failed"
    assert document.error == f"the vector store refused the chunks: vector size {MAX_DIMENSIONS + 1} is out of range"


def test_the_attempts_limit_names_the_last_runs_reason(bot):
    from apps.kb.indexing import MAX_INDEX_ATTEMPTS

    document = _document(bot, "tents.txt", TEXT)
    Document.objects.filter(pk=document.pk).update(index_attempts=MAX_INDEX_ATTEMPTS,
                                                   error="indexing failed (OperationalError): server closed")
    assert document_index(document_id=document.pk).status == "failed"
    document.refresh_from_db()
    assert document.error.endswith("the last run said: indexing failed (OperationalError): server closed")


def test_a_document_that_keeps_crashing_the_indexer_fails_instead_of_looping(bot):
    from apps.kb.indexing import MAX_INDEX_ATTEMPTS

    document = _document(bot, "tents.txt", TEXT)
    # Each started run counts, even one whose worker died before it could record anything else.
    Document.objects.filter(pk=document.pk).update(index_attempts=MAX_INDEX_ATTEMPTS)
    assert document_index(document_id=document.pk).status == "failed"
    document.refresh_from_db()
    assert document.status == "failed" and "replace the file" in document.error
    # New content starts the count again.
    document = _document(bot, "tents.txt", TEXT + b" More.")
    assert document.index_attempts == 0
    assert document_index(document_id=document.pk).status == "indexed"


@pytest.mark.django_db(transaction=True)
def test_newer_content_refused_by_the_lock_is_indexed_when_the_holder_lets_go(canary_tenants, local_storage,
                                                                              monkeypatch):
    """Content B arrives while a run indexes content A: B's task finds the lock taken and steps aside, A's run
    ends superseded, and B must still be indexed (not wait for the stale sweep with A's chunks served)."""
    import threading
    import time

    from celery.contrib.testing.worker import start_worker
    from django.db import connections

    from apps.kb import indexing, tasks
    from apps.kb.models import KnowledgeBase
    from gbplatform.celery import app

    schema = canary_tenants.a.schema_name
    path = "handover.gbai/handover.gbkb/faq/tents.txt"
    # pytest-django runs transactional tests last and empties every table after each: an earlier one may have
    # removed the canary tenant's row (its schema stays), which the worker needs to take the task's tenant.
    from apps.tenants.models import Tenant

    if not Tenant.objects.filter(schema_name=schema).exists():
        Tenant(schema_name=schema, name="Tenant A", ready=True).save(verbosity=0)  # the schema exists: kept
    with schema_context(schema):
        bot = Bot.objects.create(name="handover")
        kb = KnowledgeBase.objects.create(bot=bot, name="faq")
        etag_a = tenant_drive().write(path, TEXT)
        document = Document.objects.create(kb=kb, path=path, etag=etag_a, size=len(TEXT))  # nothing queued yet

    a_holds_the_lock, b_refused = threading.Event(), threading.Event()
    outcomes: list[tuple[str, str]] = []
    real_extract, real_index = indexing.extract, tasks.document_index

    def extract_holding_the_lock(name, data):  # run A pauses here, inside the lock, until B was refused
        if threading.current_thread().name == "run-a" and not a_holds_the_lock.is_set():
            a_holds_the_lock.set()
            assert b_refused.wait(WAIT_S), "B's task never ran"
        return real_extract(name, data)

    def recorded_index(*, document_id, etag=None):
        outcome = real_index(document_id=document_id, etag=etag)
        outcomes.append((etag, outcome.status))
        if outcome.status == "locked":
            b_refused.set()
        return outcome

    monkeypatch.setattr(indexing, "extract", extract_holding_the_lock)
    monkeypatch.setattr(tasks, "document_index", recorded_index)

    def run_a() -> None:
        try:
            with schema_context(schema):
                outcomes.append((etag_a, document_index(document_id=document.pk, etag=etag_a).status))
        finally:
            connections.close_all()

    # Tasks earlier tests queued with no worker to run them (for tenants and documents long gone) would be run
    # first by this worker: the queue starts empty.
    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge("index")
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, queues=["index"], shutdown_timeout=10):
            runner = threading.Thread(target=run_a, name="run-a")
            runner.start()
            assert a_holds_the_lock.wait(WAIT_S)
            with schema_context(schema):
                data_b = b"Boots need wax twice a year. " * 5
                etag_b = tenant_drive().write(path, data_b)
                document_register(bot=bot, kb_name="faq", path=path, etag=etag_b, size=len(data_b))  # B's task
            runner.join(WAIT_S)
            deadline = time.monotonic() + WAIT_S
            with schema_context(schema):
                while time.monotonic() < deadline:
                    document.refresh_from_db()
                    if document.status != Document.Status.PENDING:
                        break
                    time.sleep(0.2)
                assert (etag_b, "locked") in outcomes and (etag_a, "superseded") in outcomes
                assert (document.status, document.indexed_etag) == (Document.Status.INDEXED, etag_b)
                texts = list(Chunk.objects.filter(document=document).values_list("text", flat=True))
                assert texts and all("Boots" in t for t in texts)
    finally:
        with schema_context(schema):
            Bot.objects.filter(name="handover").delete()


def test_an_embedding_model_changed_while_a_run_embeds_ends_with_every_chunk_on_the_new_model(
        canary_tenants, local_storage, embeddings_server, monkeypatch):
    """config_sync switches the bot to model B while a run embeds with model A (the same content, so the same
    ETag). The run used to store A's vectors and mark the document indexed; the queued re-index then found it
    'unchanged' and the bot's dense search (model B) never found the document again.

    The tasks run on the real broker and a real worker (committed rows, a connection of their own): the
    registration queues the first run, config_sync the re-index; each run's outcome and schema are recorded
    inside the task as the worker ran it."""
    import time

    from celery.contrib.testing.worker import start_worker
    from django.db import connection

    from apps.bots.services import config_sync
    from apps.kb import tasks
    from apps.kb.embeddings import LocalMiniLM
    from apps.kb.search import kb_search
    from gbplatform.celery import app
    from tests.security.probes import _in_own_connection

    schema = canary_tenants.a.schema_name
    embeddings_server.dimensions = 384
    config_b = (f"name,value\nembedding-url,{embeddings_server.base_url}\nembedding-model,model-b\n"
                f"embedding-dimensions,384\nrag-min-score,-1\n").encode()
    outcomes: list[tuple[str, str]] = []
    real_index, real_embed = tasks.document_index, LocalMiniLM.embed

    def recorded_index(*, document_id, etag=None):
        outcome = real_index(document_id=document_id, etag=etag)
        outcomes.append((connection.schema_name, outcome.status))
        return outcome

    def embed_then_change_the_model(self, texts):
        bot = Bot.objects.get(name="modelswap")  # in the schema the worker runs the task in
        if not Document.objects.filter(kb__bot=bot, index_generation__gt=0).exists():
            config_sync(bot=bot, data=config_b)  # the admin saves config.csv mid-run
        return real_embed(self, texts)

    monkeypatch.setattr(tasks, "document_index", recorded_index)
    monkeypatch.setattr(LocalMiniLM, "embed", embed_then_change_the_model)

    def register() -> int:
        with schema_context(schema):
            bot = Bot.objects.create(name="modelswap")
            path = "modelswap.gbai/modelswap.gbkb/faq/tents.txt"
            etag = tenant_drive().write(path, TEXT)
            return document_register(bot=bot, kb_name="faq", path=path, etag=etag, size=len(TEXT)).pk

    def state(document_id: int) -> tuple[str, set[str]]:
        with schema_context(schema):
            document = Document.objects.get(pk=document_id)
            return document.status, set(Chunk.objects.filter(document=document)
                                        .values_list("embedding_model", flat=True))

    def search() -> list[str]:
        with schema_context(schema):
            hits = kb_search(bot=Bot.objects.get(name="modelswap"), kbs=["faq"], query="are the tents waterproof",
                             mode="dense").hits
            return [hit.document_path for hit in hits]

    def remove() -> None:
        with schema_context(schema):
            Bot.objects.filter(name="modelswap").delete()

    # Tasks earlier tests queued with no worker to run them would be run first by this worker: the queue
    # starts empty.
    with app.connection_for_write() as broker:
        broker.default_channel.queue_purge("index")
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, queues=["index"], shutdown_timeout=10):
            document_id = _in_own_connection(register)  # its first run is queued as the registration commits
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline:
                status, models = _in_own_connection(state, document_id)
                if status == Document.Status.INDEXED and models == {"model-b"}:
                    break
                time.sleep(0.2)
            time.sleep(0.5)  # a run still queued would show now
        assert _in_own_connection(state, document_id) == (Document.Status.INDEXED, {"model-b"}), outcomes
        assert outcomes[0] == (schema, "superseded"), outcomes  # the run of model A stored nothing
        assert (schema, "indexed") in outcomes and {ran_in for ran_in, _ in outcomes} == {schema}, outcomes
        paths = _in_own_connection(search)  # the bot's dense search (model B) finds the document
        assert paths and paths[0] == "modelswap.gbai/modelswap.gbkb/faq/tents.txt"
    finally:
        _in_own_connection(remove)


@pytest.mark.parametrize(("name", "data"), [
    ("tents.md", ("# Harbor\x00 tents\n" + "Harbor tents are waterproof.\x00 " * 60).encode("utf-16")),
    ("tents.json", ('{"Harbor \\ud800 tents": "' + "Harbor tents are waterproof \\udfff. " * 60 + '"}').encode()),
])
def test_nul_and_lone_surrogates_index_at_once_without_retries(bot, name, data):
    """They reached psycopg or the tokenizer: 'indexing failed (TypeError)' after five retries."""
    from apps.kb.tasks import document_index_task

    document = _document(bot, name, data)
    result = document_index_task.apply(args=[document.pk, document.etag])
    assert (result.state, result.result) == ("SUCCESS", "indexed")  # a retry would end RETRY, not SUCCESS
    chunks = list(Chunk.objects.filter(document=document).values_list("text", "heading"))
    assert chunks and all("\x00" not in text + heading for text, heading in chunks)


@pytest.mark.parametrize(("settings_rows", "reason"), [
    ({"embedding-dimensions": "384"}, "returned 8-d vectors but embedding-dimensions is 384"),
    ({"embedding-dimensions": "many"}, "embedding-dimensions must be a positive whole number, got 'many'"),
])
def test_embedding_settings_that_cannot_work_fail_the_document_at_once(bot, embeddings_server, monkeypatch,
                                                                       settings_rows, reason):
    """They were retried five times per document (each re-reading and re-extracting its file), for every
    document of the bot after a config.csv change, before showing the reason."""
    from apps.bots.models import BotConfig
    from apps.kb import indexing
    from apps.kb.tasks import document_index_task

    rows = {"embedding-url": embeddings_server.base_url, "embedding-model": "m", **settings_rows}
    for line, (key, value) in enumerate(rows.items(), 1):
        BotConfig.objects.create(bot=bot, key=key, value=value, line=line)
    document = _document(bot, "tents.txt", TEXT)
    extractions: list[str] = []
    real_extract = indexing.extract
    monkeypatch.setattr(indexing, "extract", lambda name, data: extractions.append(name) or real_extract(name, data))
    result = document_index_task.apply(args=[document.pk, document.etag])
    assert (result.state, result.result) == ("SUCCESS", "failed")  # no retry
    document.refresh_from_db()
    assert (document.status, document.index_attempts) == (Document.Status.FAILED, 1)
    assert document.error.startswith("embedding failed: ") and reason in document.error
    assert len(extractions) <= 1 and len(embeddings_server.requests) <= 1
    assert not Chunk.objects.filter(document=document).exists()


def test_an_unresolvable_embedding_host_is_retried_not_failed_for_good(bot, settings, monkeypatch):
    """A temporary DNS failure (EAI_AGAIN) while checking embedding-url became a configuration error: the
    document was failed at once, for good, though the setting was right and the next try would have worked."""
    import socket

    from celery.exceptions import Retry

    from apps.bots.models import BotConfig
    from apps.kb.embeddings import EmbeddingConfigError
    from apps.kb.tasks import document_index_task

    settings.LLM_ALLOW_PRIVATE_HOSTS = False
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == "embeddings.example.com":
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    BotConfig.objects.create(bot=bot, key="embedding-url", value="https://embeddings.example.com/v1", line=1)
    document = _document(bot, "tents.txt", TEXT)
    retried: list[BaseException] = []

    def retry(*, exc, countdown):  # the worker would run it again later (apply() would run every retry now)
        retried.append(exc)
        return Retry(exc=exc, when=countdown)

    monkeypatch.setattr(document_index_task, "retry", retry)
    with pytest.raises(Retry):
        document_index_task.apply(args=[document.pk, document.etag], throw=True)
    assert len(retried) == 1 and not isinstance(retried[0], EmbeddingConfigError)
    document.refresh_from_db()
    assert document.status == Document.Status.PENDING
    assert "cannot resolve host 'embeddings.example.com'" in document.error
    assert not Chunk.objects.filter(document=document).exists()
