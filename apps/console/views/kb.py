"""Knowledge: KBs and documents of a bot with live indexing progress, retry of failed documents, and a
search playground showing the hybrid scores behind each hit."""

from __future__ import annotations

from django.contrib import messages
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.permissions import console_role_required
from apps.accounts.roles import Role
from apps.bots.models import Bot
from apps.console.pagination import console_page
from apps.console.selectors import document_table, indexing_progress, kb_overview
from apps.console.services import ConsoleActionError, console_document_retry
from apps.console.views.common import bot_or_404, confirmation_page, console_render, whole_number
from apps.kb.models import Document, KnowledgeBase
from apps.kb.search import MAX_LIMIT, MODES, kb_search

# The polled fragment follows at most this many documents of the page by id (one page of the table).
PROGRESS_MAX_IDS = 50
# A search playground query: the same bound as POST /api/kb/search.
SEARCH_MAX_QUERY_CHARS = 2000
SEARCH_DEFAULT_LIMIT = 10


@require_GET
@console_role_required(Role.VIEWER)
def kb_bot_list_page(request: HttpRequest) -> HttpResponse:
    bots = Bot.objects.annotate(kb_count=Count("knowledge_bases", distinct=True),
                                document_count=Count("knowledge_bases__documents")).order_by("name")
    return console_render(request, "console/kb/bots.html", {"page_obj": console_page(request, bots)})


def _document_filters(request: HttpRequest) -> dict[str, str]:
    return {"kb": request.GET.get("kb", ""), "status": request.GET.get("status", ""),
            "search": request.GET.get("q", "").strip()}


@require_GET
@console_role_required(Role.VIEWER)
def kb_bot_page(request: HttpRequest, name: str) -> HttpResponse:
    bot = bot_or_404(name)
    filters = _document_filters(request)
    page = console_page(request, document_table(bot=bot, **filters))
    pending_ids = [d.pk for d in page.object_list if d.status == Document.Status.PENDING]
    return console_render(request, "console/kb/bot.html", {
        "bot": bot, "kbs": kb_overview(bot=bot), "page_obj": page, "filters": filters,
        "statuses": Document.Status.choices, "progress": indexing_progress(bot=bot),
        "pending_ids": ",".join(map(str, pending_ids)),
    })


@require_GET
@console_role_required(Role.VIEWER)
def kb_progress_fragment(request: HttpRequest, name: str) -> HttpResponse:
    """Polled by htmx every second while documents are pending; without pending ones it stops polling.

    Rows of the table named in `ids` come back out of band with their current status and progress. The
    aggregate is read before the rows: the indexer finishing between the two reads then shows finished rows
    under a bar still running (the next poll catches up), never a bar at 100 % that stops polling above a row
    still "waiting for the indexer". A followed row still pending keeps the polling on whatever the bar says.
    """
    bot = bot_or_404(name)
    ids = [n for n in map(whole_number, request.GET.get("ids", "").split(",")) if n is not None][:PROGRESS_MAX_IDS]
    progress = indexing_progress(bot=bot)
    rows = list(Document.objects.filter(kb__bot=bot, pk__in=ids).select_related("kb")) if ids else []
    still_pending = ",".join(str(d.pk) for d in rows if d.status == Document.Status.PENDING)
    return console_render(request, "console/kb/_progress.html", {
        "bot": bot, "progress": progress, "rows": rows, "pending_ids": still_pending,
        # The per-KB counts are refreshed with the rows only while the page follows documents of its own.
        "kbs": kb_overview(bot=bot) if rows else [],
    })


@require_POST
@console_role_required(Role.EDITOR)
def kb_document_retry(request: HttpRequest, name: str, pk: int) -> HttpResponse:
    bot = bot_or_404(name)
    document = Document.objects.filter(kb__bot=bot, pk=pk).first()
    if document is None:
        raise Http404(_("No such document for this bot."))
    back = f"/console/kb/{bot.name}/?status=failed"
    confirm = confirmation_page(request, question=_("Index %(path)s again?") % {"path": document.path}, back=back)
    if confirm:
        return confirm
    try:
        console_document_retry(document=document, request=request)
    except ConsoleActionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("%(path)s queued for indexing again.") % {"path": document.path})
    return redirect(f"/console/kb/{bot.name}/")


@require_GET
@console_role_required(Role.VIEWER)
def kb_search_page(request: HttpRequest, name: str) -> HttpResponse:
    """The search playground: the chat's own retrieval (apps.kb.search.kb_search) with its scores."""
    bot = bot_or_404(name)
    kb_names = list(KnowledgeBase.objects.filter(bot=bot).order_by("name").values_list("name", flat=True))
    query = request.GET.get("q", "").strip()
    chosen = [k for k in request.GET.getlist("kb") if k in kb_names] or kb_names
    mode = request.GET.get("mode", "hybrid")
    mode = mode if mode in MODES else "hybrid"
    try:
        limit = min(max(int(request.GET.get("limit", SEARCH_DEFAULT_LIMIT)), 1), MAX_LIMIT)
    except ValueError:
        limit = SEARCH_DEFAULT_LIMIT
    context = {"bot": bot, "kb_names": kb_names, "chosen": chosen, "query": query, "mode": mode, "modes": MODES,
               "limit": limit, "max_limit": MAX_LIMIT}
    if len(query) > SEARCH_MAX_QUERY_CHARS:
        context["error"] = _("The question is %(n)d characters long; the limit is %(max)d.") % {
            "n": len(query), "max": SEARCH_MAX_QUERY_CHARS}
        return console_render(request, "console/kb/search.html", context, status=400)
    if query and kb_names:
        context["result"] = kb_search(bot=bot, kbs=chosen, query=query, limit=limit, mode=mode)
    return console_render(request, "console/kb/search.html", context)
