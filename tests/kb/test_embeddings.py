"""Embedding providers: the offline MiniLM (real model, real tokenizer) and an OpenAI-compatible endpoint
(the real `openai` client against our fake server on loopback)."""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest

from apps.kb import embeddings
from apps.kb.embeddings import (
    MINILM_DIMENSIONS,
    MINILM_MODEL,
    REMOTE_DEFAULT_MODEL,
    EmbeddingError,
    EmbeddingProvider,
    LocalMiniLM,
    OpenAIEmbeddings,
    embedding_provider_for,
    guess_dimensions,
)
from tests.support.openai_fake import FakeEmbeddingsServer, fake_vector


def _cos(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b))


# --- LocalMiniLM -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> LocalMiniLM:
    return LocalMiniLM()


def test_minilm_returns_one_normalised_384_d_vector_per_text(minilm):
    vectors = minilm.embed(["first text", "second, longer text about invoices", ""])
    assert len(vectors) == 3
    for vector in vectors:
        assert len(vector) == MINILM_DIMENSIONS == minilm.dimensions
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    assert minilm.embed([]) == []
    assert isinstance(minilm, EmbeddingProvider)
    assert minilm.model == MINILM_MODEL


def test_minilm_matches_the_published_all_minilm_l6_v2_similarities(minilm):
    # sentence-transformers' documented figures for all-MiniLM-L6-v2: 0.7553 (bread), 0.8939 (movie).
    food, bread, horse, movie, great = minilm.embed(
        [
            "A man is eating food.",
            "A man is eating a piece of bread.",
            "A man is riding a horse.",
            "The new movie is awesome",
            "The new movie is so great",
        ]
    )
    assert _cos(food, bread) == pytest.approx(0.7553, abs=0.02)
    assert _cos(movie, great) == pytest.approx(0.8939, abs=0.02)
    assert 0.1 < _cos(food, horse) < 0.35
    assert _cos(food, movie) < 0.1


def test_minilm_ranks_a_related_passage_above_unrelated_ones(minilm):
    query, related, *unrelated = minilm.embed(
        [
            "How do I reset my password?",
            "To change a forgotten password, open Settings and choose 'Reset password'.",
            "Our office is closed on public holidays.",
            "The quarterly revenue grew by twelve percent.",
        ]
    )
    assert all(_cos(query, related) > _cos(query, other) + 0.2 for other in unrelated)


def test_minilm_vector_does_not_depend_on_the_batch_it_was_in(minilm):
    # Padding is per batch: a short text batched with a long one must get the same vector as alone.
    alone = minilm.embed(["short text"])[0]
    batched = minilm.embed(["short text", "a much longer text " * 30])[0]
    assert np.allclose(alone, batched, atol=1e-4)
    small_batches = LocalMiniLM(batch_size=2).embed(["a", "b", "c"])
    assert np.allclose(small_batches, minilm.embed(["a", "b", "c"]), atol=1e-4)


def test_minilm_returns_vectors_in_the_callers_order_whatever_the_lengths(minilm):
    texts = ["a long text about invoices and payment terms " * 5, "hi", "a medium text about holidays", "x"]
    together = minilm.embed(texts)
    for text, vector in zip(texts, together, strict=True):
        assert np.allclose(vector, minilm.embed([text])[0], atol=1e-4)


def test_minilm_truncates_texts_longer_than_the_model_reads(minilm):
    long_text = "invoice " * 2000
    (vector,) = minilm.embed([long_text])
    assert np.allclose(vector, minilm.embed(["invoice " * 600])[0], atol=1e-4)


def test_minilm_model_is_loaded_once_per_process_even_under_concurrent_first_use(monkeypatch):
    loads = []
    real_load = embeddings._load_minilm

    def counting_load():
        loads.append(1)
        return real_load()

    monkeypatch.setattr(embeddings, "_runtime", None)
    monkeypatch.setattr(embeddings, "_load_minilm", counting_load)
    barrier = threading.Barrier(4)
    results = []

    def first_use():
        barrier.wait()
        results.append(LocalMiniLM().embed(["hello"])[0])

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(loads) == 1
    assert len(results) == 4 and all(np.allclose(r, results[0]) for r in results)
    runtime = embeddings.minilm_runtime()
    LocalMiniLM().embed(["again"])
    assert embeddings.minilm_runtime() is runtime and len(loads) == 1


