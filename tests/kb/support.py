"""Helpers shared by the knowledge-base tests."""

from __future__ import annotations

from apps.bots.models import Bot
from apps.drive.storage import tenant_drive
from apps.kb.indexing import document_index
from apps.kb.services import document_register


def document_indexed(bot: Bot, name: str, text: str) -> None:
    """`text` as the document `faq/<name>` of `bot`'s `faq` knowledge base, written to the drive and indexed."""
    key = f"{bot.name}.gbai/{bot.name}.gbkb/faq/{name}"
    etag = tenant_drive().write(key, text.encode())
    document = document_register(bot=bot, kb_name="faq", path=key, etag=etag, size=len(text))
    assert document_index(document_id=document.pk).status == "indexed"
