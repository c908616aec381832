"""One conformance suite for every VectorStore backend, plus what only one backend has to prove.

Both backends run against two real tenants (A and B) that share a bot name, KB names and document ids,
with chunk texts carrying each tenant's canary: a search in A that returned a B chunk would show B's canary.
pgvector runs on the real PostgreSQL in each tenant's schema; Qdrant is our Qdrant REST server on loopback
(tests/support/qdrant_fake.py), reached through the platform's own client, built from QDRANT_URL and
QDRANT_API_KEY as in production. Vectors are small deterministic fakes (384-d): the embedding model is not
needed here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from django.db import IntegrityError, connection
from django_tenants.utils import schema_context
from qdrant_client import models
from qdrant_client.http.exceptions import UnexpectedResponse

from apps.kb.vectorstores import (
    HNSW_EF_SEARCH,
    INDEXED_DIMENSIONS,
    MAX_DIMENSIONS,
    QDRANT_HNSW_EF_CONSTRUCT,
    QDRANT_HNSW_M,
    SEARCH_LIMIT_MAX,
    ChunkRecord,
    PgVectorStore,
    QdrantStore,
    VectorStore,
    VectorStoreError,
    pg_search_queryset,
    qdrant_collection_name,
    qdrant_point_id,
    vector_store_for_settings,
)
from tests.support.qdrant_fake import FakeQdrant

pytestmark = pytest.mark.django_db

DIM = 384
BOT = "vs-helpdesk"  # the same bot name in both tenants
MODEL = "fake-model"
# The same document ids in both tenants (explicit primary keys, far above what other tests create).
DOC_IDS = {"faq/a.md": 9101, "faq/b.md": 9102, "policies/c.md": 9103}


def unit(seed: int, dimensions: int = DIM) -> list[float]:
    vector = np.random.default_rng(seed).normal(size=dimensions)
    return (vector / np.linalg.norm(vector)).tolist()


def near(vector: list[float], seed: int, noise: float) -> list[float]:
    moved = np.asarray(vector) + noise * np.asarray(unit(seed, len(vector)))
    return (moved / np.linalg.norm(moved)).tolist()


@dataclass(frozen=True)
class Side:
    """One tenant's rows: the bot, its KBs and documents (same names and document ids in both tenants)."""

    tenant: str
    canary: str
    bot_id: int
    kb_ids: dict[str, int]


@dataclass
class World:
    backend: str
    store: VectorStore
    a: Side
    b: Side
    qdrant: FakeQdrant | None = None  # the Qdrant server, on the qdrant backend

    @contextlib.contextmanager
    def on(self, side: Side) -> Iterator[None]:
        with schema_context(side.tenant):
            yield

    def records(self, side: Side, doc: str, vectors: list[list[float] | None], label: str = "v1") -> list[ChunkRecord]:
        kb = doc.split("/")[0]
        return [
            ChunkRecord(
                document_id=DOC_IDS[doc],
                document_path=f"{BOT}.gbai/{BOT}.gbkb/{doc}",
                kb=kb,
                index=i,
                text=f"{side.canary} {doc} chunk {i} {label}",
                start_char=i * 100,
                end_char=i * 100 + 99,
                page=i + 1,
                heading=f"Section {i}",
                vector=vector,
            )
            for i, vector in enumerate(vectors)
        ]

    def replace(self, side: Side, doc: str, vectors: list[list[float] | None], *, label: str = "v1",
                model: str = MODEL) -> None:
        kb = doc.split("/")[0]
        with self.on(side):
            self.store.replace_document(
                tenant=side.tenant, bot=BOT, bot_id=side.bot_id, kb_id=side.kb_ids[kb], document_id=DOC_IDS[doc],
                records=self.records(side, doc, vectors, label), model=model,
            )

    def search(self, side: Side, vector: list[float], kbs: tuple[str, ...] = ("faq", "policies"), limit: int = 10,
               model: str | None = None):
        with self.on(side):
            return self.store.search(tenant=side.tenant, bot=BOT, kbs=list(kbs), vector=vector, limit=limit,
                                     model=model)

    def count(self, side: Side) -> int:
        with self.on(side):
            return self.store.count(tenant=side.tenant, bot=BOT)

    def delete(self, side: Side, doc: str) -> None:
        with self.on(side):
            self.store.delete_document(tenant=side.tenant, bot=BOT, document_id=DOC_IDS[doc])


