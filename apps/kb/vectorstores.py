"""Where chunk vectors live and how they are searched: one `VectorStore` interface, two backends.

- `PgVectorStore` (default): `Chunk` rows in the tenant's own PostgreSQL schema, vectors in an untyped
  pgvector column, searched through one partial HNSW index per supported size (migration 0003). The
  schema is the isolation: a store call for tenant X while the connection is on schema Y is refused.
- `QdrantStore` (scale, selected by `QDRANT_URL`): one collection per embedding model and size, shared by
  all tenants, with `tenant` and `bot` in every point's payload and in every read and delete filter.

Both are held to one conformance suite (tests/kb/test_vectorstores.py). Scores are cosine similarities:
higher is better, 1.0 is the same direction.

Failure modes this module prevents:
- cross-tenant reads: pgvector checks that the connection's schema is the caller's tenant; Qdrant adds the
  tenant and bot conditions in exactly one function (`_scope_filter`) that every search, count and delete
  goes through, so no code path can forget them;
- a half-replaced document: pgvector deletes the document's old chunks and inserts the new ones in one
  transaction; Qdrant (no transactions) writes the new points first, under ids derived from
  tenant/bot/document/index so a re-run overwrites them, and only then deletes the points that are no
  longer part of the document, so a reader never sees the document missing (see `QdrantStore`);
- comparing vectors of different models or sizes: a search only meets vectors of the query's size (pg:
  `dimensions = d`; Qdrant: one collection per model and size), and of the same model when given;
- a search that silently scans every row: the pg query repeats the index's exact expression
  (`embedding::vector(d)` with `WHERE dimensions = d`) so the planner can use the partial HNSW index;
- a Qdrant collection dropped between the store's listing (or its readiness) and its call on it failing the
  call: Qdrant's "collection doesn't exist" is "nothing there" for deletes, counts and searches, and makes a
  write create the collection again (`_collection_missing`; no other error is taken for it).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, FloatField, Value
from django.db.models.functions import Cast

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

# Vector sizes with a partial HNSW index (migrations/0003_chunk_hnsw.py): MiniLM/BGE-small (384),
# base/mpnet (768), bge-m3/large (1024), OpenAI ada/3-small (1536). Other sizes still work, by exact scan.
INDEXED_DIMENSIONS = (384, 768, 1024, 1536)
# pgvector's `vector` type holds at most 16000 dimensions (its HNSW index 2000: larger sizes scan exactly).
MAX_DIMENSIONS = 16000
# Chunks per INSERT when replacing a document: bounds statement size for long documents.
PG_INSERT_BATCH = 500
# HNSW search breadth (pgvector's `hnsw.ef_search`, Qdrant's `hnsw_ef`): upstream searches Qdrant with 128
# (spec §5.7). Higher finds more true neighbours at more cost; it must stay >= the result limit.
HNSW_EF_SEARCH = 128
# pgvector's iterative index scan mode for filtered searches: `strict_order` keeps exact distance order.
HNSW_ITERATIVE_SCAN = "strict_order"
# Results per search are capped: the chat path asks for 10 (spec §5.7); a caller bug must not read a KB.
SEARCH_LIMIT_MAX = 100

# Qdrant: upsert batch size (bounded request bodies), request timeout, and the HNSW build parameters
# upstream uses for its collections (spec §5.4).
QDRANT_UPSERT_BATCH = 256
# Qdrant refuses a request body over its `max_request_size_mb` (32 MiB by default) with a 400. The client's JSON
# spends up to 25 bytes on a float, so 256 vectors of ~5000 dimensions or more passed it (MAX_DIMENSIONS is
# 16000): a batch also ends before its estimated size (an upper bound) passes this many bytes.
QDRANT_UPSERT_MAX_BYTES = 16 * 1024 * 1024
_JSON_FLOAT_MAX_BYTES = 25  # e.g. `-2.2250738585072014e-308,`
_JSON_POINT_OVERHEAD_BYTES = 256  # the id, the field names and brackets
QDRANT_TIMEOUT_S = 30
# Searches run inside a chat turn, which waits: a Qdrant that does not answer by then is treated as down and
# the search answers from PostgreSQL's text search (apps.kb.search), instead of holding the turn 30 s.
QDRANT_SEARCH_TIMEOUT_S = 5
QDRANT_HNSW_M = 16
QDRANT_HNSW_EF_CONSTRUCT = 200
QDRANT_COLLECTION_PREFIX = "gb_kb_"
# A write that finds its collection gone makes it again and writes again; a collection dropped once more every
# time (an operator dropping it in a loop) is not a race any longer: the write fails after this many tries.
QDRANT_WRITE_ATTEMPTS = 3
# Namespace of deterministic point ids (uuid5 of "tenant/bot/document/index"): never change it, or
# re-indexing would add points next to the old ones instead of overwriting them.
QDRANT_POINT_NAMESPACE = uuid.UUID("6f1d3c52-8b0e-5b7e-9a43-2c5e0d7f41a9")


class VectorStoreError(RuntimeError):
    """A store call that would be wrong to carry out (other tenant's schema, mixed vector sizes, ...)."""


@dataclass(frozen=True)
class ChunkRecord:
    """A chunk to store: its text, place in the document (for citations) and vector (None: keyword only)."""

    document_id: int
    document_path: str
    kb: str
    index: int
    text: str
    start_char: int
    end_char: int
    page: int | None
    heading: str
    vector: list[float] | None


@dataclass(frozen=True)
class VectorHit:
    """A search result; `score` is the cosine similarity to the query (higher is better)."""

    document_id: int
    document_path: str
    kb: str
    index: int
    text: str
    page: int | None
    heading: str
    score: float


class VectorStore(Protocol):
    def replace_document(
        self,
        *,
        tenant: str,
        bot: str,
        bot_id: int,
        kb_id: int,
        document_id: int,
        records: list[ChunkRecord],
        model: str,
    ) -> None:
        """Make `records` the document's chunks: afterwards none of its old chunks remain."""

    def delete_document(self, *, tenant: str, bot: str, document_id: int) -> None:
        """Remove every chunk of the document."""

    def search(
        self, *, tenant: str, bot: str, kbs: list[str], vector: list[float], limit: int, model: str | None = None
    ) -> list[VectorHit]:
        """The `limit` chunks of the bot's `kbs` nearest to `vector` (same size; same model when given)."""

    def delete_bot(self, *, tenant: str, bot: str) -> None:
        """Remove every chunk of the bot (tenant deletion)."""

    def count(self, *, tenant: str, bot: str) -> int:
        """Chunks stored for the bot (with or without a vector on pgvector; with one on Qdrant)."""


def _record_dimensions(records: Iterable[ChunkRecord]) -> int | None:
    sizes = {len(r.vector) for r in records if r.vector is not None}
    if len(sizes) > 1:
        raise VectorStoreError(f"one document's chunks have vectors of different sizes: {sorted(sizes)}")
    size = sizes.pop() if sizes else None
    if size is not None and not 0 < size <= MAX_DIMENSIONS:
        raise VectorStoreError(f"vector size {size} is out of range")
    return size


def _query_dimensions(vector: Sequence[float]) -> int:
    if not 0 < len(vector) <= MAX_DIMENSIONS:
        raise VectorStoreError(f"query vector size {len(vector)} is out of range")
    return len(vector)


def _bounded_limit(limit: int) -> int:
    return max(0, min(limit, SEARCH_LIMIT_MAX))


# --- pgvector ------------------------------------------------------------------------------------------------


def _require_schema(tenant: str) -> None:
    """The schema IS the isolation: refuse to touch chunks unless the connection is on `tenant`'s schema."""
    current = getattr(connection, "schema_name", None)
    if not tenant or tenant != current:
        raise VectorStoreError(f"vector store call for tenant {tenant!r} while the connection is on {current!r}")
    if current == getattr(settings, "PUBLIC_SCHEMA_NAME", "public"):
        raise VectorStoreError("knowledge-base chunks live in tenant schemas, never in public")


def pg_search_queryset(*, bot: str, kbs: Sequence[str], vector: Sequence[float], model: str | None = None):
    """The nearest-neighbour query: the index's exact expression `embedding::vector(d)`, filtered on
    `dimensions = d` (the partial index's predicate), ordered by cosine distance, on kb_chunk ALONE.

    The bot and KBs are resolved to ids first: filtering through joins (bot name, KB name) made the planner
    scan and sort every chunk (measured: 190 ms p50 at 100k chunks) instead of walking the HNSW index.
    Returns `id` and `score` only; the caller fetches the few rows it keeps. Exposed for EXPLAIN in tests.
    """
    from pgvector.django import CosineDistance, VectorField

    from apps.bots.models import Bot
    from apps.kb.models import Chunk, KnowledgeBase

    dimensions = _query_dimensions(vector)
    bot_id = Bot.objects.filter(name=bot).values_list("pk", flat=True).first()
    kb_ids = list(KnowledgeBase.objects.filter(bot_id=bot_id, name__in=list(kbs)).values_list("pk", flat=True))
    typed_embedding = Cast("embedding", VectorField(dimensions=dimensions))
    queryset = Chunk.objects.filter(bot_id=bot_id, kb_id__in=kb_ids, dimensions=dimensions)
    if model is not None:
        queryset = queryset.filter(embedding_model=model)
    return (
        queryset.annotate(distance=CosineDistance(typed_embedding, [float(x) for x in vector]))
        .annotate(score=Value(1.0, output_field=FloatField()) - F("distance"))
        .order_by("distance")
        .values("id", "score")
    )


class PgVectorStore:
    """Chunk rows in the current tenant schema (the default backend)."""

    def replace_document(
        self,
        *,
        tenant: str,
        bot: str,
        bot_id: int,
        kb_id: int,
        document_id: int,
        records: list[ChunkRecord],
        model: str,
    ) -> None:
        from apps.kb.models import Chunk

        _require_schema(tenant)
        dimensions = _record_dimensions(records)
        if any(r.document_id != document_id for r in records):
            raise VectorStoreError(f"records of another document passed to replace document {document_id}")
        rows = [
            Chunk(
                document_id=document_id,
                kb_id=kb_id,
                bot_id=bot_id,
                index=r.index,
                text=r.text,
                start_char=r.start_char,
                end_char=r.end_char,
                page=r.page,
                heading=r.heading[:300],
                embedding=r.vector,
                dimensions=dimensions if r.vector is not None else None,
                embedding_model=model if r.vector is not None else "",
            )
            for r in records
        ]
        with transaction.atomic():
            Chunk.objects.filter(document_id=document_id).delete()
            Chunk.objects.bulk_create(rows, batch_size=PG_INSERT_BATCH)

    def delete_document(self, *, tenant: str, bot: str, document_id: int) -> None:
        from apps.kb.models import Chunk

        _require_schema(tenant)
        Chunk.objects.filter(document_id=document_id, bot__name=bot).delete()

    def search(
        self, *, tenant: str, bot: str, kbs: list[str], vector: list[float], limit: int, model: str | None = None
    ) -> list[VectorHit]:
        from apps.kb.models import Chunk

        _require_schema(tenant)
        limit = _bounded_limit(limit)
        if not kbs or limit == 0:
            return []
        queryset = pg_search_queryset(bot=bot, kbs=kbs, vector=vector, model=model)
        with transaction.atomic():
            with connection.cursor() as cursor:
                # Local settings: they end with this transaction and never leak into the pooled connection.
                # The bot and KB conditions filter the index's candidates after the HNSW scan; an iterative
                # scan (pgvector >= 0.8) keeps scanning until `limit` rows pass them, in distance order,
                # instead of returning fewer when other bots' chunks are nearer.
                cursor.execute(
                    "SELECT set_config('hnsw.ef_search', %s, true), set_config('hnsw.iterative_scan', %s, true)",
                    [str(HNSW_EF_SEARCH), HNSW_ITERATIVE_SCAN],
                )
            ranked = list(queryset[:limit])
        details = {
            row["id"]: row
            for row in Chunk.objects.filter(pk__in=[r["id"] for r in ranked]).values(
                "id", "document_id", "document__path", "kb__name", "index", "text", "page", "heading"
            )
        }
        rows = [{**details[r["id"]], "score": r["score"]} for r in ranked if r["id"] in details]
        return [
            VectorHit(
                document_id=row["document_id"],
                document_path=row["document__path"],
                kb=row["kb__name"],
                index=row["index"],
                text=row["text"],
                page=row["page"],
                heading=row["heading"],
                score=float(row["score"]),
            )
            for row in rows
        ]

    def delete_bot(self, *, tenant: str, bot: str) -> None:
        from apps.kb.models import Chunk

        _require_schema(tenant)
        Chunk.objects.filter(bot__name=bot).delete()

    def count(self, *, tenant: str, bot: str) -> int:
        from apps.kb.models import Chunk

        _require_schema(tenant)
        return Chunk.objects.filter(bot__name=bot).count()


# --- Qdrant -------------------------------------------------------------------------------------------------------

_COLLECTION_UNSAFE = re.compile(r"[^a-z0-9_-]+")


def qdrant_collection_name(model: str, dimensions: int) -> str:
    """`gb_kb_<model slug>_<hash8>_<dims>`: readable, and distinct for models whose slugs collide."""
    slug = _COLLECTION_UNSAFE.sub("_", model.lower()).strip("_")[:60] or "model"
    digest = hashlib.sha256(model.encode()).hexdigest()[:8]
    return f"{QDRANT_COLLECTION_PREFIX}{slug}_{digest}_{dimensions}"


def qdrant_point_id(*, tenant: str, bot: str, document_id: int, index: int) -> str:
    return str(uuid.uuid5(QDRANT_POINT_NAMESPACE, f"{tenant}/{bot}/{document_id}/{index}"))


def _collection_missing(exc: BaseException, collection: str) -> bool:
    """Whether `exc` is Qdrant's answer that `collection` does not exist: a 404 whose error is `Not found:
    Collection `<name>` doesn't exist!` (Qdrant's StorageError::NotFound for a collection). Nothing else: a 404
    without that body (a proxy in front of Qdrant that does not know the path, a point not found) or any other
    failure is not "nothing there" and must reach the caller."""
    from qdrant_client.http.exceptions import UnexpectedResponse

    if not isinstance(exc, UnexpectedResponse) or exc.status_code != 404:
        return False
    try:
        error = exc.structured()["status"]["error"]
    except (ValueError, TypeError, KeyError):  # not Qdrant's JSON error envelope
        return False
    return isinstance(error, str) and f"Collection `{collection}` doesn't exist!" in error


def _scope_filter(
    *,
    tenant: str,
    bot: str,
    kbs: Sequence[str] | None = None,
    document_id: int | None = None,
    index_from: int | None = None,
) -> Any:
    """THE filter of every Qdrant read and delete: always the tenant and the bot, then what the call narrows."""
    from qdrant_client import models

    if not tenant or not bot:
        raise VectorStoreError("a Qdrant call needs a tenant and a bot")
    must: list[Any] = [
        models.FieldCondition(key="tenant", match=models.MatchValue(value=tenant)),
        models.FieldCondition(key="bot", match=models.MatchValue(value=bot)),
    ]
    if kbs is not None:
        must.append(models.FieldCondition(key="kb", match=models.MatchAny(any=list(kbs))))
    if document_id is not None:
        must.append(models.FieldCondition(key="document_id", match=models.MatchValue(value=document_id)))
    if index_from is not None:
        must.append(models.FieldCondition(key="index", range=models.Range(gte=index_from)))
    return models.Filter(must=must)


class QdrantStore:
    """Points in Qdrant: one collection per embedding model and size, tenants and bots as indexed payload.

    Replacing a document is not atomic (Qdrant has no transactions). The order makes the window harmless:
    1. upsert the new points (ids from tenant/bot/document/index, so they overwrite the old chunk at the
       same index, and a retried run writes the same points again);
    2. delete the document's points at indexes past the new last one, and in every other collection (a
       model change moves the document to another collection).
    A reader between 1 and 2 may see the new chunks plus a few stale trailing ones, never a missing
    document; a failure between them leaves stale chunks that the indexer's retry deletes.

    A collection can be dropped at any moment (by an operator, a Qdrant restored from an older snapshot), in
    particular between the listing of the collections and a call on one of them. A delete, count or search that
    meets Qdrant's "collection doesn't exist" has nothing there (nothing to delete, 0, no hits) and goes on; a
    write makes the collection again (another process doing the same at once is fine: its creation's "already
    exists" is). Either way the store forgets the collection was ready.
    """

    def __init__(self, client: QdrantClient) -> None:
        self.client = client
        self._ready: set[str] = set()

    # Collections --------------------------------------------------------------------------------------------
    def _kb_collections(self, dimensions: int | None = None) -> list[str]:
        names = [c.name for c in self.client.get_collections().collections]
        suffix = f"_{dimensions}" if dimensions is not None else ""
        return sorted(n for n in names if n.startswith(QDRANT_COLLECTION_PREFIX) and n.endswith(suffix))

    def _forget_if_missing(self, exc: BaseException, collection: str) -> bool:
        """`exc` says `collection` does not exist: it is no longer ready (the next write makes it again)."""
        if not _collection_missing(exc, collection):
            return False
        self._ready.discard(collection)
        return True

    @contextlib.contextmanager
    def _missing_is_nothing(self, collection: str) -> Iterator[None]:
        """The block's call on `collection` is skipped, as if it had found nothing, when Qdrant answers that the
        collection does not exist (dropped since it was listed); any other failure goes on."""
        from qdrant_client.http.exceptions import UnexpectedResponse

        try:
            yield
        except UnexpectedResponse as exc:
            if not self._forget_if_missing(exc, collection):
                raise

    def _ensure_collection(self, model: str, dimensions: int) -> str:
        """The collection of `model` and `dimensions`, created with its payload indexes if need be. Raises
        Qdrant's 404 if it is dropped again before its indexes are made (the caller's write makes it again)."""
        from qdrant_client import models

        name = qdrant_collection_name(model, dimensions)
        if name in self._ready:
            return name
        if not self.client.collection_exists(name):
            try:
                self.client.create_collection(
                    name,
                    vectors_config=models.VectorParams(size=dimensions, distance=models.Distance.COSINE),
                    hnsw_config=models.HnswConfigDiff(m=QDRANT_HNSW_M, ef_construct=QDRANT_HNSW_EF_CONSTRUCT),
                )
            except Exception:
                # Another worker created it first: fine, as long as it exists now.
                if not self.client.collection_exists(name):
                    raise
        # Idempotent, so run once per process and collection: a creator that died before this line (or a
        # collection made by hand) still gets its indexes. `is_tenant` makes Qdrant store each tenant's
        # points together and plan tenant-filtered searches per tenant.
        self.client.create_payload_index(
            name,
            "tenant",
            field_schema=models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True),
        )
        for field, schema in (
            ("bot", models.PayloadSchemaType.KEYWORD),
            ("kb", models.PayloadSchemaType.KEYWORD),
            ("document_id", models.PayloadSchemaType.INTEGER),
            # replace_document deletes a document's chunks past its new end by an `index` range: without an
            # index, Qdrant in strict mode (unindexed_filtering_update off) refuses that delete.
            ("index", models.PayloadSchemaType.INTEGER),
        ):
            self.client.create_payload_index(name, field, field_schema=schema)
        self._ready.add(name)
        return name

    # Writes ---------------------------------------------------------------------------------------------------
    def replace_document(
        self,
        *,
        tenant: str,
        bot: str,
        bot_id: int,
        kb_id: int,
        document_id: int,
        records: list[ChunkRecord],
        model: str,
    ) -> None:
        from qdrant_client import models
        from qdrant_client.http.exceptions import UnexpectedResponse

        dimensions = _record_dimensions(records)
        if any(r.document_id != document_id for r in records):
            raise VectorStoreError(f"records of another document passed to replace document {document_id}")
        target = None
        kept_indexes = 0
        if dimensions is not None:
            target = qdrant_collection_name(model, dimensions)
            points = [
                models.PointStruct(
                    id=qdrant_point_id(tenant=tenant, bot=bot, document_id=document_id, index=r.index),
                    vector=list(r.vector),
                    payload={
                        "tenant": tenant,
                        "bot": bot,
                        "kb": r.kb,
                        "document_id": document_id,
                        "document_path": r.document_path,
                        "index": r.index,
                        "text": r.text,
                        "start_char": r.start_char,
                        "end_char": r.end_char,
                        "page": r.page,
                        "heading": r.heading,
                        "model": model,
                    },
                )
                for r in records
                if r.vector is not None
            ]
            for attempt in range(1, QDRANT_WRITE_ATTEMPTS + 1):
                try:
                    self._ensure_collection(model, dimensions)
                    self._upsert(target, points)
                    break
                except UnexpectedResponse as exc:
                    # The collection is gone since this process made it ready, or since it made it just now
                    # (dropped by hand, a Qdrant restored from an older snapshot): make it again and write
                    # everything again, or every upsert here fails until the worker restarts.
                    if not self._forget_if_missing(exc, target) or attempt == QDRANT_WRITE_ATTEMPTS:
                        raise
            kept_indexes = max(r.index for r in records if r.vector is not None) + 1
            # Chunks without a vector cannot live in Qdrant: their indexes must not keep stale points.
            stale_inside = [r.index for r in records if r.vector is None and r.index < kept_indexes]
            if stale_inside:
                stale_ids = [qdrant_point_id(tenant=tenant, bot=bot, document_id=document_id, index=i)
                             for i in stale_inside]
                # Dropped since the upsert (with the points just written): nothing left to delete.
                with self._missing_is_nothing(target):
                    self.client.delete(target, points_selector=stale_ids, wait=True)
        for name in self._kb_collections():
            index_from = kept_indexes if name == target else None
            scope = _scope_filter(tenant=tenant, bot=bot, document_id=document_id, index_from=index_from)
            self._delete_where(name, scope)

    def _upsert(self, collection: str, points: list[Any]) -> None:
        """Upsert in batches of at most QDRANT_UPSERT_BATCH points and QDRANT_UPSERT_MAX_BYTES of JSON."""
        batch: list[Any] = []
        batch_bytes = 0
        for point in points:
            size = _point_json_bytes_max(point)
            if batch and (len(batch) == QDRANT_UPSERT_BATCH or batch_bytes + size > QDRANT_UPSERT_MAX_BYTES):
                self.client.upsert(collection, points=batch, wait=True)
                batch, batch_bytes = [], 0
            batch.append(point)
            batch_bytes += size
        if batch:
            self.client.upsert(collection, points=batch, wait=True)

    def delete_document(self, *, tenant: str, bot: str, document_id: int) -> None:
        for name in self._kb_collections():
            self._delete_where(name, _scope_filter(tenant=tenant, bot=bot, document_id=document_id))

    def _delete_where(self, collection: str, scope: Any) -> None:
        """Delete the points `scope` selects; a collection dropped since it was listed has none to delete."""
        from qdrant_client import models

        with self._missing_is_nothing(collection):
            self.client.delete(collection, points_selector=models.FilterSelector(filter=scope), wait=True)

    # Reads ----------------------------------------------------------------------------------------------------
    def search(
        self, *, tenant: str, bot: str, kbs: list[str], vector: list[float], limit: int, model: str | None = None
    ) -> list[VectorHit]:
        from qdrant_client import models

        limit = _bounded_limit(limit)
        dimensions = _query_dimensions(vector)
        if not kbs or limit == 0:
            return []
        if model is not None:
            # Asked directly: a collection that does not exist (never made, or dropped) has no hits, which the
            # query's 404 says as an existence check would, without a request more (a chat turn waits) and
            # without the collection being dropped between the check and the query.
            candidates = [qdrant_collection_name(model, dimensions)]
        else:
            candidates = self._kb_collections(dimensions)
        scope = _scope_filter(tenant=tenant, bot=bot, kbs=kbs)
        hits: list[VectorHit] = []
        for name in candidates:
            with self._missing_is_nothing(name):
                response = self.client.query_points(
                    name,
                    query=[float(x) for x in vector],
                    query_filter=scope,
                    limit=limit,
                    with_payload=True,
                    search_params=models.SearchParams(hnsw_ef=max(HNSW_EF_SEARCH, limit), exact=False),
                )
                hits.extend(_hit_from_point(point) for point in response.points)
        hits.sort(key=lambda hit: hit.score, reverse=True)
        return hits[:limit]

    def delete_bot(self, *, tenant: str, bot: str) -> None:
        """Every point of the bot in this tenant, in every collection (tenant deletion, bot removal)."""
        for collection in self._kb_collections():
            self._delete_where(collection, _scope_filter(tenant=tenant, bot=bot))

    def count(self, *, tenant: str, bot: str) -> int:
        scope = _scope_filter(tenant=tenant, bot=bot)
        total = 0
        for name in self._kb_collections():
            with self._missing_is_nothing(name):
                total += self.client.count(name, count_filter=scope, exact=True).count
        return total


