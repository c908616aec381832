"""Admin pages: the audit log (search, CSV export), API keys (created once, revoked) and users' roles."""

from __future__ import annotations

import datetime as dt

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.models import ApiKey
from apps.accounts.permissions import console_role_required
from apps.accounts.roles import Role
from apps.accounts.selectors import api_key_list, user_console_role
from apps.accounts.services import (
    API_KEY_SCOPES,
    CREATOR_DELETED,
    CREATOR_INACTIVE,
    CREATOR_NONE,
    RETIRED_API_KEY_SCOPES,
    api_key_authority,
    api_key_create,
    api_key_revoke,
    api_key_scope_role,
)
from apps.compliance.selectors import audit_event_csv_chunks, audit_event_search
from apps.compliance.services import audit_record
from apps.console.pagination import console_page
from apps.console.services import ConsoleActionError, console_user_role_set
from apps.console.views.common import confirmation_page, console_render, whole_number
from apps.core.streaming import tenant_streaming_response

# The longest an API key made in the console may live without renewal; a key without expiry stays possible
# (an integration), but an expiry far beyond this is a typo.
API_KEY_MAX_DAYS = 3650
AUDIT_FILTERS = ("action", "actor", "object_type", "text", "since", "until")


def _audit_filters(request: HttpRequest) -> tuple[dict, dict, list[str]]:
    """(values as typed, selector keyword arguments, problems) for the audit log's filter form."""
    values = {name: request.GET.get(name, "").strip() for name in AUDIT_FILTERS}
    kwargs: dict = {name: values[name] for name in ("action", "actor", "object_type", "text")}
    problems = []
    for name in ("since", "until"):
        if values[name]:
            try:
                day = dt.date.fromisoformat(values[name])
            except ValueError:
                problems.append(_("%(field)s: %(value)s is not a date (YYYY-MM-DD)") % {"field": name,
                                                                                        "value": values[name]})
                continue
            if day == dt.date.max:  # `until` takes the whole day: the day after must exist
                problems.append(_("%(field)s: %(value)s is past the last date that can be searched") % {
                    "field": name, "value": values[name]})
                continue
            moment = dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)
            kwargs[name] = moment if name == "since" else moment + dt.timedelta(days=1)  # until: the whole day
    return values, kwargs, problems


@require_GET
@console_role_required(Role.ADMIN)
def audit_log_page(request: HttpRequest) -> HttpResponse:
    values, kwargs, problems = _audit_filters(request)
    events = audit_event_search(**kwargs) if not problems else audit_event_search().none()
    return console_render(request, "console/compliance/audit.html", {
        "filters": values, "problems": problems, "page_obj": console_page(request, events.order_by("-at", "-id")),
        "export_query": request.GET.urlencode(),
    }, status=400 if problems else 200)