def _side(tenant) -> Side:
    from apps.bots.models import Bot
    from apps.kb.models import Document, KnowledgeBase

    with schema_context(tenant.schema_name):
        bot = Bot.objects.create(name=BOT)
        kbs = {name: KnowledgeBase.objects.create(bot=bot, name=name) for name in ("faq", "policies")}
        for doc, pk in DOC_IDS.items():
            Document.objects.create(pk=pk, kb=kbs[doc.split("/")[0]], path=f"{BOT}.gbai/{BOT}.gbkb/{doc}", etag="e")
    return Side(tenant.schema_name, tenant.canary, bot.pk, {name: kb.pk for name, kb in kbs.items()})


@pytest.fixture(params=["pgvector", "qdrant"])
def world(request, canary_tenants) -> World:
    if request.param == "pgvector":
        return World("pgvector", PgVectorStore(), _side(canary_tenants.a), _side(canary_tenants.b))
    qdrant = request.getfixturevalue("qdrant_platform")
    store = vector_store_for_settings()  # the platform's own client of the server, as in production
    assert isinstance(store, QdrantStore)
    return World("qdrant", store, _side(canary_tenants.a), _side(canary_tenants.b), qdrant)


# --- Conformance: every backend -----------------------------------------------------------------------------


def test_search_ranks_the_nearest_chunk_first(world):
    base = [unit(1), unit(2), unit(3)]
    world.replace(world.a, "faq/a.md", base)
    hits = world.search(world.a, near(base[1], seed=99, noise=0.1))
    assert len(hits) == 3 and hits[0].index == 1
    top = hits[0]
    assert (top.document_id, top.kb, top.page, top.heading) == (DOC_IDS["faq/a.md"], "faq", 2, "Section 1")
    assert top.document_path == f"{BOT}.gbai/{BOT}.gbkb/faq/a.md"
    assert top.text == f"{world.a.canary} faq/a.md chunk 1 v1"
    assert top.score > 0.9 and all(h.score < top.score for h in hits[1:])
    exact = world.search(world.a, base[2], limit=1)
    assert len(exact) == 1 and exact[0].index == 2 and exact[0].score == pytest.approx(1.0, abs=1e-4)


def test_replace_removes_the_old_chunks_of_the_document(world):
    world.replace(world.a, "faq/a.md", [unit(1), unit(2), unit(3)], label="old")
    world.replace(world.a, "faq/b.md", [unit(4)])
    world.replace(world.a, "faq/a.md", [unit(5)], label="new")
    assert world.count(world.a) == 2
    texts = {h.text for h in world.search(world.a, unit(5))}
    assert texts == {f"{world.a.canary} faq/a.md chunk 0 new", f"{world.a.canary} faq/b.md chunk 0 v1"}
    assert world.search(world.a, unit(2))[0].score < 0.5  # the old chunk 1 is gone


def test_replacing_twice_with_the_same_chunks_stores_them_once(world):
    vectors = [unit(1), unit(2)]
    world.replace(world.a, "faq/a.md", vectors)
    world.replace(world.a, "faq/a.md", vectors)
    assert world.count(world.a) == 2


def test_replace_under_another_model_leaves_no_vectors_of_the_old_one(world):
    world.replace(world.a, "faq/a.md", [unit(1), unit(2)], model="model-one")
    world.replace(world.a, "faq/a.md", [unit(3, 768)], model="model-two")
    assert world.count(world.a) == 1
    assert world.search(world.a, unit(1)) == []
    assert [h.index for h in world.search(world.a, unit(3, 768))] == [0]


