"""Fixtures of the knowledge-base tests: the fake embeddings endpoint on loopback."""

from __future__ import annotations

import pytest

from tests.support.openai_fake import FakeEmbeddingsServer


@pytest.fixture
def embeddings_server():
    server = FakeEmbeddingsServer().start()
    yield server
    server.stop()
