"""Bots: the list and deploy form, a bot's scripts (compile errors, tool schemas), config.csv and memory."""

from __future__ import annotations

import json

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.permissions import console_role_required
from apps.accounts.roles import Role, role_allows
from apps.bots.config_csv import config_parse, config_text_masked, config_value_masked
from apps.bots.models import BotMemory
from apps.console.pagination import console_page
from apps.console.selectors import bot_table
from apps.console.services import (
    ConsoleActionError,
    config_key_of,
    config_text_read,
    console_bot_deploy,
    console_config_save,
    console_memory_set,
)
from apps.console.views.common import bot_or_404, confirmation_page, console_render
from apps.drive.models import DriveObject

# Characters of a memory value shown in the table before "..." (the edit form shows it whole).
MEMORY_PREVIEW_CHARS = 200


@require_GET
@console_role_required(Role.VIEWER)
def bot_list_page(request: HttpRequest) -> HttpResponse:
    search = request.GET.get("q", "").strip()
    page = console_page(request, bot_table(search=search))
    return console_render(request, "console/bots/list.html", {"page_obj": page, "search": search})


@require_POST
@console_role_required(Role.EDITOR)
def bot_deploy_page(request: HttpRequest) -> HttpResponse:
    """Upload a package. The form's checkbox is the confirmation (a file cannot be re-posted by a confirm page)."""
    htmx = request.headers.get("HX-Request") == "true"
    if request.POST.get("confirmed") != "yes":
        error = _("Tick the box to confirm that the bot's current package is replaced.")
        return _deploy_answer(request, htmx, error=error, status=400)
    try:
        report = console_bot_deploy(upload=request.FILES.get("package"), bot_name=request.POST.get("bot", "").strip(),
                                    request=request)
    except ConsoleActionError as exc:
        return _deploy_answer(request, htmx, error=str(exc), status=400)
    if htmx:
        return console_render(request, "console/bots/_deploy_result.html", {"report": report})
    messages.success(request, _("Deployed %(bot)s: %(files)d files written.") % {
        "bot": report.bot.name, "files": report.files_written})
    return redirect(f"/console/bots/{report.bot.name}/")


def _deploy_answer(request: HttpRequest, htmx: bool, *, error: str, status: int) -> HttpResponse:
    if htmx:
        return console_render(request, "console/bots/_deploy_result.html", {"error": error}, status=status)
    page = console_page(request, bot_table())
    return console_render(request, "console/bots/list.html", {"page_obj": page, "deploy_error": error}, status=status)


@require_GET
@console_role_required(Role.VIEWER)
def bot_detail_page(request: HttpRequest, name: str) -> HttpResponse:
    bot = bot_or_404(name)
    scripts = list(bot.scripts.order_by("name").prefetch_related("schedules"))
    for script in scripts:
        schema = script.tool_schema
        script.tool_schema_json = json.dumps(schema, indent=2, ensure_ascii=False) if schema else ""
    failures = DriveObject.objects.filter(bot_name=bot.name, fail_count__gt=0).order_by("key")
    return console_render(request, "console/bots/detail.html", {"bot": bot, "scripts": scripts, "failures": failures})


@require_GET
@console_role_required(Role.VIEWER)
def bot_config_page(request: HttpRequest, name: str) -> HttpResponse:
    """config.csv as in the drive, and the settings applied from it (editors get the save form)."""
    bot = bot_or_404(name)
    context = _config_context(bot, config_text_read(bot=bot))
    if not role_allows(getattr(request, "console_role", None), Role.EDITOR):
        # Viewers see the settings, not the credentials written in them (llm-key, email-pass, ...).
        context["text"] = config_text_masked(context["text"])
        context["rows"] = [{"line": row.line, "key": row.key, "value": config_value_masked(row.key, row.value)}
                           for row in context["rows"]]
    return console_render(request, "console/bots/config.html", context)


def _config_context(bot, text: str) -> dict:
    return {"bot": bot, "config_key": config_key_of(bot), "rows": bot.config.order_by("line"), "text": text}


@require_POST
@console_role_required(Role.EDITOR)
def bot_config_save(request: HttpRequest, name: str) -> HttpResponse:
    """Validate, confirm, then write config.csv to the drive and sync; any issue: nothing saved, text kept."""
    bot = bot_or_404(name)
    text = request.POST.get("text", "")
    context = _config_context(bot, text)
    issues = config_parse(text.encode("utf-8")).issues
    if issues:
        context["issues"] = issues
        return console_render(request, "console/bots/config.html", context, status=400)
    confirm = confirmation_page(request, question=_("Save config.csv of %(bot)s and apply it now?") % {"bot": bot.name},
                                back=f"/console/bots/{bot.name}/config/")
    if confirm:
        return confirm
    try:
        result = console_config_save(bot=bot, text=text, request=request)
    except ConsoleActionError as exc:
        context["save_error"] = str(exc)
        return console_render(request, "console/bots/config.html", context, status=400)
    messages.success(request, _("config.csv saved: %(keys)d settings applied.") % {"keys": result.keys})
    return redirect(f"/console/bots/{bot.name}/config/")


@require_POST
@console_role_required(Role.EDITOR)
def bot_config_validate(request: HttpRequest, name: str) -> HttpResponse:
    """The issues of the text being edited (an htmx fragment; changes nothing, so it is not audited)."""
    bot_or_404(name)
    parsed = config_parse(request.POST.get("text", "").encode("utf-8"))
    return console_render(request, "console/bots/_config_issues.html", {"issues": parsed.issues, "checked": True,
                                                                         "rows": len(parsed.rows)})


@require_GET
@console_role_required(Role.VIEWER)
def bot_memory_page(request: HttpRequest, name: str) -> HttpResponse:
    bot = bot_or_404(name)
    return _memory_render(request, bot, {"key": request.GET.get("key", ""), "value": ""})


@require_POST
@console_role_required(Role.EDITOR)
def bot_memory_set(request: HttpRequest, name: str) -> HttpResponse:
    bot = bot_or_404(name)
    form = {"key": request.POST.get("key", ""), "value": request.POST.get("value", "")}
    confirm = confirmation_page(request, question=_("Set bot memory %(key)s of %(bot)s?") % {
        "key": form["key"], "bot": bot.name}, back=f"/console/bots/{bot.name}/memory/")
    if confirm:
        return confirm
    try:
        console_memory_set(bot=bot, key=form["key"], raw_value=form["value"], request=request)
    except ConsoleActionError as exc:
        form["error"] = str(exc)
        return _memory_render(request, bot, form, status=400)
    messages.success(request, _("Bot memory %(key)s saved.") % {"key": form["key"].strip()})
    return redirect(f"/console/bots/{bot.name}/memory/")


def _memory_render(request: HttpRequest, bot, form: dict, *, status: int = 200) -> HttpResponse:
    """Memory rows decrypted for display (the field decrypts on read), one page at a time."""
    page = console_page(request, BotMemory.objects.filter(bot=bot).order_by("key"))
    for row in page.object_list:
        text = json.dumps(row.value, ensure_ascii=False, default=str)
        row.preview = text if len(text) <= MEMORY_PREVIEW_CHARS else text[:MEMORY_PREVIEW_CHARS] + "…"
        if form["key"] == row.key and not form["value"]:
            form["value"] = json.dumps(row.value, ensure_ascii=False, indent=2, default=str)
    return console_render(request, "console/bots/memory.html", {"bot": bot, "page_obj": page, "form": form},
                         status=status)
