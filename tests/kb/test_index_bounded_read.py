"""The indexer's read of a document is bounded by the size limit, whatever size the document was registered
with: a file replaced by a far larger one before its task runs fails with the size reason, unread, for good."""

import tracemalloc

import pytest
from django_tenants.utils import schema_context

from apps.bots.models import Bot
from apps.drive.storage import tenant_drive
from apps.kb import indexing
from apps.kb.models import Chunk
from apps.kb.services import document_register
from apps.kb.tasks import document_index_task

pytestmark = pytest.mark.django_db

LIMIT = 64 * 1024
HUGE = 16 * 1024 * 1024
PATH = "shop.gbai/shop.gbkb/faq/tents.txt"


@pytest.fixture
def bot(canary_tenants, local_storage):
    with schema_context(canary_tenants.a.schema_name):
        yield Bot.objects.create(name="shop")


def test_a_file_replaced_by_one_over_the_limit_fails_unread_and_is_not_retried(bot, monkeypatch):
    # A module constant, not a Django setting (the existing size-limit test lowers it the same way).
    monkeypatch.setattr(indexing, "INDEX_READ_MAX_BYTES", LIMIT)
    small = b"Harbor tents are waterproof. " * 10
    document = document_register(bot=bot, kb_name="faq", path=PATH, etag=tenant_drive().write(PATH, small),
                                 size=len(small))
    # Replaced in the drive after it was registered, before its task ran: the registered size is still small.
    tenant_drive().write(PATH, b"x" * HUGE)

    tracemalloc.start()
    try:
        result = document_index_task.apply(args=[document.pk, document.etag])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # A final failure the task returns, not an exception it retries: the file will not shrink by itself.
    assert result.state == "SUCCESS" and result.result == "failed"
    document.refresh_from_db()
    assert document.status == "failed"
    assert document.error == f"file is {HUGE} bytes; documents over {LIMIT} are not indexed"
    assert not Chunk.objects.filter(document=document).exists()
    # The drive refused it from the size it holds now, before reading: an unbounded read put all 16 MB in memory.
    assert peak < HUGE // 4, f"the indexing run held {peak} bytes at its peak"