def _point_json_bytes_max(point: Any) -> int:
    """An upper bound of the point's size in the upsert body: ASCII-escaped JSON (`json.dumps`) is never shorter
    than the client's compact UTF-8 JSON."""
    return (len(point.vector) * _JSON_FLOAT_MAX_BYTES + len(json.dumps(point.payload))
            + _JSON_POINT_OVERHEAD_BYTES)


def _hit_from_point(point: Any) -> VectorHit:
    payload = point.payload or {}
    return VectorHit(
        document_id=int(payload["document_id"]),
        document_path=str(payload.get("document_path", "")),
        kb=str(payload.get("kb", "")),
        index=int(payload.get("index", 0)),
        text=str(payload.get("text", "")),
        page=payload.get("page"),
        heading=str(payload.get("heading", "")),
        score=float(point.score),
    )


# --- Choosing the backend -----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _qdrant_store(url: str, api_key: str, timeout_s: int = QDRANT_TIMEOUT_S) -> QdrantStore:
    """One client per server, timeout and process: its HTTP connection pool and the store's known-collections
    set are reused by every call instead of rebuilt per search."""
    from qdrant_client import QdrantClient

    # No version probe at construction: it is a blocking request, and a mismatch is logged by the server.
    client = QdrantClient(url=url, api_key=api_key or None, timeout=timeout_s, check_compatibility=False)
    return QdrantStore(client)


def vector_store_for_settings(*, for_search: bool = False) -> VectorStore:
    """Qdrant when `QDRANT_URL` is set, else pgvector in the tenant schema (the embedded default).
    `for_search`: a client with the search timeout (QDRANT_SEARCH_TIMEOUT_S), for reads a turn waits on."""
    url = getattr(settings, "QDRANT_URL", "")
    if url:
        timeout_s = QDRANT_SEARCH_TIMEOUT_S if for_search else QDRANT_TIMEOUT_S
        return _qdrant_store(url, getattr(settings, "QDRANT_API_KEY", "") or "", timeout_s)
    return PgVectorStore()
