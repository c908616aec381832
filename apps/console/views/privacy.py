"""Data-subject requests (apps.compliance.gdpr): exports and erasures of one person's data, run by a job;
the console records them, lists them with their outcome, and hands out finished export archives."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.permissions import console_role_required
from apps.accounts.roles import Role
from apps.compliance.gdpr import SubjectError, subject_export_read, subject_request_create
from apps.compliance.models import DataSubjectRequest
from apps.compliance.services import audit_record
from apps.console.pagination import console_page
from apps.console.views.common import confirmation_page, console_render, whole_number

BACK = "/console/compliance/requests/"


@require_GET
@console_role_required(Role.ADMIN)
def dsr_list_page(request: HttpRequest) -> HttpResponse:
    requests = DataSubjectRequest.objects.order_by("-requested_at")
    return console_render(request, "console/compliance/requests.html", {
        "page_obj": console_page(request, requests), "kinds": DataSubjectRequest.Kind.choices,
        "form": {"kind": "export", "subject": ""},
    })


@require_POST
@console_role_required(Role.ADMIN)
def dsr_create(request: HttpRequest) -> HttpResponse:
    kind, subject = request.POST.get("kind", ""), request.POST.get("subject", "").strip()
    question = (_("Erase everything this tenant holds about %(subject)s? This cannot be undone.")
                if kind == DataSubjectRequest.Kind.ERASURE else
                _("Export everything this tenant holds about %(subject)s?")) % {"subject": subject}
    confirm = confirmation_page(request, question=question, back=BACK)
    if confirm:
        return confirm
    try:
        row = subject_request_create(kind=kind, subject=subject, requested_by=request.user.get_username(),
                                     request=request)
    except (SubjectError, ValueError) as exc:
        page = console_page(request, DataSubjectRequest.objects.order_by("-requested_at"))
        return console_render(request, "console/compliance/requests.html", {
            "page_obj": page, "kinds": DataSubjectRequest.Kind.choices, "error": str(exc),
            "form": {"kind": kind, "subject": subject}}, status=400)
    messages.success(request, _("Request %(id)s recorded; its job runs now.") % {"id": row.pk})
    return redirect(BACK)


@require_GET
@console_role_required(Role.ADMIN)
def dsr_export_download(request: HttpRequest, pk) -> HttpResponse:
    """A finished export's archive (personal data: every download is recorded)."""
    try:
        archive = subject_export_read(request_id=str(pk))
    except (DataSubjectRequest.DoesNotExist, FileNotFoundError):
        raise Http404(_("No finished export with that id in this tenant.")) from None
    audit_record(action="dsr.download", object_type="data_subject_request", object_id=str(pk), request=request,
                 summary={"size": len(archive)})
    response = HttpResponse(archive, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="data-subject-export-{pk}.zip"'
    response["Cache-Control"] = "no-store"
    return response


# A retention longer than this is a typo (27 years), not a policy.
RETENTION_MAX_DAYS = 10_000


@require_GET
@console_role_required(Role.ADMIN)
def retention_page(request: HttpRequest) -> HttpResponse:
    return _retention_render(request)


def _retention_render(request: HttpRequest, *, error: str = "", status: int = 200) -> HttpResponse:
    from apps.compliance.models import RetentionPolicy

    days = dict(RetentionPolicy.objects.values_list("data_class", "days"))
    rows = [{"value": value, "label": label, "days": days.get(value)} for value, label in
            RetentionPolicy.DataClass.choices]
    return console_render(request, "console/compliance/retention.html", {"rows": rows, "error": error,
                                                                          "max_days": RETENTION_MAX_DAYS},
                          status=status)


@require_POST
@console_role_required(Role.ADMIN)
def retention_set(request: HttpRequest) -> HttpResponse:
    """Set how long one data class is kept (empty: forever); the daily purge deletes what is older."""
    from apps.compliance.retention import retention_policy_set

    data_class, raw = request.POST.get("data_class", ""), request.POST.get("days", "").strip()
    days = whole_number(raw)
    if raw and (days is None or not 1 <= days <= RETENTION_MAX_DAYS):
        return _retention_render(request, status=400, error=_(
            "Days: give a whole number from 1 to %(max)d, or leave it empty to keep the data.") % {
            "max": RETENTION_MAX_DAYS})
    question = (_("Delete %(data)s older than %(days)s days, every day from now on?") % {"data": data_class,
                                                                                      "days": raw}
                if raw else _("Keep %(data)s forever?") % {"data": data_class})
    confirm = confirmation_page(request, question=question, back="/console/compliance/retention/")
    if confirm:
        return confirm
    try:
        retention_policy_set(data_class=data_class, days=days, actor=request.user, request=request)
    except ValueError as exc:
        return _retention_render(request, error=str(exc), status=400)
    messages.success(request, _("Retention of %(data)s saved.") % {"data": data_class})
    return redirect("/console/compliance/retention/")