@require_GET
@console_role_required(Role.ADMIN)
def audit_log_export(request: HttpRequest) -> HttpResponse:
    """The filtered audit log as CSV (streamed); the export itself is recorded first."""
    values, kwargs, problems = _audit_filters(request)
    if problems:
        return HttpResponse("; ".join(problems), status=400, content_type="text/plain; charset=utf-8")
    audit_record(action="compliance.audit_export", object_type="audit_log", request=request,
                 summary={k: v for k, v in values.items() if v})
    # Read after this view returned, chunk by chunk, each inside this tenant's schema (apps.core.streaming).
    chunks = audit_event_csv_chunks(connection.schema_name, audit_event_search(**kwargs))
    response = tenant_streaming_response(request, chunks, content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="audit-log-{stamp}.csv"'
    return response


@require_GET
@console_role_required(Role.ADMIN)
def api_key_list_page(request: HttpRequest) -> HttpResponse:
    return _api_keys_render(request)


def _api_keys_render(request: HttpRequest, *, created=None, form: dict | None = None, error: str = "",
                     status: int = 200) -> HttpResponse:
    show_revoked = request.GET.get("revoked") == "1"
    keys = api_key_list(include_revoked=show_revoked).select_related("created_by", "created_by__console_profile")
    page = console_page(request, keys)
    for key in page.object_list:
        key.creator_note = "" if key.revoked_at else _api_key_creator_note(key)
    return console_render(request, "console/api_keys/list.html", {
        "page_obj": page, "show_revoked": show_revoked, "scopes": API_KEY_SCOPES,
        "retired_scopes": RETIRED_API_KEY_SCOPES,
        "created": created, "form": form or {"name": "", "scopes": [], "days": ""}, "error": error,
        "now": timezone.now(),
    }, status=status)


def _api_key_creator_note(key: ApiKey) -> str:
    """Why a live key does not work (or not for all its scopes) because of its creator; "" when it does."""
    authority = api_key_authority(key)
    if authority.problem == CREATOR_DELETED:
        return _("Inactive: its creator no longer exists.")
    if authority.problem == CREATOR_NONE:
        return _("Inactive: it has no owner (made before keys belonged to a user); adopt it with "
                 "manage.py api_key_adopt or create a new key.")
    if authority.problem == CREATOR_INACTIVE:
        return _("Inactive: its creator %(user)s is deactivated.") % {"user": authority.creator}
    if authority.problem:
        return _("Inactive: its creator %(user)s has no console role.") % {"user": authority.creator}
    scopes = [scope for scope in key.scopes if scope in API_KEY_SCOPES]  # retired ones guard nothing
    refused = authority.scopes_refused(scopes)
    if not refused:
        return ""
    needs = ", ".join(f"{scope} ({api_key_scope_role(scope).value})" for scope in refused)
    if len(refused) == len(scopes):
        return _("Inactive: its creator %(user)s is %(role)s now; it needs %(needs)s.") % {
            "user": authority.creator, "role": authority.role.value, "needs": needs}
    return _("Partly inactive: its creator %(user)s is %(role)s now; refused: %(needs)s.") % {
        "user": authority.creator, "role": authority.role.value, "needs": needs}


@require_POST
@console_role_required(Role.ADMIN)
def api_key_create_page(request: HttpRequest) -> HttpResponse:
    """Create a key and show it once, in this response only (it is stored hashed)."""
    form = {"name": request.POST.get("name", ""), "scopes": request.POST.getlist("scopes"),
            "days": request.POST.get("days", "").strip()}
    confirm = confirmation_page(request, question=_("Create the API key %(name)s?") % {"name": form["name"]},
                                back="/console/api-keys/")
    if confirm:
        return confirm
    expires_at = None
    if form["days"]:
        days = whole_number(form["days"])
        if days is None or not 1 <= days <= API_KEY_MAX_DAYS:
            return _api_keys_render(request, form=form, status=400, error=_(
                "Expiry: give a number of days from 1 to %(max)d, or leave it empty.") % {"max": API_KEY_MAX_DAYS})
        expires_at = timezone.now() + dt.timedelta(days=days)
    try:
        created = api_key_create(name=form["name"], scopes=form["scopes"], created_by=request.user,
                                 expires_at=expires_at, request=request)
    except ValueError as exc:
        return _api_keys_render(request, form=form, error=str(exc), status=400)
    response = _api_keys_render(request, created=created)
    response["Cache-Control"] = "no-store"  # the page holds the key: never kept by a cache
    return response


@require_POST
@console_role_required(Role.ADMIN)
def api_key_revoke_page(request: HttpRequest, prefix: str) -> HttpResponse:
    key = ApiKey.objects.filter(prefix=prefix).first()
    if key is None:
        raise Http404(_("No API key with that prefix in this tenant."))
    confirm = confirmation_page(request, question=_("Revoke the API key %(name)s (%(prefix)s)? Programs using it "
                                                    "stop working at once.") % {"name": key.name, "prefix": prefix},
                                back="/console/api-keys/")
    if confirm:
        return confirm
    api_key_revoke(prefix=prefix, revoked_by=request.user, request=request)
    messages.success(request, _("API key %(name)s revoked.") % {"name": key.name})
    return redirect("/console/api-keys/")


@require_GET
@console_role_required(Role.ADMIN)
def user_list_page(request: HttpRequest) -> HttpResponse:
    users = get_user_model().objects.select_related("console_profile").order_by("username")
    search = request.GET.get("q", "").strip()
    if search:
        users = users.filter(username__icontains=search)
    page = console_page(request, users)
    for user in page.object_list:
        profile = getattr(user, "console_profile", None)
        user.oidc = bool(profile and profile.oidc_subject)
        user.effective_role = user_console_role(user)
        user.role_editable = not user.oidc and not (user.is_superuser or user.is_staff) and user.pk != request.user.pk
        user.profile = profile
    return console_render(request, "console/users/list.html", {"page_obj": page, "search": search,
                                                                "roles": Role.choices})


@require_POST
@console_role_required(Role.ADMIN)
def user_role_set(request: HttpRequest, pk: int) -> HttpResponse:
    user = get_user_model().objects.filter(pk=pk).first()
    if user is None:
        raise Http404(_("No such user in this tenant."))
    role = request.POST.get("role", "")
    confirm = confirmation_page(request, question=_("Give %(user)s the role %(role)s?") % {
        "user": user.get_username(), "role": role or _("none")}, back="/console/users/")
    if confirm:
        return confirm
    try:
        console_user_role_set(user=user, role=role, request=request)
    except ConsoleActionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("%(user)s now has the role %(role)s.") % {"user": user.get_username(),
                                                                               "role": role or _("none")})
    return redirect("/console/users/")
