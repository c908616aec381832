"""DNS rebinding against a bot's `embedding-url`: checked as public when the provider is built, and connected to
only at an address checked in the same resolution (apps.core.outbound). The fake embeddings server on 127.0.0.1
is the honeypot."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from apps.kb.embeddings import EmbeddingConfigError, OpenAIEmbeddings, embedding_provider_for
from tests.support.rebinding import LOOPBACK, PUBLIC_ADDRESS, Resolver, Route


def _config(host: str, port: int) -> dict[str, str]:
    return {"embedding-url": f"http://{host}:{port}/v1", "embedding-dimensions": "8"}


def test_an_embedding_url_rebinding_to_loopback_is_refused_when_connecting(monkeypatch, settings, embeddings_server):
    settings.LLM_ALLOW_PRIVATE_HOSTS = False
    port = urlsplit(embeddings_server.base_url).port
    resolver = Resolver(monkeypatch, {"emb.rebind.test": [PUBLIC_ADDRESS, LOOPBACK]})
    provider = embedding_provider_for(_config("emb.rebind.test", port))  # the check passes: a public address
    assert isinstance(provider, OpenAIEmbeddings)
    with pytest.raises(EmbeddingConfigError, match=r"refused: address 127\.0\.0\.1 of 'emb\.rebind\.test' is not a "
                                                    r"public address"):
        provider.embed(["a"])
    assert embeddings_server.requests == []
    assert resolver.lookups == ["emb.rebind.test", "emb.rebind.test"]  # refused at once, not retried


def test_an_embedding_url_resolving_consistently_to_a_public_address_still_embeds(monkeypatch, settings,
                                                                                  embeddings_server):
    settings.LLM_ALLOW_PRIVATE_HOSTS = False
    port = urlsplit(embeddings_server.base_url).port
    Resolver(monkeypatch, {"emb.public.test": [PUBLIC_ADDRESS]})
    route = Route(monkeypatch, {(PUBLIC_ADDRESS, port): (LOOPBACK, port)})
    vectors = embedding_provider_for(_config("emb.public.test", port)).embed(["a", "b"])
    assert len(vectors) == 2 and len(embeddings_server.requests) == 1
    assert route.connects == [(PUBLIC_ADDRESS, port)]
