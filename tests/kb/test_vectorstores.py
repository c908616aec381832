"""One conformance suite for every VectorStore backend, plus what only one backend has to prove.

Both backends run against two real tenants (A and B) that share a bot name, KB names and document ids,
with chunk texts carrying each tenant's canary: a search in A that returned a B chunk would show B's canary.
pgvector runs on the real PostgreSQL in each tenant's schema; Qdrant runs in qdrant-client's local mode.
Vectors are small deterministic fakes (384-d): the embedding model is not needed here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from django.db import IntegrityError, connection
from django_tenants.utils import schema_context
from qdrant_client import QdrantClient

from apps.kb.vectorstores import (
    INDEXED_DIMENSIONS,
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

pytestmark = [
    pytest.mark.django_db,
    # qdrant-client's local mode ignores payload indexes and search parameters, and says so each time.
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning"),
    pytest.mark.filterwarnings("ignore:Local mode performs exact:UserWarning"),
]

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
def world(request, canary_tenants) -> Iterator[World]:
    if request.param == "pgvector":
        store: VectorStore = PgVectorStore()
        client = None
    else:
        client = QdrantClient(":memory:")
        store = QdrantStore(client)
    yield World(request.param, store, _side(canary_tenants.a), _side(canary_tenants.b))
    if client is not None:
        client.close()


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


def test_qdrant_collection_is_per_model_and_size_with_deterministic_point_ids(canary_tenants):
    client = QdrantClient(":memory:")
    world = World("qdrant", QdrantStore(client), _side(canary_tenants.a), _side(canary_tenants.b))
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
    client.close()


def test_settings_select_qdrant_by_url_else_pgvector(settings):
    settings.QDRANT_URL = ""
    assert isinstance(vector_store_for_settings(), PgVectorStore)
    settings.QDRANT_URL = "http://127.0.0.1:6333"
    store = vector_store_for_settings()
    assert isinstance(store, QdrantStore) and vector_store_for_settings() is store