def test_delete_document_removes_only_that_document(world):
    world.replace(world.a, "faq/a.md", [unit(1), unit(2)])
    world.replace(world.a, "faq/b.md", [unit(3)])
    world.delete(world.a, "faq/a.md")
    assert world.count(world.a) == 1
    assert {h.document_id for h in world.search(world.a, unit(1))} == {DOC_IDS["faq/b.md"]}
    world.delete(world.a, "faq/a.md")  # deleting again is a no-op
    assert world.count(world.a) == 1


def test_search_only_returns_chunks_of_the_requested_kbs(world):
    world.replace(world.a, "faq/a.md", [unit(1)])
    world.replace(world.a, "policies/c.md", [near(unit(1), seed=7, noise=0.05)])
    assert {h.kb for h in world.search(world.a, unit(1), kbs=("policies",))} == {"policies"}
    assert {h.kb for h in world.search(world.a, unit(1), kbs=("faq", "policies"))} == {"faq", "policies"}
    assert world.search(world.a, unit(1), kbs=("nonexistent",)) == []
    assert world.search(world.a, unit(1), kbs=()) == []


def test_search_only_compares_vectors_of_the_query_size(world):
    world.replace(world.a, "faq/a.md", [unit(1)])
    world.replace(world.a, "faq/b.md", [unit(2, 768)])
    assert {h.document_id for h in world.search(world.a, unit(1))} == {DOC_IDS["faq/a.md"]}
    assert {h.document_id for h in world.search(world.a, unit(2, 768))} == {DOC_IDS["faq/b.md"]}


def test_search_for_a_model_only_meets_that_models_vectors(world):
    world.replace(world.a, "faq/a.md", [unit(1)], model="model-one")
    world.replace(world.a, "faq/b.md", [unit(1)], model="model-two")
    assert {h.document_id for h in world.search(world.a, unit(1), model="model-two")} == {DOC_IDS["faq/b.md"]}
    assert len(world.search(world.a, unit(1))) == 2
    assert world.search(world.a, unit(1), model="model-three") == []


def test_search_respects_the_limit(world):
    world.replace(world.a, "faq/a.md", [unit(i) for i in range(12)])
    assert len(world.search(world.a, unit(0), limit=5)) == 5
    assert world.search(world.a, unit(0), limit=0) == []


