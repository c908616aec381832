"""Reads behind the console pages, in the current tenant's schema only (every query goes through the
tenant's models, so another tenant's rows cannot appear).

Failure mode prevented: pages whose cost grows with the tenant (a count per bot in a loop, every document
loaded for one progress bar); each page here is a fixed number of queries and aggregates in SQL.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Q, QuerySet

from apps.bots.models import Bot
from apps.kb.models import Document, KnowledgeBase


@dataclass(frozen=True)
class ConsoleSummary:
    bots: int
    documents: int
    documents_pending: int
    documents_failed: int
    scripts_with_errors: int
    open_rooms: int


def console_summary() -> ConsoleSummary:
    from apps.bots.models import BotScript
    from apps.meet.models import Room

    documents = Document.objects.aggregate(
        total=Count("id"),
        pending=Count("id", filter=Q(status=Document.Status.PENDING)),
        failed=Count("id", filter=Q(status=Document.Status.FAILED)),
    )
    return ConsoleSummary(
        bots=Bot.objects.count(),
        documents=documents["total"],
        documents_pending=documents["pending"],
        documents_failed=documents["failed"],
        scripts_with_errors=BotScript.objects.exclude(errors=[]).count(),
        open_rooms=Room.objects.filter(status=Room.Status.OPEN).count(),
    )


def bot_table(*, search: str = "") -> QuerySet[Bot]:
    """Bots with their script, error and document counts (one query per page, counted in SQL)."""
    bots = Bot.objects.all()
    if search:
        bots = bots.filter(Q(name__icontains=search) | Q(display_name__icontains=search))
    return bots.annotate(
        script_count=Count("scripts", distinct=True),
        kb_count=Count("knowledge_bases", distinct=True),
    ).order_by("name")


def kb_overview(*, bot: Bot) -> list[dict]:
    """The bot's knowledge bases with document counts per status (one grouped query)."""
    rows = (
        KnowledgeBase.objects.filter(bot=bot)
        .annotate(
            total=Count("documents"),
            indexed=Count("documents", filter=Q(documents__status=Document.Status.INDEXED)),
            pending=Count("documents", filter=Q(documents__status=Document.Status.PENDING)),
            failed=Count("documents", filter=Q(documents__status=Document.Status.FAILED)),
        )
        .order_by("name")
    )
    return list(rows)


def document_table(*, bot: Bot, kb: str = "", status: str = "", search: str = "") -> QuerySet[Document]:
    documents = Document.objects.filter(kb__bot=bot).select_related("kb")
    if kb:
        documents = documents.filter(kb__name=kb)
    if status in Document.Status.values:
        documents = documents.filter(status=status)
    if search:
        documents = documents.filter(path__icontains=search)
    return documents.order_by("path")


@dataclass(frozen=True)
class IndexingProgress:
    """Documents of a bot by status, and the chunk progress of those still being indexed."""

    total: int
    indexed: int
    pending: int
    failed: int
    chunks_done: int
    chunks_total: int

    @property
    def done(self) -> bool:
        return self.pending == 0

    @property
    def percent(self) -> int:
        """Share of documents finished (indexed or failed), 100 when there is nothing to do."""
        if self.total == 0:
            return 100
        return int(100 * (self.indexed + self.failed) / self.total)


def indexing_progress(*, bot: Bot) -> IndexingProgress:
    """One aggregate query over the bot's documents (the polled fragment runs it every second or two)."""
    row = Document.objects.filter(kb__bot=bot).aggregate(
        total=Count("id"),
        indexed=Count("id", filter=Q(status=Document.Status.INDEXED)),
        pending=Count("id", filter=Q(status=Document.Status.PENDING)),
        failed=Count("id", filter=Q(status=Document.Status.FAILED)),
    )
    pending = Document.objects.filter(kb__bot=bot, status=Document.Status.PENDING)
    from django.db.models import Sum

    chunks = pending.aggregate(done=Sum("chunks_done"), total=Sum("chunks_total"))
    return IndexingProgress(
        total=row["total"], indexed=row["indexed"], pending=row["pending"], failed=row["failed"],
        chunks_done=chunks["done"] or 0, chunks_total=chunks["total"] or 0,
    )