def test_minilm_tokenizer_and_model_come_from_installed_packages():
    assert embeddings.minilm_model_path().is_file()
    assert embeddings.minilm_tokenizer_path().is_file()


# --- OpenAI-compatible endpoint -----------------------------------------------------------------------------------


def _expected(text: str, dimensions: int) -> np.ndarray:
    raw = np.asarray(fake_vector(text, dimensions), dtype=np.float64)
    return raw / np.linalg.norm(raw)


def test_openai_endpoint_vectors_come_back_in_order_and_normalised(embeddings_server):
    provider = OpenAIEmbeddings(embeddings_server.base_url, "sk-test", "text-embedding-3-small", 8)
    texts = ["alpha", "beta", "gamma"]
    vectors = provider.embed(texts)
    for text, vector in zip(texts, vectors, strict=True):
        assert np.allclose(vector, _expected(text, 8), atol=1e-6)
    request = embeddings_server.requests[-1]
    assert request["model"] == "text-embedding-3-small"
    assert request["input"] == texts
    assert request["encoding_format"] == "float"
    assert embeddings_server.authorizations[-1] == "Bearer sk-test"


def test_openai_endpoint_is_called_in_batches(embeddings_server):
    provider = OpenAIEmbeddings(embeddings_server.base_url, "", "m", 8, batch_size=16)
    texts = [f"text {i}" for i in range(40)]
    vectors = provider.embed(texts)
    assert [len(r["input"]) for r in embeddings_server.requests] == [16, 16, 8]
    assert np.allclose(vectors[39], _expected("text 39", 8), atol=1e-6)
    assert provider.embed([]) == [] and len(embeddings_server.requests) == 3


def test_openai_endpoint_accepts_the_full_embeddings_url(embeddings_server):
    provider = OpenAIEmbeddings(embeddings_server.base_url + "/embeddings/", "", "m", 8)
    assert np.allclose(provider.embed(["x"])[0], _expected("x", 8), atol=1e-6)


def test_openai_endpoint_refusing_the_key_is_an_embedding_error_naming_the_setting(embeddings_server):
    embeddings_server.api_key = "right"
    provider = OpenAIEmbeddings(embeddings_server.base_url, "wrong", "m", 8, max_retries=0)
    with pytest.raises(EmbeddingError, match="embedding-key") as caught:
        provider.embed(["x"])
    assert "wrong" not in str(caught.value)


def test_openai_endpoint_server_error_is_an_embedding_error_with_status(embeddings_server):
    embeddings_server.fail_status = 503
    provider = OpenAIEmbeddings(embeddings_server.base_url, "", "m", 8, max_retries=0)
    with pytest.raises(EmbeddingError, match="HTTP 503: model overloaded"):
        provider.embed(["x"])


def test_openai_endpoint_vectors_of_the_wrong_size_are_refused(embeddings_server):
    provider = OpenAIEmbeddings(embeddings_server.base_url, "", "m", 384)
    with pytest.raises(EmbeddingError, match="8-d vectors but embedding-dimensions is 384"):
        provider.embed(["x"])


def test_openai_endpoint_unreachable_is_an_embedding_error():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = OpenAIEmbeddings(f"http://127.0.0.1:{port}/v1", "", "m", 8, max_retries=0)
    with pytest.raises(EmbeddingError, match="unreachable"):
        provider.embed(["x"])


def test_openai_endpoint_slower_than_the_timeout_is_an_embedding_error(embeddings_server):
    embeddings_server.delay_s = 1.0
    provider = OpenAIEmbeddings(embeddings_server.base_url, "", "m", 8, timeout_s=0.2, max_retries=0)
    with pytest.raises(EmbeddingError, match="did not answer"):
        provider.embed(["x"])


# --- Choosing a bot's provider --------------------------------------------------------------------------------------


