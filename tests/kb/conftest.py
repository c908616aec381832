"""Fixtures of the knowledge-base tests: the fake embeddings endpoint and the Qdrant fake, on loopback."""

from __future__ import annotations

import pytest

from tests.support.openai_fake import FakeEmbeddingsServer
from tests.support.qdrant_fake import qdrant_platform, qdrant_server  # noqa: F401 - shared fixtures


@pytest.fixture
def embeddings_server(settings):
    settings.LLM_ALLOW_PRIVATE_HOSTS = True  # bots may point embedding-url at the fake (127.0.0.1)
    server = FakeEmbeddingsServer().start()
    yield server
    server.stop()
