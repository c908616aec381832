"""Retrieval quality on our own evaluation set (tests/kb/evalset): recall@5 of dense, lexical and hybrid
search over real indexed documents (offline MiniLM embeddings, pgvector, PostgreSQL full text).

A question counts as answered when one of its top-5 chunks contains its `answer_contains` phrase.
"""

import json
import re
from pathlib import Path

import pytest
from django_tenants.utils import schema_context

from apps.bots.models import Bot
from apps.drive.storage import tenant_drive
from apps.kb.indexing import document_index
from apps.kb.search import kb_search
from apps.kb.services import document_register

pytestmark = pytest.mark.django_db
EVALSET = Path(__file__).parent / "evalset"
TOP_K = 5


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


@pytest.fixture
def indexed_bot(canary_tenants, local_storage):
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="outfitters")
        for path in sorted((EVALSET / "docs").iterdir()):
            key = f"outfitters.gbai/outfitters.gbkb/help/{path.name}"
            etag = tenant_drive().write(key, path.read_bytes())
            document = document_register(bot=bot, kb_name="help", path=key, etag=etag, size=path.stat().st_size)
            assert document_index(document_id=document.pk).status == "indexed", path.name
        yield bot


def _recall(bot: Bot, questions: list[dict], mode: str) -> float:
    answered = 0
    for item in questions:
        hits = kb_search(bot=bot, kbs=["help"], query=item["question"], limit=TOP_K, mode=mode).hits
        if any(_normal(item["answer_contains"]) in _normal(hit.text) for hit in hits):
            answered += 1
    return answered / len(questions)


def test_hybrid_recall_at_5_beats_dense_and_lexical_alone(indexed_bot, capsys):
    questions = json.loads((EVALSET / "questions.json").read_text())
    assert len(questions) >= 40
    recall = {mode: _recall(indexed_bot, questions, mode) for mode in ("dense", "lexical", "hybrid")}
    with capsys.disabled():
        print("\nrecall@5 over", len(questions), "questions:", {m: round(r, 3) for m, r in recall.items()})
    assert recall["hybrid"] > recall["dense"]
    assert recall["hybrid"] > recall["lexical"]


def test_search_degrades_to_lexical_when_embeddings_are_down(indexed_bot, monkeypatch):
    from apps.kb import search
    from apps.kb.embeddings import EmbeddingError

    def down(config):
        raise EmbeddingError("embedding service unreachable")

    monkeypatch.setattr(search, "embedding_provider_for", down)
    result = kb_search(bot=indexed_bot, kbs=["help"], query="how long do I have to return an item", limit=TOP_K)
    assert result.mode == "lexical" and "unavailable" in result.degraded
    assert result.hits and all(h.dense_score is None and h.lexical_rank is not None for h in result.hits)