def test_bot_without_embedding_url_gets_the_offline_model():
    assert isinstance(embedding_provider_for({}), LocalMiniLM)
    assert isinstance(embedding_provider_for({"embedding-url": "  ", "embedding-model": "x"}), LocalMiniLM)


def test_bot_with_embedding_url_gets_that_endpoint_with_its_settings(embeddings_server):
    provider = embedding_provider_for(
        {
            "embedding-url": embeddings_server.base_url,
            "embedding-model": "bge-m3",
            "embedding-key": "sk-1",
            "embedding-dimensions": "8",
            "embedding-batch-size": "2",
        }
    )
    assert isinstance(provider, OpenAIEmbeddings)
    assert (provider.model, provider.dimensions, provider.batch_size) == ("bge-m3", 8, 2)
    provider.embed(["a", "b", "c"])
    assert [len(r["input"]) for r in embeddings_server.requests] == [2, 1]
    assert embeddings_server.authorizations == ["Bearer sk-1", "Bearer sk-1"]


def test_bot_embedding_dimensions_default_to_upstreams_guess_from_the_model_name(settings):
    settings.LLM_ALLOW_PRIVATE_HOSTS = True
    provider = embedding_provider_for({"embedding-url": "http://127.0.0.1:9/v1"})
    assert (provider.model, provider.dimensions) == (REMOTE_DEFAULT_MODEL, 2048)
    assert guess_dimensions("text-embedding-3-small") == 384
    assert guess_dimensions("all-mpnet-base-v2") == 768
    assert guess_dimensions("text-embedding-ada-002") == 1536
    assert guess_dimensions("something-else") == 384


@pytest.mark.parametrize("value", ["abc", "0", "-5"])
def test_malformed_embedding_dimensions_is_an_error_naming_the_key(settings, value):
    settings.LLM_ALLOW_PRIVATE_HOSTS = True
    with pytest.raises(EmbeddingError, match="embedding-dimensions"):
        embedding_provider_for({"embedding-url": "http://127.0.0.1:9/v1", "embedding-dimensions": value})


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:6379", "http://169.254.169.254/latest", "http://10.0.0.5:8000/v1", "http://localhost:11434",
    "http://[::1]:8080", "file:///etc/passwd",
])
def test_a_bots_embedding_url_must_be_a_public_host(settings, url):
    settings.LLM_ALLOW_PRIVATE_HOSTS = False
    with pytest.raises(EmbeddingError, match=r"^embedding-url: .*LLM_ALLOW_PRIVATE_HOSTS"):
        embedding_provider_for({"embedding-url": url, "embedding-dimensions": "8"})


def test_a_private_embedding_url_is_never_called_unless_the_operator_allows_private_hosts(settings, embeddings_server):
    settings.LLM_ALLOW_PRIVATE_HOSTS = False  # the fake on 127.0.0.1 stands for an internal service
    with pytest.raises(EmbeddingError, match="embedding-url"):
        embedding_provider_for({"embedding-url": embeddings_server.base_url, "embedding-dimensions": "8"}).embed(["a"])
    assert embeddings_server.requests == []
    public = embedding_provider_for({"embedding-url": "https://93.184.216.34/v1", "embedding-dimensions": "8"})
    assert isinstance(public, OpenAIEmbeddings)
    settings.LLM_ALLOW_PRIVATE_HOSTS = True
    local = embedding_provider_for({"embedding-url": embeddings_server.base_url, "embedding-dimensions": "8"})
    assert len(local.embed(["a"])) == 1 and len(embeddings_server.requests) == 1


def test_an_embedding_endpoint_redirect_is_not_followed(embeddings_server):
    # A public endpoint that redirects inside would get around the check of embedding-url.
    inside = FakeEmbeddingsServer().start()
    try:
        embeddings_server.redirect_to = inside.base_url + "/embeddings"
        provider = OpenAIEmbeddings(embeddings_server.base_url, "", "m", 8, max_retries=0)
        with pytest.raises(EmbeddingError, match="HTTP 307"):
            provider.embed(["a"])
        assert inside.requests == []
    finally:
        inside.stop()
