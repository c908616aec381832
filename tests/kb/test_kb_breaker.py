"""Circuit breakers of KB search's outside services: Qdrant (one, platform-wide, keyed by its URL) and remote
embedding endpoints (keyed by endpoint, model and key, so one tenant's broken endpoint opens no other's).

Against our Qdrant fake and embeddings fake on loopback. Before the breakers, a hung Qdrant cost every search
its full search timeout; now after KB_BREAKER_THRESHOLD outage-type failures (a hang, a 503, a closed port) the
service receives no more requests while the breaker is open and each search answers lexically at once, marked
degraded; after KB_BREAKER_TIMEOUT_S one probe goes through and a healthy answer closes it. A 4xx is an answer
of a live service: it never opens a breaker. Request counts are asserted, not timings.
"""

from __future__ import annotations

import socket
import time
from types import SimpleNamespace

import pytest
from django_tenants.utils import schema_context

from apps.bots.models import Bot, BotConfig
from apps.kb import embeddings, vectorstores
from apps.kb.breakers import embedding_breaker, qdrant_breaker
from apps.kb.embeddings import embedding_provider_for
from apps.kb.search import kb_search
from apps.llm.breaker import CLOSED, OPEN, service_state
from tests.kb.support import document_indexed as _index
from tests.support.openai_fake import FakeEmbeddingsServer

pytestmark = pytest.mark.django_db

THRESHOLD = 3
QUESTION = "when does the shop open"
QUERY_PATH_SUFFIX = "/points/query"
# What a search says when a breaker skipped the service (the exception's name is in `degraded`).
SKIPPED = "KBServiceUnavailable"


@pytest.fixture
def limits(settings, monkeypatch):
    """A small threshold, a long breaker timeout (lowered by the tests when they want the probe), and short
    search timeouts so a hung service fails each call quickly."""
    settings.KB_BREAKER_THRESHOLD = THRESHOLD
    settings.KB_BREAKER_TIMEOUT_S = 300.0
    monkeypatch.setattr(vectorstores, "QDRANT_SEARCH_TIMEOUT_S", 0.5)
    monkeypatch.setattr(embeddings, "QUERY_TIMEOUT_S", 0.5)
    return settings


def _half_open(settings) -> None:
    """Make the open breaker's timeout pass: lowered, then waited out."""
    settings.KB_BREAKER_TIMEOUT_S = 0.2
    time.sleep(0.3)


@pytest.fixture
def shop(canary_tenants, local_storage, qdrant_platform, limits):
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="shop")
        _index(bot, "hours.md", f"# Hours\nThe shop opens at nine. Code {canary_tenants.a.canary}.")
    return SimpleNamespace(tenants=canary_tenants, fake=qdrant_platform, settings=limits,
                           canary=canary_tenants.a.canary)


def _queries(fake) -> int:
    return sum(1 for r in fake.requests if r.method == "POST" and r.path.endswith(QUERY_PATH_SUFFIX))


def _search(shop, bot_name: str = "shop", schema: str | None = None):
    with schema_context(schema or shop.tenants.a.schema_name):
        return kb_search(bot=Bot.objects.get(name=bot_name), kbs=["faq"], query=QUESTION)


def _closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize("failure", ["hang", "503"])
def test_qdrant_down_opens_the_breaker_then_searches_skip_it_and_a_probe_closes_it(shop, failure):
    fake = shop.fake
    assert not _search(shop).degraded and _queries(fake) == 1
    if failure == "hang":
        fake.hang_s = 5.0
    else:
        fake.outage_status = 503
    for _ in range(THRESHOLD):
        result = _search(shop)
        assert result.degraded and SKIPPED not in result.degraded
    assert _queries(fake) == 1 + THRESHOLD
    assert service_state(qdrant_breaker(fake.url)).state == OPEN

    for _ in range(5):  # open: no request reaches Qdrant, the answer is lexical and degraded at once
        result = _search(shop)
        assert SKIPPED in result.degraded and result.mode == "lexical"
        assert result.hits and shop.canary in result.hits[0].text  # the user still gets passages
    assert _queries(fake) == 1 + THRESHOLD

    # After the breaker timeout: one probe; still down, so it opens again and the next search is refused.
    _half_open(shop.settings)
    assert _search(shop).degraded and _queries(fake) == 2 + THRESHOLD
    shop.settings.KB_BREAKER_TIMEOUT_S = 300.0
    assert SKIPPED in _search(shop).degraded and _queries(fake) == 2 + THRESHOLD

    # Qdrant is back: after the timeout one probe succeeds and closes the breaker.
    fake.hang_s, fake.outage_status = 0.0, None
    _half_open(shop.settings)
    result = _search(shop)
    assert not result.degraded and result.hits and _queries(fake) == 3 + THRESHOLD
    assert service_state(qdrant_breaker(fake.url)).state == CLOSED
    assert not _search(shop).degraded and _queries(fake) == 4 + THRESHOLD


def test_a_closed_qdrant_port_counts_as_down(shop):
    url = _closed_port_url()
    shop.settings.QDRANT_URL = url
    vectorstores._qdrant_store.cache_clear()
    try:
        for _ in range(THRESHOLD):
            result = _search(shop)
            assert result.degraded and SKIPPED not in result.degraded
        assert service_state(qdrant_breaker(url)).state == OPEN
        result = _search(shop)
        assert SKIPPED in result.degraded and result.hits and shop.canary in result.hits[0].text
    finally:
        vectorstores._qdrant_store.cache_clear()


