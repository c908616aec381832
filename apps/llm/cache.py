"""The LLM answer cache (spec §7.4): exact hits on the whole request, semantic hits on the latest question.

Keys (raw Redis, see apps.llm.store) carry the tenant's schema and the bot id in the key itself, so an
entry can only ever be found by the same tenant's same bot (two tenants' bots share primary keys):

* `llm:cache:<tenant>:<bot>:<model>:e:<sha256 of (model, messages, tool definitions)>` -> JSON
  `{response, model, question, created, hit_count, embedding?}`, with the bot's `llm-cache-ttl`;
* `llm:cache:<tenant>:<bot>:<model>:ix:<context>` -> a list of the newest `SEMANTIC_CANDIDATES_MAX` entry
  hashes whose requests had the same system prompt(s) and tools (`<context>` hashes those): the
  candidates of a semantic lookup.

A semantic lookup embeds only the latest user question with the offline MiniLM model
(apps.kb.embeddings.LocalMiniLM: no outside call, no key) and takes the most similar candidate at or
above `llm-cache-threshold` (cosine). Candidates share the system prompt, which holds the KB context and
the session context, so a question is only matched against answers given with the same instructions.

Failure modes this module prevents:

* Cross-tenant or cross-bot answers: the scope is in every key, never derived from the cache's key function.
* Stale answers for changed tools: the whole definitions (description, parameters) are in the key.
* A fallback's answer served in the primary's name: apps.llm.services stores only answers of the chain's
  first provider (`<model>` in the key is the primary model).
* Unbounded scans: a lookup reads at most SEMANTIC_CANDIDATES_MAX entries (one LRANGE, one MGET).
* A cache outage breaking chats: every Redis or embedding error is logged and treated as a miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from apps.llm.config import LLMSettings
from apps.llm.store import redis_client, redis_delete_matching

logger = logging.getLogger(__name__)

KEY_PREFIX = "llm:cache"
# Spec §7.4: a semantic lookup compares against at most 100 stored answers of the same context.
SEMANTIC_CANDIDATES_MAX = 100
# A cached answer is replayed to on_delta in pieces of this many characters, as a live stream would be.
REPLAY_CHUNK_CHARS = 24
# Answers longer than this are not cached: they are rare, and a cache entry should stay small.
CACHE_VALUE_MAX_CHARS = 64 * 1024


@dataclass(frozen=True)
class CachedAnswer:
    response: str
    model: str
    kind: str  # "exact" or "semantic"
    similarity: float


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def latest_question(messages: Sequence[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text(message.get("content")).strip()
    return ""


def _standalone(messages: Sequence[dict[str, Any]]) -> bool:
    """The question opens the conversation: no earlier question, answer or tool result (the bot's own greeting
    before it, start.bas output, does not count). Only such questions take part in semantic matching, which
    compares the latest question alone: an answer that built on one user's conversation must not reach
    another user who asks something similar."""
    roles = [m.get("role") for m in messages if m.get("role") in ("user", "assistant", "tool")]
    while roles and roles[0] == "assistant":
        roles.pop(0)
    return roles == ["user"]


def _tool_definitions(tools: Sequence[dict[str, Any]] | None) -> list[Any]:
    """The tools as the model sees them (name, description, parameters), in a stable order: a tool whose
    description or parameters changed gets answers of its own, not the ones given for the old definition."""
    return sorted((t.get("function") or t for t in tools or []),
                  key=lambda f: json.dumps(f, sort_keys=True, ensure_ascii=False, default=str))


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def _scope(settings: LLMSettings) -> str:
    return f"{KEY_PREFIX}:{settings.tenant}:{settings.bot_id}:{settings.primary_model}"


def exact_key(settings: LLMSettings, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None) -> str:
    digest = _digest({"model": settings.primary_model, "messages": list(messages),
                      "tools": _tool_definitions(tools)})
    return f"{_scope(settings)}:e:{digest}"


def index_key(settings: LLMSettings, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None) -> str:
    system = [_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")]
    return f"{_scope(settings)}:ix:{_digest({'system': system, 'tools': _tool_definitions(tools)})[:32]}"


def _embed(question: str) -> list[float] | None:
    from apps.kb.embeddings import EmbeddingError, LocalMiniLM

    try:
        return LocalMiniLM().embed([question])[0]
    except EmbeddingError as exc:
        logger.warning("llm: semantic cache off for this call: %s", exc)
        return None


def _hit(client: Any, key: str, entry: dict[str, Any], ttl_s: int) -> None:
    entry["hit_count"] = int(entry.get("hit_count", 0)) + 1
    client.set(key, json.dumps(entry), ex=ttl_s)  # a hit refreshes the TTL (§7.4)


def cache_lookup(settings: LLMSettings, messages: Sequence[dict[str, Any]],
                 tools: Sequence[dict[str, Any]] | None) -> CachedAnswer | None:
    """A cached answer for this request, or None. Exact first; then semantic when the bot enables it."""
    if not settings.cache_enabled or not settings.configured:
        return None
    client = redis_client()
    if client is None:
        return None
    try:
        key = exact_key(settings, messages, tools)
        raw = client.get(key)
        if raw is not None:
            entry = json.loads(raw)
            _hit(client, key, entry, settings.cache_ttl_s)
            return CachedAnswer(entry["response"], entry.get("model", ""), "exact", 1.0)
        if not settings.cache_semantic or not _standalone(messages):
            return None
        question = latest_question(messages)
        if not question:
            return None
        hashes = client.lrange(index_key(settings, messages, tools), 0, SEMANTIC_CANDIDATES_MAX - 1)
        if not hashes:
            return None
        vector = _embed(question)
        if vector is None:
            return None
        keys = [f"{_scope(settings)}:e:{h.decode() if isinstance(h, bytes) else h}" for h in hashes]
        best: tuple[float, str, dict[str, Any]] | None = None
        query = np.asarray(vector, dtype=np.float64)
        for candidate_key, candidate in zip(keys, client.mget(keys), strict=True):
            if candidate is None:
                continue  # expired
            entry = json.loads(candidate)
            stored = entry.get("embedding")
            if not stored or len(stored) != len(vector):
                continue
            similarity = float(np.dot(query, np.asarray(stored, dtype=np.float64)))  # both L2-normalised
            if similarity >= settings.cache_threshold and (best is None or similarity > best[0]):
                best = (similarity, candidate_key, entry)
        if best is None:
            return None
        similarity, candidate_key, entry = best
        _hit(client, candidate_key, entry, settings.cache_ttl_s)
        return CachedAnswer(entry["response"], entry.get("model", ""), "semantic", similarity)
    except Exception as exc:  # noqa: BLE001 - the cache is an optimisation: a failure is a miss
        logger.warning("llm: cache lookup failed (%s); asking the model", exc)
        return None


def cache_store(settings: LLMSettings, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None,
                response: str, model: str) -> None:
    """Keep an answer for later identical (or, with llm-cache-semantic, similar) questions."""
    if not settings.cache_enabled or not response.strip() or len(response) > CACHE_VALUE_MAX_CHARS:
        return
    client = redis_client()
    if client is None:
        return
    try:
        key = exact_key(settings, messages, tools)
        question = latest_question(messages)
        entry: dict[str, Any] = {"response": response, "model": model, "question": question,
                                 "created": time.time(), "hit_count": 0}
        vector = _embed(question) if settings.cache_semantic and question and _standalone(messages) else None
        if vector is not None:
            entry["embedding"] = [round(x, 6) for x in vector]
        pipe = client.pipeline()
        pipe.set(key, json.dumps(entry), ex=settings.cache_ttl_s)
        if vector is not None:
            index = index_key(settings, messages, tools)
            pipe.lrem(index, 0, key.rsplit(":", 1)[1])
            pipe.lpush(index, key.rsplit(":", 1)[1])
            pipe.ltrim(index, 0, SEMANTIC_CANDIDATES_MAX - 1)
            pipe.expire(index, settings.cache_ttl_s)
        pipe.execute()
    except Exception as exc:  # noqa: BLE001
        logger.warning("llm: could not store an answer in the cache: %s", exc)


def _delete_matching(pattern: str) -> int:
    client = redis_client()
    return 0 if client is None else redis_delete_matching(client, pattern)


def cache_clear(settings: LLMSettings) -> int:
    """Drop every cached answer of this tenant's bot (all models); returns how many keys went."""
    return _delete_matching(f"{KEY_PREFIX}:{settings.tenant}:{settings.bot_id}:*")


def cache_clear_tenant(tenant: str) -> int:
    """Drop every cached answer of every bot of the tenant (schema name); returns how many keys went. A data
    subject's erasure calls it: entries keep questions verbatim and cannot be told apart by person."""
    return _delete_matching(f"{KEY_PREFIX}:{tenant}:*")
