"""POST /api/kb/search: signed-in tenant users get chunks with scores and sources, from their tenant only;
the same pipeline works with Qdrant as the vector store."""

import json

import pytest
from django.test import Client
from django_tenants.utils import schema_context

from apps.bots.models import Bot
from apps.kb.indexing import document_index
from apps.kb.search import kb_search
from tests.kb.support import document_indexed as _index

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_tenants(canary_tenants, local_storage):
    a, b = canary_tenants.a, canary_tenants.b
    with schema_context(a.schema_name):
        _index(Bot.objects.create(name="shop"), "hours.md", f"# Hours\nThe shop opens at nine. Code {a.canary}.")
    with schema_context(b.schema_name):
        _index(Bot.objects.create(name="shop"), "hours.md", f"# Hours\nThe shop opens at ten. Code {b.canary}.")
    return canary_tenants


def _client(tenant) -> Client:
    client = Client(HTTP_HOST=tenant.host)
    assert client.post("/accounts/login/", {"username": "admin", "password": tenant.admin_password}).status_code == 302
    return client


def _search(client: Client, body: object):
    return client.post("/api/kb/search", json.dumps(body), content_type="application/json")


def test_search_returns_scored_chunks_with_sources_from_the_callers_tenant_only(two_tenants):
    a, b = two_tenants.a, two_tenants.b
    response = _search(_client(a), {"bot": "shop", "query": "when does the shop open?"})
    assert response.status_code == 200
    body = response.json()
    assert body["mode"] == "hybrid" and body["hits"]
    top = body["hits"][0]
    assert top["source"] == "shop.gbai/shop.gbkb/faq/hours.md" and top["kb"] == "faq" and top["score"] > 0
    assert a.canary in top["text"]
    assert all(b.canary not in hit["text"] for hit in body["hits"])


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"bot": "shop"}, 400, "query"),
        ({"bot": "nope", "query": "x"}, 404, "bot"),
        ({"bot": "shop", "query": "x", "limit": 0}, 400, "limit"),
        ({"bot": "shop", "query": "x", "mode": "magic"}, 400, "mode"),
        ({"bot": "shop", "query": "x", "kbs": "faq"}, 400, "kbs"),
        (["not", "an", "object"], 400, "object"),
    ],
)
def test_bad_requests_get_specific_errors(two_tenants, body, status, message):
    response = _search(_client(two_tenants.a), body)
    assert response.status_code == status and message in response.json()["error"]


def test_anonymous_callers_are_refused_with_a_pointer_to_sign_in_or_a_key(two_tenants):
    response = _search(Client(HTTP_HOST=two_tenants.a.host), {"bot": "shop", "query": "open"})
    assert response.status_code == 401 and "API key" in response.json()["error"]


def test_the_pipeline_works_with_qdrant_as_the_vector_store(canary_tenants, local_storage, qdrant_platform):
    """QDRANT_URL and QDRANT_API_KEY point at our Qdrant server on loopback: indexing, search, removal and the
    tenant purge go through the platform's own client, as in production."""
    from apps.kb import services
    from apps.kb.models import Chunk
    from apps.kb.vectorstores import HNSW_EF_SEARCH, QDRANT_COLLECTION_PREFIX, QdrantStore, vector_store_for_settings

    store = vector_store_for_settings()
    assert isinstance(store, QdrantStore)
    schema = canary_tenants.a.schema_name
    with schema_context(schema):
        bot = Bot.objects.create(name="shop")
        _index(bot, "boots.md", "# Boots\nWax leather boots twice a year to keep them waterproof.")
        assert Chunk.objects.filter(bot=bot, embedding__isnull=True).exists()  # text for lexical search
        result = kb_search(bot=bot, kbs=["faq"], query="how often should boots be waxed", mode="dense")
        assert result.hits and "Wax leather boots" in result.hits[0].text and not result.degraded
        assert store.count(tenant=schema, bot="shop") == 1
        assert services.document_remove(path="shop.gbai/shop.gbkb/faq/boots.md")
        assert store.count(tenant=schema, bot="shop") == 0
        _index(bot, "boots.md", "# Boots\nWax leather boots twice a year.")
        store.delete_bot(tenant=schema, bot="shop")  # what tenant deletion calls
        assert store.count(tenant=schema, bot="shop") == 0
    (collection,) = qdrant_platform.collection_names()
    assert collection.startswith(QDRANT_COLLECTION_PREFIX)
    assert qdrant_platform.payload_index(collection, "tenant").is_tenant is True
    (query,) = qdrant_platform.queries
    assert query.collection == collection and query.hnsw_ef == HNSW_EF_SEARCH
    assert {c.key: c.match.value for c in query.filter.must if c.key in ("tenant", "bot")} == {
        "tenant": schema, "bot": "shop"}


def test_use_kb_and_think_kb_in_a_script(two_tenants):
    from apps.basic.vm import run_source
    from apps.bots.host import BotHost

    with schema_context(two_tenants.a.schema_name):
        bot = Bot.objects.get(name="shop")
        host = BotHost(bot)
        result = run_source('USE KB "faq"\nfound = THINK KB "when does the shop open"\nRETURN found', host)
        assert result.status == "done", result.error
        assert host.kbs == ["faq"]
        assert result.value and two_tenants.a.canary in result.value[0]["text"]
        run_source('CLEAR KB "faq"', host)
        assert host.kbs == []


