"""Registering and removing KB documents as the drive changes; called by the DriveMonitor.

A registered document is `pending` until the indexer has extracted, chunked and embedded it; removing a
document removes the row (and, with the indexer, its chunks and vectors) in the same transaction.
"""

from __future__ import annotations

from django.db import transaction

from apps.bots.models import Bot
from apps.kb.models import Document, KnowledgeBase


@transaction.atomic
def document_register(*, bot: Bot, kb_name: str, path: str, etag: str, size: int) -> Document:
    """New or changed file in `<bot>.gbkb/<kb_name>/`: (re)queue it for indexing. Idempotent per ETag."""
    kb, _ = KnowledgeBase.objects.get_or_create(bot=bot, name=kb_name)
    document = Document.objects.filter(path=path).first()
    if document is not None and document.etag == etag and document.kb_id == kb.pk:
        return document
    if document is None:
        document = Document(kb=kb, path=path)
    document.kb, document.etag, document.size = kb, etag, size
    document.status, document.error = Document.Status.PENDING, ""
    document.save()
    return document


@transaction.atomic
def document_remove(*, path: str) -> bool:
    """The file is gone from the drive: forget the document. Returns whether there was one."""
    deleted, _ = Document.objects.filter(path=path).delete()
    return bool(deleted)
