"""Console pages of conversations and analytics: thin views over apps.analytics.selectors and exports.

Roles: a viewer reads lists, transcripts and analytics; exports (a copy of users' conversations leaving the
console) need an editor and are recorded in the audit log before the first byte is sent.
"""

from __future__ import annotations

import uuid

from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from apps.accounts.permissions import console_role_required
from apps.accounts.roles import Role
from apps.analytics.exports import conversation_csv_lines, transcript_csv_lines, transcript_json_chunks
from apps.analytics.forms import AnalyticsRangeForm, ConversationFilterForm
from apps.analytics.selectors import (
    CursorInvalid,
    analytics_overview,
    conversation_channels,
    conversation_list,
    transcript_get,
)
from apps.bots.models import Bot
from apps.compliance.services import audit_record
from apps.console.views.common import console_render, whole_number
from apps.core.streaming import tenant_streaming_response

# A message number has at most this many digits (PositiveIntegerField).
TRANSCRIPT_INDEX_DIGITS = 10


def _form_errors(form) -> list[str]:
    return [str(error) for errors in form.errors.values() for error in errors]


def _filters_or_errors(request: HttpRequest) -> tuple[ConversationFilterForm, list[str]]:
    form = ConversationFilterForm(request.GET)
    return form, ([] if form.is_valid() else _form_errors(form))


@require_GET
@console_role_required(Role.VIEWER)
def conversation_list_page(request: HttpRequest) -> HttpResponse:
    form, errors = _filters_or_errors(request)
    context = {"form": form, "errors": errors, "bots": Bot.objects.order_by("name").values_list("name", flat=True),
               "channels": conversation_channels(), "page": None}
    if not errors:
        try:
            context["page"] = conversation_list(filters=form.filters(), cursor=form.cleaned_data.get("cursor") or "")
        except CursorInvalid as exc:
            context["errors"] = [str(exc)]
    query = request.GET.copy()
    query.pop("cursor", None)
    context["query"] = query.urlencode()
    context["filtered"] = any(v for k, v in request.GET.items() if k != "cursor")
    return console_render(request, "console/conversations/list.html", context, status=400 if context["errors"] else 200)


def _transcript_or_404(session_id: uuid.UUID, **kwargs):
    transcript = transcript_get(session_id=session_id, **kwargs)
    if transcript is None:
        raise Http404(_("No conversation with this id in this tenant."))
    return transcript


@require_GET
@console_role_required(Role.VIEWER)
def transcript_page(request: HttpRequest, session_id: uuid.UUID) -> HttpResponse:
    raw = request.GET.get("from", "0")
    from_index = whole_number(raw) if len(raw) <= TRANSCRIPT_INDEX_DIGITS else None
    if from_index is None:
        return HttpResponse(_("'from' must be a message number (0 or more)."), status=400,
                            content_type="text/plain; charset=utf-8")
    return console_render(request, "console/conversations/transcript.html",
                          {"transcript": _transcript_or_404(session_id, from_index=from_index)})


@require_GET
@console_role_required(Role.EDITOR)
def transcript_export(request: HttpRequest, session_id: uuid.UUID, fmt: str) -> HttpResponse:
    transcript = _transcript_or_404(session_id, limit=0)
    audit_record(action="conversation.export", object_type="chat_session", object_id=str(session_id),
                 request=request, summary={"format": fmt, "bot": transcript.session.bot.name})
    schema = connection.schema_name
    if fmt == "json":
        response = tenant_streaming_response(request, transcript_json_chunks(schema, transcript),
                                             content_type="application/json; charset=utf-8")
    else:
        response = tenant_streaming_response(request, transcript_csv_lines(schema, transcript),
                                             content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="conversation-{session_id}.{fmt}"'
    return response


@require_GET
@console_role_required(Role.EDITOR)
def conversation_list_export(request: HttpRequest) -> HttpResponse:
    form, errors = _filters_or_errors(request)
    if errors:
        return HttpResponse("; ".join(errors), status=400, content_type="text/plain; charset=utf-8")
    filters = form.filters()
    audit_record(action="conversation.list_export", object_type="chat_session", request=request,
                 summary={k: v for k, v in filters.as_summary().items() if v})
    response = tenant_streaming_response(request, conversation_csv_lines(connection.schema_name, filters),
                                         content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="conversations-{stamp}.csv"'
    return response


def _range_form(request: HttpRequest) -> tuple[AnalyticsRangeForm, list[str]]:
    form = AnalyticsRangeForm(request.GET)
    return form, ([] if form.is_valid() else _form_errors(form))


@require_GET
@console_role_required(Role.VIEWER)
def analytics_page(request: HttpRequest) -> HttpResponse:
    form, errors = _range_form(request)
    context = {"form": form, "errors": errors, "bots": Bot.objects.order_by("name").values_list("name", flat=True),
               "channels": conversation_channels(), "data": None}
    if not errors:
        filters = form.filters()
        context["data"] = analytics_overview(filters)
        context["range_from"], context["range_to"] = filters.day_from, filters.day_to
        context["query"] = request.GET.urlencode()
    return console_render(request, "console/analytics/overview.html", context, status=400 if errors else 200)


@require_GET
@console_role_required(Role.VIEWER)
def analytics_data(request: HttpRequest) -> HttpResponse:
    """The page's numbers as JSON (what static/analytics/charts.js draws)."""
    form, errors = _range_form(request)
    if errors:
        return JsonResponse({"error": "; ".join(errors)}, status=400)
    return JsonResponse(analytics_overview(form.filters()))
