"""Hybrid search over a bot's knowledge bases: dense (embeddings) + lexical (PostgreSQL full text),
fused by weighted reciprocal rank, with a minimum dense similarity and a cap of chunks per document.

When the embedding service or the vector store fails, search answers from the lexical side alone and
says so (`degraded`), instead of failing the chat turn. Remote embedding endpoints and Qdrant are called through
circuit breakers (apps.kb.breakers): after a few outage-type failures in a row a search skips the dead service
at once (degraded) instead of waiting for its timeout on every turn, until one probe finds it back.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from functools import reduce
from operator import or_

from django.conf import settings
from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector
from django.db import connection

from apps.bots.config_csv import config_lookup
from apps.bots.models import Bot
from apps.bots.selectors import bot_config_values
from apps.kb.breakers import (
    KBServiceUnavailable,
    embedding_answered,
    embedding_breaker,
    embedding_outage,
    guarded,
    qdrant_answered,
    qdrant_breaker,
    qdrant_outage,
)
from apps.kb.embeddings import EmbeddingError, embedding_provider_for
from apps.kb.models import TEXT_SEARCH_CONFIG, Chunk
from apps.kb.vectorstores import QdrantStore, vector_store_for_settings

logger = logging.getLogger(__name__)

# RRF k: upstream uses 60. With k=60 the rank curve is so flat that any lexical match lifted dense ranks
# 2-6 above a dense top hit with no lexical match, pushing it out of the top 5; on our evaluation set
# (tests/kb/evalset) recall@5 was 0.956 at k=60 and 1.0 for every k from 2 to 20. Bots may set rag-rrf-k.
DEFAULT_RRF_K = 20
# Upstream defaults (spec 5.6-5.7): dense/sparse weights, dense similarity floor, results.
DEFAULT_DENSE_WEIGHT = 0.7
DEFAULT_SPARSE_WEIGHT = 0.3
DEFAULT_MIN_DENSE_SCORE = 0.20
DEFAULT_LIMIT = 5
# Candidates taken from each side before fusion: fusion needs more than the final count to re-rank.
CANDIDATES_PER_SIDE = 30
# One long document must not crowd out every other source in a prompt (bots: rag-max-chunks-per-document).
DEFAULT_MAX_CHUNKS_PER_DOCUMENT = 2
# Query terms used lexically; a pasted essay as a query would otherwise build a huge tsquery.
MAX_QUERY_TERMS = 32
MAX_LIMIT = 50
MODES = ("hybrid", "dense", "lexical")


@dataclass
class SearchHit:
    document_path: str
    kb: str
    index: int
    text: str
    page: int | None
    heading: str
    score: float = 0.0
    dense_score: float | None = None
    dense_rank: int | None = None
    lexical_score: float | None = None
    lexical_rank: int | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.document_path, self.index)

    def as_dict(self) -> dict:
        return {
            "source": self.document_path, "kb": self.kb, "chunk": self.index, "page": self.page,
            "heading": self.heading, "text": self.text, "score": round(self.score, 6),
            "dense_score": self.dense_score, "dense_rank": self.dense_rank,
            "lexical_score": self.lexical_score, "lexical_rank": self.lexical_rank,
        }


@dataclass
class SearchResult:
    mode: str
    hits: list[SearchHit] = field(default_factory=list)
    degraded: str = ""  # why the dense side was skipped, when it was


def _float(values: dict, key: str, default: float, low: float, high: float) -> float:
    """A bot's numeric setting, finite and clamped to [low, high]; anything unusable means the default.
    Written by tenant admins in config.csv: `-1`, `inf` or `nan` must not break (or divide by zero in) search."""
    try:
        value = float(config_lookup(values, key, "") or default)
    except (TypeError, ValueError):
        return default
    return min(max(value, low), high) if math.isfinite(value) else default


def _terms(query: str) -> list[str]:
    words = re.findall(r"[\w'-]{2,}", query.lower())
    return list(dict.fromkeys(words))[:MAX_QUERY_TERMS]


def lexical_search(*, bot: Bot, kbs: list[str], query: str, limit: int) -> list[SearchHit]:
    terms = _terms(query)
    if not terms:
        return []
    # Any term may match (OR), ranked by how well: an AND of every word would miss paraphrased questions.
    tsquery = reduce(or_, (SearchQuery(term, config=TEXT_SEARCH_CONFIG) for term in terms))
    vector = SearchVector("text", config=TEXT_SEARCH_CONFIG)
    rows = (
        Chunk.objects.filter(bot=bot, kb__name__in=kbs)
        .annotate(document_vector=vector)
        .filter(document_vector=tsquery)
        .annotate(rank=SearchRank(vector, tsquery))
        .select_related("document", "kb")
        .order_by("-rank", "id")[:limit]
    )
    return [
        SearchHit(document_path=c.document.path, kb=c.kb.name, index=c.index, text=c.text, page=c.page,
                  heading=c.heading, lexical_score=float(c.rank), lexical_rank=rank)
        for rank, c in enumerate(rows)
    ]


def dense_search(
    *, bot: Bot, kbs: list[str], query: str, limit: int, config: dict, min_score: float
) -> list[SearchHit]:
    provider = embedding_provider_for(config, for_query=True)
    # Each outside service goes through its circuit breaker: while one is open the search does not wait on it
    # (KBServiceUnavailable at once; kb_search answers lexically, degraded).
    with guarded(embedding_breaker(provider), embedding_outage, embedding_answered):
        vector = provider.embed([query])[0]
    # Only vectors of the same model compare: after a change of model, documents not yet indexed again are
    # found by the lexical side only.
    store = vector_store_for_settings(for_search=True)
    qdrant_url = getattr(settings, "QDRANT_URL", "") if isinstance(store, QdrantStore) else ""
    with guarded(qdrant_breaker(qdrant_url) if qdrant_url else None, qdrant_outage, qdrant_answered):
        hits = store.search(tenant=connection.schema_name, bot=bot.name, kbs=kbs, vector=vector, limit=limit,
                            model=provider.model)
    return [
        SearchHit(document_path=h.document_path, kb=h.kb, index=h.index, text=h.text, page=h.page, heading=h.heading,
                  dense_score=float(h.score), dense_rank=rank)
        for rank, h in enumerate(h for h in hits if h.score >= min_score)
    ]


def kb_search(
    *, bot: Bot, kbs: list[str], query: str, limit: int = DEFAULT_LIMIT, mode: str = "hybrid"
) -> SearchResult:
    """The best `limit` chunks of `kbs` for `query` (in the current tenant)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    limit = max(1, min(limit, MAX_LIMIT))
    config = bot_config_values(bot)
    result = SearchResult(mode=mode)
    dense: list[SearchHit] = []
    lexical: list[SearchHit] = []
    if mode in ("hybrid", "dense"):
        try:
            dense = dense_search(bot=bot, kbs=kbs, query=query, limit=CANDIDATES_PER_SIDE, config=config,
                                 min_score=_float(config, "rag-min-score", DEFAULT_MIN_DENSE_SCORE, -1.0, 1.0))
        except Exception as exc:  # noqa: BLE001 - any outage of the dense side degrades to lexical
            if isinstance(exc, KBServiceUnavailable):
                logger.info("vector search skipped: %s; answering lexically", exc)
            elif not isinstance(exc, EmbeddingError):
                logger.warning("vector search failed; answering lexically", exc_info=True)
            result.degraded = f"dense search unavailable ({type(exc).__name__}); lexical results only"
            result.mode = "lexical"
    if mode in ("hybrid", "lexical") or result.degraded:
        lexical = lexical_search(bot=bot, kbs=kbs, query=query, limit=CANDIDATES_PER_SIDE)
    dense_weight = _float(config, "rag-dense-weight", DEFAULT_DENSE_WEIGHT, 0.0, 1.0)
    sparse_weight = _float(config, "rag-sparse-weight", DEFAULT_SPARSE_WEIGHT, 0.0, 1.0)
    total = (dense_weight + sparse_weight) or 1.0
    k = _float(config, "rag-rrf-k", DEFAULT_RRF_K, 1.0, 1000.0)
    fused: dict[tuple[str, int], SearchHit] = {}
    for hits, weight in ((dense, dense_weight / total), (lexical, sparse_weight / total)):
        if result.mode != "hybrid":
            weight = 1.0
        for rank, hit in enumerate(hits):
            merged = fused.setdefault(hit.key, hit)
            if merged is not hit:
                merged.lexical_score, merged.lexical_rank = hit.lexical_score, hit.lexical_rank
            merged.score += weight / (k + rank + 1)
    per_document: dict[str, int] = {}
    cap = int(_float(config, "rag-max-chunks-per-document", DEFAULT_MAX_CHUNKS_PER_DOCUMENT, 1, MAX_LIMIT))
    for hit in sorted(fused.values(), key=lambda h: -h.score):
        if per_document.get(hit.document_path, 0) >= cap:
            continue
        per_document[hit.document_path] = per_document.get(hit.document_path, 0) + 1
        result.hits.append(hit)
        if len(result.hits) >= limit:
            break
    return result
