"""Queuing the indexer after commit: the broker down must not fail what registered the document (a drive scan, an
upload, a re-index after a model change); the document stays pending and the stale sweep queues it later."""

from __future__ import annotations

import pytest
from django_tenants.utils import schema_context

from apps.bots.models import Bot
from apps.kb import services
from apps.kb.models import Document
from apps.kb.services import document_register

pytestmark = pytest.mark.django_db


def test_a_document_registered_with_the_broker_down_stays_pending_without_failing_the_caller(
        canary_tenants, monkeypatch, django_capture_on_commit_callbacks):
    def broker_down(*, document_id: int, etag: str) -> None:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(services, "document_index_enqueue", broker_down)
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="enqueue-kb")
        with django_capture_on_commit_callbacks(execute=True):
            document = document_register(bot=bot, kb_name="faq", path="enqueue-kb.gbai/enqueue-kb.gbkb/faq/a.txt",
                                         etag="e1", size=10)
        with django_capture_on_commit_callbacks(execute=True):
            assert services.documents_reindex(bot=bot) == 1
        assert Document.objects.get(pk=document.pk).status == Document.Status.PENDING