def test_a_qdrant_4xx_is_an_answer_not_an_outage(shop):
    fake = shop.fake
    fake.outage_status = 400
    for _ in range(THRESHOLD + 2):
        result = _search(shop)
        assert result.degraded and SKIPPED not in result.degraded
    assert _queries(fake) == THRESHOLD + 2  # every search still asked Qdrant
    assert service_state(qdrant_breaker(fake.url)).state == CLOSED


# --- embedding endpoints ------------------------------------------------------------------------------------


@pytest.fixture
def embedding_shops(canary_tenants, local_storage, limits):
    """A bot "shop" in each tenant, both on the same embeddings endpoint and model, each with its own key."""
    limits.LLM_ALLOW_PRIVATE_HOSTS = True
    server = FakeEmbeddingsServer().start()
    for tenant, key in ((canary_tenants.a, "key-of-a"), (canary_tenants.b, "key-of-b")):
        with schema_context(tenant.schema_name):
            bot = Bot.objects.create(name="shop")
            _index(bot, "hours.md", f"# Hours\nThe shop opens at nine. Code {tenant.canary}.")
            for line, (name, value) in enumerate((("embedding-url", server.base_url), ("embedding-model", "fake-embed"),
                                                  ("embedding-dimensions", str(server.dimensions)),
                                                  ("embedding-key", key)), start=1):
                BotConfig.objects.create(bot=bot, key=name, value=value, line=line)
    yield SimpleNamespace(tenants=canary_tenants, server=server, settings=limits)
    server.stop()


def _embedding_breaker_of(tenant):
    from apps.bots.selectors import bot_config_values

    with schema_context(tenant.schema_name):
        return embedding_breaker(embedding_provider_for(bot_config_values(Bot.objects.get(name="shop")),
                                                        for_query=True))


def _search_in(tenant):
    with schema_context(tenant.schema_name):
        return kb_search(bot=Bot.objects.get(name="shop"), kbs=["faq"], query=QUESTION)


@pytest.mark.parametrize("failure", ["hang", "503"])
def test_a_down_embedding_endpoint_opens_its_breaker_then_a_probe_closes_it(embedding_shops, failure):
    env, a = embedding_shops, embedding_shops.tenants.a
    server = env.server
    if failure == "hang":
        server.delay_s = 2.0
    else:
        server.fail_status = 503
    for _ in range(THRESHOLD):
        result = _search_in(a)
        assert result.degraded and SKIPPED not in result.degraded
    assert len(server.requests) == THRESHOLD
    assert service_state(_embedding_breaker_of(a)).state == OPEN
    for _ in range(5):
        result = _search_in(a)
        assert SKIPPED in result.degraded and result.hits and a.canary in result.hits[0].text
    assert len(server.requests) == THRESHOLD

    server.delay_s, server.fail_status = 0.0, None
    _half_open(env.settings)
    assert not _search_in(a).degraded and len(server.requests) == THRESHOLD + 1
    assert service_state(_embedding_breaker_of(a)).state == CLOSED


def test_a_closed_embedding_port_counts_as_down(embedding_shops):
    a = embedding_shops.tenants.a
    with schema_context(a.schema_name):
        BotConfig.objects.filter(key="embedding-url").update(value=_closed_port_url() + "/v1")
    for _ in range(THRESHOLD):
        assert SKIPPED not in _search_in(a).degraded
    assert service_state(_embedding_breaker_of(a)).state == OPEN
    assert SKIPPED in _search_in(a).degraded


def test_an_embedding_4xx_does_not_open_the_breaker(embedding_shops):
    a, server = embedding_shops.tenants.a, embedding_shops.server
    server.fail_status = 400
    for _ in range(THRESHOLD + 2):
        assert SKIPPED not in _search_in(a).degraded
    assert len(server.requests) == THRESHOLD + 2
    assert service_state(_embedding_breaker_of(a)).state == CLOSED


def test_one_tenants_failing_embedding_key_opens_no_other_tenants_breaker(embedding_shops):
    """Same endpoint and model, another key: another breaker. Tenant A's opens; tenant B's calls still go."""
    a, b, server = embedding_shops.tenants.a, embedding_shops.tenants.b, embedding_shops.server
    assert _embedding_breaker_of(a).key != _embedding_breaker_of(b).key
    server.fail_status = 503
    for _ in range(THRESHOLD):
        _search_in(a)
    assert service_state(_embedding_breaker_of(a)).state == OPEN
    server.fail_status = None
    result = _search_in(b)
    assert not result.degraded and len(server.requests) == THRESHOLD + 1
    assert SKIPPED in _search_in(a).degraded and len(server.requests) == THRESHOLD + 1
    assert service_state(_embedding_breaker_of(b)).state == CLOSED


# --- the chat turn -----------------------------------------------------------------------------------------


def test_the_chat_turn_learns_that_the_kb_search_was_degraded(shop):
    from apps.sessions.answer import kb_passages

    with schema_context(shop.tenants.a.schema_name):
        turn = SimpleNamespace(state={"kbs": ["faq"]}, session=SimpleNamespace(bot=Bot.objects.get(name="shop")))
        hits, degraded = kb_passages(turn, QUESTION)
        assert hits and degraded is False
        shop.fake.outage_status = 503
        for _ in range(THRESHOLD + 1):
            hits, degraded = kb_passages(turn, QUESTION)
            assert degraded is True and hits and shop.canary in hits[0].text
