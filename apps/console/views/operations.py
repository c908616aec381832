"""Schedules and their runs, meeting rooms, and a bot's email settings and mail log."""

from __future__ import annotations

from django.contrib import messages
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.permissions import console_role_required
from apps.accounts.roles import Role
from apps.automation.models import JobRun
from apps.automation.selectors import JOB_RUNS_PAGE_SIZE, job_run_list, schedule_list
from apps.bots.config_csv import config_is_secret_reference, config_lookup
from apps.bots.models import Bot
from apps.bots.selectors import bot_config_values
from apps.console.pagination import console_page
from apps.console.services import ConsoleActionError, console_room_close, console_room_create
from apps.console.views.common import bot_or_404, confirmation_page, console_render


@require_GET
@console_role_required(Role.VIEWER)
def schedule_bot_list_page(request: HttpRequest) -> HttpResponse:
    bots = Bot.objects.annotate(schedule_count=Count("schedules", distinct=True)).order_by("name")
    return console_render(request, "console/schedules/bots.html", {"page_obj": console_page(request, bots)})


@require_GET
@console_role_required(Role.VIEWER)
def schedule_bot_page(request: HttpRequest, name: str) -> HttpResponse:
    """The bot's SET SCHEDULE entries and its runs (apps.automation selectors), newest first."""
    bot = bot_or_404(name)
    status = request.GET.get("status", "")
    status = status if status in JobRun.Status.values else ""
    try:
        page_number = int(request.GET.get("page", 1))
    except ValueError:
        page_number = 1
    runs = job_run_list(bot=bot, page=page_number, page_size=JOB_RUNS_PAGE_SIZE, status=status or None,
                        script_name=request.GET.get("script") or None)
    return console_render(request, "console/schedules/bot.html", {
        "bot": bot, "schedules": schedule_list(bot=bot), "runs": runs, "status": status,
        "statuses": JobRun.Status.choices, "script": request.GET.get("script", ""),
    })


@require_GET
@console_role_required(Role.VIEWER)
def meeting_list_page(request: HttpRequest) -> HttpResponse:
    from apps.meet.livekit import livekit_configured
    from apps.meet.models import Room

    status = request.GET.get("status", "")
    rooms = Room.objects.select_related("bot").order_by("-created_at", "name")
    if status in Room.Status.values:
        rooms = rooms.filter(status=status)
    return console_render(request, "console/meetings/list.html", {
        "page_obj": console_page(request, rooms), "status": status, "video": livekit_configured(),
        "bots": Bot.objects.order_by("name").values_list("name", flat=True)[:500],
        "form": {"name": "", "title": "", "bot": ""},
    })


@require_POST
@console_role_required(Role.EDITOR)
def meeting_create(request: HttpRequest) -> HttpResponse:
    name, title = request.POST.get("name", "").strip(), request.POST.get("title", "").strip()
    bot_name = request.POST.get("bot", "").strip()
    confirm = confirmation_page(request, question=_("Create the meeting room %(name)s?") % {"name": name},
                                back="/console/meetings/")
    if confirm:
        return confirm
    bot = bot_or_404(bot_name) if bot_name else None
    try:
        room = console_room_create(name=name, title=title, bot=bot, request=request)
    except ConsoleActionError as exc:
        messages.error(request, _("The room was not created: %(reason)s") % {"reason": exc})
        return redirect("/console/meetings/")
    messages.success(request, _("Room %(name)s created: /meet/%(name)s/") % {"name": room.name})
    return redirect("/console/meetings/")


@require_POST
@console_role_required(Role.EDITOR)
def meeting_close(request: HttpRequest, name: str) -> HttpResponse:
    from apps.meet.models import Room

    room = Room.objects.filter(name=name).first()
    if room is None:
        raise Http404(_("No meeting room with that name."))
    confirm = confirmation_page(request, question=_("Close %(name)s? Everyone in it is disconnected.") % {
        "name": room.name}, back="/console/meetings/")
    if confirm:
        return confirm
    try:
        console_room_close(room=room, request=request)
    except ConsoleActionError as exc:
        messages.error(request, _("The room was not closed: %(reason)s") % {"reason": exc})
    else:
        messages.success(request, _("Room %(name)s closed.") % {"name": room.name})
    return redirect("/console/meetings/")


@require_GET
@console_role_required(Role.VIEWER)
def email_bot_list_page(request: HttpRequest) -> HttpResponse:
    bots = Bot.objects.annotate(outgoing_count=Count("outgoing_mail", distinct=True)).order_by("name")
    return console_render(request, "console/email/bots.html", {"page_obj": console_page(request, bots)})


def _mail_settings(bot: Bot) -> tuple[list[dict], str, object]:
    """The bot's mail keys as configured (passwords never shown, Vault references named), and the SMTP
    account it sends with or why it cannot (checked without reading any password)."""
    from apps.mail import accounts

    values = bot_config_values(bot)
    groups = [
        (_("Sender"), accounts.FROM_KEYS + accounts.FROM_NAME_KEYS),
        (_("SMTP"), accounts.SMTP_HOST_KEYS + accounts.SMTP_PORT_KEYS + accounts.SMTP_SECURITY_KEYS
         + accounts.SMTP_USER_KEYS + accounts.SMTP_PASSWORD_KEYS),
        (_("IMAP"), accounts.IMAP_HOST_KEYS + accounts.IMAP_PORT_KEYS + accounts.IMAP_SECURITY_KEYS
         + accounts.IMAP_USER_KEYS + accounts.IMAP_PASSWORD_KEYS + accounts.IMAP_FOLDER_KEYS),
    ]
    secret_keys = set(accounts.SMTP_PASSWORD_KEYS + accounts.IMAP_PASSWORD_KEYS)
    rows = []
    for group, keys in groups:
        for key in keys:
            value = config_lookup(values, key)
            if value is None:
                continue
            if key in secret_keys and not config_is_secret_reference(value):
                value = _("set in config.csv (hidden; better as a vault: reference)")
            rows.append({"group": group, "key": key, "value": value})
    try:
        account, problem = accounts.smtp_account(bot, values, with_password=False), ""
    except accounts.MailConfigError as exc:
        account, problem = None, str(exc)
    return rows, problem, account


@require_GET
@console_role_required(Role.VIEWER)
def email_bot_page(request: HttpRequest, name: str) -> HttpResponse:
    from apps.mail.models import IncomingMail, MailboxState, OutgoingMail

    bot = bot_or_404(name)
    box = request.GET.get("box", "outgoing")
    box = box if box in ("outgoing", "incoming") else "outgoing"
    if box == "outgoing":
        mails = OutgoingMail.objects.filter(bot=bot).defer("body_html").order_by("-created_at", "-id")
    else:
        mails = IncomingMail.objects.filter(bot=bot).order_by("-received_at", "-id")
    rows, problem, account = _mail_settings(bot)
    return console_render(request, "console/email/bot.html", {
        "bot": bot, "box": box, "page_obj": console_page(request, mails), "settings_rows": rows,
        "smtp_problem": problem, "smtp": account, "mailbox": MailboxState.objects.filter(bot=bot).first(),
    })