def test_minimum_score_and_per_document_cap_come_from_the_bot_config(canary_tenants, local_storage):
    from apps.bots.models import BotConfig

    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="shop")
        long_text = " ".join(f"Paragraph {i} is about tents and how to pitch tents in wind." * 8 for i in range(12))
        _index(bot, "tents.md", long_text)
        assert len(kb_search(bot=bot, kbs=["faq"], query="pitch tents in wind", limit=10).hits) == 2
        BotConfig.objects.create(bot=bot, key="rag-max-chunks-per-document", value="4", line=1)
        assert len(kb_search(bot=bot, kbs=["faq"], query="pitch tents in wind", limit=10).hits) == 4
        BotConfig.objects.create(bot=bot, key="rag-min-score", value="0.99", line=2)
        dense = kb_search(bot=bot, kbs=["faq"], query="pitch tents in wind", limit=10, mode="dense")
        assert dense.hits == []


@pytest.mark.parametrize("value", ["-1", "0", "inf", "nan", "-inf", "1e400", "x"])
def test_unusable_search_settings_fall_back_or_clamp_instead_of_failing(two_tenants, value):
    from apps.bots.models import BotConfig

    with schema_context(two_tenants.a.schema_name):
        bot = Bot.objects.get(name="shop")
        for line, key in enumerate(("rag-rrf-k", "rag-max-chunks-per-document", "rag-dense-weight",
                                    "rag-sparse-weight", "rag-min-score"), start=1):
            BotConfig.objects.create(bot=bot, key=key, value=value, line=line)
        result = kb_search(bot=bot, kbs=["faq"], query="when does the shop open")
        assert all(h.score == h.score for h in result.hits)  # no NaN scores


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never answers (a hung Qdrant or embedding service)."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


# A hung dependency costs a turn at most its search timeout (5 s); before, 30 s (Qdrant) or 3 x 60 s
# (embeddings with retries). The bound is loose: it tells a bounded wait from a hang, not a speed.
HANG_BOUND_S = 20


def test_a_hung_qdrant_costs_a_search_seconds_then_it_answers_lexically(two_tenants, settings, silent_server):
    import time

    settings.QDRANT_URL = silent_server
    with schema_context(two_tenants.a.schema_name):
        started = time.monotonic()
        result = kb_search(bot=Bot.objects.get(name="shop"), kbs=["faq"], query="when does the shop open")
        elapsed = time.monotonic() - started
    assert result.degraded and result.hits and two_tenants.a.canary in result.hits[0].text
    assert elapsed < HANG_BOUND_S, elapsed


def test_a_hung_embedding_service_costs_a_search_seconds_then_it_answers_lexically(two_tenants, settings,
                                                                                    silent_server):
    import time

    from apps.bots.models import BotConfig

    settings.LLM_ALLOW_PRIVATE_HOSTS = True
    with schema_context(two_tenants.a.schema_name):
        bot = Bot.objects.get(name="shop")
        BotConfig.objects.create(bot=bot, key="embedding-url", value=silent_server + "/v1", line=1)
        started = time.monotonic()
        result = kb_search(bot=bot, kbs=["faq"], query="when does the shop open")
        elapsed = time.monotonic() - started
    assert result.degraded and result.hits and two_tenants.a.canary in result.hits[0].text
    assert elapsed < HANG_BOUND_S, elapsed


def test_a_new_embedding_model_reindexes_the_bots_documents_and_never_mixes_vectors(
        two_tenants, embeddings_server, django_capture_on_commit_callbacks):
    from apps.bots.services import config_sync
    from apps.kb.models import Chunk, Document

    embeddings_server.dimensions = 384  # MiniLM's size: only the model tells the two sets of vectors apart
    with schema_context(two_tenants.a.schema_name):
        bot = Bot.objects.get(name="shop")
        assert kb_search(bot=bot, kbs=["faq"], query="when does the shop open", mode="dense").hits
        # The fake's vectors are random per text: any score counts (rag-min-score -1).
        config = (f"name,value\nembedding-url,{embeddings_server.base_url}\nembedding-model,fake-embed\n"
                  f"embedding-dimensions,{embeddings_server.dimensions}\nrag-min-score,-1\n")
        with django_capture_on_commit_callbacks(execute=False) as queued:
            config_sync(bot=bot, data=config.encode())
        document = Document.objects.get(kb__bot=bot)
        assert document.status == Document.Status.PENDING
        assert sum("documents_reindex" in getattr(c, "__qualname__", "") for c in queued) == 1
        # Until it is indexed again, the old model's vectors answer no query of the new model.
        assert kb_search(bot=bot, kbs=["faq"], query="when does the shop open", mode="dense").hits == []
        assert document_index(document_id=document.pk).status == "indexed"
        assert set(Chunk.objects.filter(document=document).values_list("embedding_model", flat=True)) == {"fake-embed"}
        hits = kb_search(bot=bot, kbs=["faq"], query="when does the shop open", mode="dense").hits
        assert hits and two_tenants.a.canary in hits[0].text
        # The same settings written again (another key changed) index nothing again.
        with django_capture_on_commit_callbacks(execute=False) as queued:
            config_sync(bot=bot, data=(config + "llm-model,x\n").encode())
        assert not any("documents_reindex" in getattr(c, "__qualname__", "") for c in queued)
        assert Document.objects.get(pk=document.pk).status == Document.Status.INDEXED