def test_filtered_search_finds_the_kbs_chunks_when_other_kbs_chunks_are_nearer(world):
    """Many nearer chunks in another KB must not crowd the requested KB's chunks out of an HNSW search."""
    query = unit(1)
    world.replace(world.a, "faq/a.md", [near(query, seed=1000 + i, noise=0.3) for i in range(300)])
    world.replace(world.a, "policies/c.md", [near(query, seed=2000 + i, noise=2.0) for i in range(5)])
    if world.backend == "pgvector":
        with world.on(world.a), connection.cursor() as cursor:
            # Make the planner take the HNSW index (it rightly prefers an exact sort for so few rows).
            cursor.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off")
    hits = world.search(world.a, query, kbs=("policies",), limit=5)
    assert len(hits) == 5 and {h.kb for h in hits} == {"policies"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_count_counts_the_bots_chunks(world):
    assert world.count(world.a) == 0
    world.replace(world.a, "faq/a.md", [unit(1), unit(2)])
    world.replace(world.a, "policies/c.md", [unit(3)])
    assert world.count(world.a) == 3


def test_vectors_of_one_document_must_share_one_size(world):
    with pytest.raises(VectorStoreError, match="different sizes"):
        world.replace(world.a, "faq/a.md", [unit(1), unit(2, 768)])


def test_a_search_in_one_tenant_never_returns_the_other_tenants_chunks(world):
    """Same bot name, KB names and document ids in A and B; B's vectors are the exact query."""
    query = unit(42)
    world.replace(world.a, "faq/a.md", [unit(1), unit(2)])
    world.replace(world.b, "faq/a.md", [query, query, query])
    world.replace(world.b, "policies/c.md", [query])

    hits_a = world.search(world.a, query)
    assert {h.index for h in hits_a} == {0, 1}
    assert all(world.a.canary in h.text and world.b.canary not in h.text for h in hits_a)
    assert world.count(world.a) == 2 and world.count(world.b) == 4

    # Deleting and replacing the "same" document in A leaves B's untouched.
    world.delete(world.a, "faq/a.md")
    world.replace(world.a, "policies/c.md", [unit(9)])
    assert world.count(world.b) == 4
    hits_b = world.search(world.b, query)
    assert len(hits_b) == 4 and all(world.b.canary in h.text for h in hits_b)
    assert all(world.b.canary not in h.text for h in world.search(world.a, query))


# --- pgvector only ------------------------------------------------------------------------------------------------


def test_pgvector_refuses_a_tenant_other_than_the_connections_schema(canary_tenants):
    store = PgVectorStore()
    a, b = canary_tenants.a, canary_tenants.b
    with schema_context(a.schema_name):
        with pytest.raises(VectorStoreError, match="connection is on"):
            store.search(tenant=b.schema_name, bot=BOT, kbs=["faq"], vector=unit(1), limit=5)
        with pytest.raises(VectorStoreError):
            store.count(tenant=b.schema_name, bot=BOT)
        with pytest.raises(VectorStoreError):
            store.delete_document(tenant=b.schema_name, bot=BOT, document_id=1)
    with schema_context("public"), pytest.raises(VectorStoreError):
        store.count(tenant="public", bot=BOT)


def test_pgvector_failed_replace_keeps_the_old_chunks(canary_tenants):
    from apps.kb.models import Chunk

    world = World("pgvector", PgVectorStore(), _side(canary_tenants.a), _side(canary_tenants.b))
    world.replace(world.a, "faq/a.md", [unit(1), unit(2)], label="old")
    broken = world.records(world.a, "faq/a.md", [unit(3), unit(4)], label="new")
    broken[1] = ChunkRecord(**{**broken[1].__dict__, "index": 0})  # duplicate index: the insert fails
    with world.on(world.a):
        with pytest.raises(IntegrityError):
            world.store.replace_document(
                tenant=world.a.tenant, bot=BOT, bot_id=world.a.bot_id, kb_id=world.a.kb_ids["faq"],
                document_id=DOC_IDS["faq/a.md"], records=broken, model=MODEL,
            )
        texts = list(Chunk.objects.filter(document_id=DOC_IDS["faq/a.md"]).values_list("text", flat=True))
    assert texts == [f"{world.a.canary} faq/a.md chunk {i} old" for i in (0, 1)]


def test_pgvector_stores_chunks_without_vectors_for_keyword_search(canary_tenants):
    from apps.kb.models import Chunk

    world = World("pgvector", PgVectorStore(), _side(canary_tenants.a), _side(canary_tenants.b))
    world.replace(world.a, "faq/a.md", [None, None])
    with world.on(world.a):
        rows = list(Chunk.objects.filter(document_id=DOC_IDS["faq/a.md"]).values("dimensions", "embedding_model"))
    assert rows == [{"dimensions": None, "embedding_model": ""}] * 2
    assert world.search(world.a, unit(1)) == [] and world.count(world.a) == 2


@pytest.mark.parametrize("dimensions", INDEXED_DIMENSIONS)
def test_pgvector_search_is_served_by_the_partial_hnsw_index_of_its_size(canary_tenants, dimensions):
    from apps.bots.models import Bot
    from apps.kb.models import KnowledgeBase

    with schema_context(canary_tenants.a.schema_name):
        bot, _ = Bot.objects.get_or_create(name=BOT)
        KnowledgeBase.objects.get_or_create(bot=bot, name="faq")
        queryset = pg_search_queryset(bot=BOT, kbs=["faq"], vector=unit(1, dimensions))[:10]
        with connection.cursor() as cursor:
            # With few rows a scan and an exact sort are cheaper (and the planner rightly picks them): forbid
            # both to see whether the index CAN serve the query, i.e. matches its expression and predicate.
            cursor.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off")
            plan = queryset.explain()
    assert f"chunk_embedding_hnsw_{dimensions}" in plan, plan


def test_migration_indexes_every_dimension_the_store_declares():
    import importlib

    migration = importlib.import_module("apps.kb.migrations.0003_chunk_hnsw")
    assert tuple(migration.DIMENSIONS) == INDEXED_DIMENSIONS


# --- Qdrant only -----------------------------------------------------------------------------------------------------


def _qdrant_world(canary_tenants, qdrant: FakeQdrant) -> World:
    store = vector_store_for_settings()
    assert isinstance(store, QdrantStore)
    return World("qdrant", store, _side(canary_tenants.a), _side(canary_tenants.b), qdrant)


def test_qdrant_collection_is_per_model_and_size_with_deterministic_point_ids(canary_tenants, qdrant_platform):
    world = _qdrant_world(canary_tenants, qdrant_platform)
    client = world.store.client
    world.replace(world.a, "faq/a.md", [unit(1), unit(2)])
    world.replace(world.b, "faq/a.md", [unit(1)])
    name = qdrant_collection_name(MODEL, DIM)
    assert [c.name for c in client.get_collections().collections] == [name]
    assert qdrant_collection_name("BAAI/bge-m3", 1024) != qdrant_collection_name("baai_bge-m3", 1024)
    point_id = qdrant_point_id(tenant=world.a.tenant, bot=BOT, document_id=DOC_IDS["faq/a.md"], index=1)
    (point,) = client.retrieve(name, ids=[point_id], with_payload=True)
    assert point.payload["tenant"] == world.a.tenant and point.payload["index"] == 1
    assert point_id != qdrant_point_id(tenant=world.b.tenant, bot=BOT, document_id=DOC_IDS["faq/a.md"], index=1)
    assert client.count(name, exact=True).count == 3


def test_qdrant_collection_gets_the_tenant_index_and_the_hnsw_parameters(canary_tenants, qdrant_platform):
    world = _qdrant_world(canary_tenants, qdrant_platform)
    world.replace(world.a, "faq/a.md", [unit(1)])
    name = qdrant_collection_name(MODEL, DIM)
    # As Qdrant reports the collection to any client: `is_tenant` groups each tenant's points together.
    info = world.store.client.get_collection(name)
    assert info.payload_schema["tenant"].data_type == models.PayloadSchemaType.KEYWORD
    assert info.payload_schema["tenant"].params.is_tenant is True
    assert {field: index.data_type for field, index in info.payload_schema.items() if field != "tenant"} == {
        "bot": models.PayloadSchemaType.KEYWORD, "kb": models.PayloadSchemaType.KEYWORD,
        "document_id": models.PayloadSchemaType.INTEGER, "index": models.PayloadSchemaType.INTEGER}
    assert (info.config.hnsw_config.m, info.config.hnsw_config.ef_construct) == (QDRANT_HNSW_M,
                                                                                QDRANT_HNSW_EF_CONSTRUCT)
    assert info.config.params.vectors.size == DIM and info.config.params.vectors.distance == models.Distance.COSINE
    assert qdrant_platform.payload_index(name, "tenant") == models.KeywordIndexParams(
        type=models.KeywordIndexType.KEYWORD, is_tenant=True)
    # Once per process and collection: the next document does not create the indexes again.
    indexes_created = qdrant_platform.count("PUT", f"/collections/{name}/index")
    world.replace(world.b, "faq/a.md", [unit(2)])
    assert qdrant_platform.count("PUT", f"/collections/{name}/index") == indexes_created == 5
    # Every field a filter names has an index (Qdrant in strict mode refuses an unindexed filter): a document
    # shortened deletes its chunks past the new end by an `index` range.
    world.replace(world.a, "faq/a.md", [unit(1), unit(2), unit(3)])
    world.replace(world.a, "faq/a.md", [unit(1)])
    keys: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("key"), str):
                keys.add(node["key"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for request in qdrant_platform.requests:
        if request.path.startswith(f"/collections/{name}/points"):
            walk((request.body or {}).get("filter") if isinstance(request.body, dict) else None)
    assert "index" in keys and keys <= set(world.store.client.get_collection(name).payload_schema), keys


def test_qdrant_searches_send_hnsw_ef_and_the_tenant_and_bot_filter(canary_tenants, qdrant_platform):
    world = _qdrant_world(canary_tenants, qdrant_platform)
    world.replace(world.a, "faq/a.md", [unit(1)])
    world.replace(world.a, "faq/b.md", [unit(2, 768)], model="model-two")
    assert world.search(world.a, unit(1), limit=7)
    assert world.search(world.a, unit(2, 768), limit=SEARCH_LIMIT_MAX, model="model-two")
    queries = qdrant_platform.queries
    assert [(q.collection, q.limit) for q in queries] == [(qdrant_collection_name(MODEL, DIM), 7),
                                                          (qdrant_collection_name("model-two", 768),
                                                           SEARCH_LIMIT_MAX)]
    for query in queries:
        assert query.hnsw_ef == HNSW_EF_SEARCH >= query.limit and query.params.exact is False
        conditions = {c.key: c.match for c in query.filter.must}
        assert conditions["tenant"] == models.MatchValue(value=world.a.tenant)
        assert conditions["bot"] == models.MatchValue(value=BOT)
        assert conditions["kb"] == models.MatchAny(any=["faq", "policies"])


def test_qdrant_store_carries_on_when_another_worker_creates_the_collection_first(canary_tenants,
                                                                                 qdrant_platform):
    world = _qdrant_world(canary_tenants, qdrant_platform)
    name = qdrant_collection_name(MODEL, DIM)

    def another_worker_creates_it_meanwhile(request) -> None:
        if request.method == "PUT" and request.path == f"/collections/{name}" and name not in \
                qdrant_platform.collection_names():
            qdrant_platform.collection_create(name, DIM)

    qdrant_platform.on_request = another_worker_creates_it_meanwhile
    world.replace(world.a, "faq/a.md", [unit(1), unit(2)])
    assert qdrant_platform.statuses("PUT", f"/collections/{name}") == [409]  # Qdrant: already exists
    assert world.count(world.a) == 2
    assert qdrant_platform.payload_index(name, "tenant").is_tenant  # the indexes are made all the same


def test_qdrant_store_fails_when_the_collection_can_be_neither_created_nor_found(canary_tenants,
                                                                                 qdrant_platform):
    world = _qdrant_world(canary_tenants, qdrant_platform)
    name = qdrant_collection_name(MODEL, DIM)

    def creation_fails(request) -> None:
        if request.method == "PUT" and request.path == f"/collections/{name}":
            qdrant_platform.fail_next.append(500)

    qdrant_platform.on_request = creation_fails
    with pytest.raises(UnexpectedResponse) as failure:
        world.replace(world.a, "faq/a.md", [unit(1)])
    assert failure.value.status_code == 500
    assert qdrant_platform.collection_names() == []


def test_qdrant_store_makes_again_a_collection_dropped_behind_its_back(canary_tenants, qdrant_platform):
    """The store remembers per process which collections it made ready; one dropped since (by an operator, or a
    Qdrant restored from an older snapshot) answered every upsert with a 404 until the worker restarted."""
    world = _qdrant_world(canary_tenants, qdrant_platform)
    world.replace(world.a, "faq/a.md", [unit(1)])
    name = qdrant_collection_name(MODEL, DIM)
    qdrant_platform.collection_drop(name)
    world.replace(world.a, "faq/a.md", [unit(1), unit(2)])
    assert world.count(world.a) == 2
    assert [h.index for h in world.search(world.a, unit(2), limit=1)] == [1]
    assert qdrant_platform.payload_index(name, "tenant").is_tenant  # with its indexes, as the first time


def test_qdrant_upserts_stay_under_qdrants_request_size_limit(canary_tenants, qdrant_platform):
    """Qdrant refuses a request body over its max_request_size_mb (32 MiB by default) with a 400: one batch of
    256 chunks carried ~85 MB of JSON at the largest vector size the platform accepts, so a long document with
    a large model could not be indexed."""
    world = _qdrant_world(canary_tenants, qdrant_platform)
    chunks = 110  # ~37 MB of vectors in one request
    world.replace(world.a, "faq/a.md", [unit(i, MAX_DIMENSIONS) for i in range(chunks)])
    assert world.count(world.a) == chunks
    upserts = [r for r in qdrant_platform.requests if r.method == "PUT" and r.path.endswith("/points")]
    assert len(upserts) > 1 and all(r.status == 200 for r in upserts)
    assert max(r.size for r in upserts) <= qdrant_platform.max_request_bytes


@pytest.mark.parametrize(("api_key", "message"), [("", "Must provide an API key"), ("wrong", "Invalid API key")])
def test_qdrant_refuses_a_platform_without_its_api_key(canary_tenants, qdrant_platform, settings, api_key, message):
    settings.QDRANT_API_KEY = api_key
    store = vector_store_for_settings()
    with pytest.raises(UnexpectedResponse) as refused:
        store.count(tenant=canary_tenants.a.schema_name, bot=BOT)
    assert refused.value.status_code == 401 and message in refused.value.content.decode()
    assert not any(r.status == 200 for r in qdrant_platform.requests)


def test_the_qdrant_fake_answers_errors_as_qdrant_does(qdrant_server):
    """The fake is only worth its tests if the client sees Qdrant's answers: the status codes and the
    error envelope the real client turns into UnexpectedResponse."""
    client = qdrant_server.client()
    params = models.VectorParams(size=3, distance=models.Distance.COSINE)
    assert client.collection_exists("c") is False
    client.create_collection("c", vectors_config=params)
    with pytest.raises(UnexpectedResponse) as exists:
        client.create_collection("c", vectors_config=params)
    assert exists.value.status_code == 409 and "already exists" in exists.value.structured()["status"]["error"]
    for call in (lambda: client.count("missing"), lambda: client.query_points("missing", query=[1.0, 0, 0]),
                 lambda: client.delete("missing", points_selector=models.PointIdsList(points=[1]))):
        with pytest.raises(UnexpectedResponse) as missing:
            call()
        assert missing.value.status_code == 404
        assert missing.value.structured()["status"]["error"] == "Not found: Collection `missing` doesn't exist!"
    with pytest.raises(UnexpectedResponse) as wrong_size:
        client.upsert("c", points=[models.PointStruct(id=1, vector=[1.0, 0.0], payload={})])
    assert wrong_size.value.status_code == 400 and "dimension" in wrong_size.value.structured()["status"]["error"]
    with pytest.raises(UnexpectedResponse) as bad_id:
        client.upsert("c", points=[models.PointStruct(id="not-a-uuid", vector=[1.0, 0.0, 0.0])])
    assert bad_id.value.status_code == 400
    malformed = httpx.put(f"{qdrant_server.url}/collections/c/points", headers={"api-key": qdrant_server.api_key},
                          json={"points": [{"id": 1, "vectr": [1, 0, 0]}]})
    assert malformed.status_code == 400 and malformed.json()["status"]["error"].startswith("Format error")
    client.upsert("c", points=[models.PointStruct(id=1, vector=[1.0, 0.0, 0.0], payload={"k": "v"})], wait=True)
    assert client.count("c").count == 1
    assert [p.id for p in client.query_points("c", query=[1.0, 0.0, 0.0]).points] == [1]
    assert client.delete_collection("c") and client.get_collections().collections == []
    client.close()


def test_settings_select_qdrant_by_url_else_pgvector(settings):
    settings.QDRANT_URL = ""
    assert isinstance(vector_store_for_settings(), PgVectorStore)
    settings.QDRANT_URL = "http://127.0.0.1:6333"
    store = vector_store_for_settings()
    assert isinstance(store, QdrantStore) and vector_store_for_settings() is store
