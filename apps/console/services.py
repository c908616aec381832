"""Changes made from the console: each calls the owning app's service and records an audit event.

The console owns no data of its own; these functions are the edge between a console form and the apps
that own bots, KB documents, rooms, keys and roles. Each is audited through apps.compliance (an event per
change, with the user and the request), and raises ConsoleActionError with a message fit to show.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest

from apps.accounts.roles import Role
from apps.bots.config_csv import ConfigIssue, config_parse
from apps.bots.models import Bot, BotMemory
from apps.bots.services import BotDeployError, BotFileError, DeployReport, bot_deploy, bot_memory_set, package_limits
from apps.compliance.services import audit_record
from apps.drive.package import PackageError, package_read_zip
from apps.drive.storage import package_root, tenant_drive
from apps.kb.models import Document
from apps.kb.services import document_retry

# A memory key is what SET BOT MEMORY names: short, printable.
MEMORY_KEY_MAX_CHARS = 200


class ConsoleActionError(ValueError):
    """The action was refused; the message says why (shown on the page, nothing was changed)."""


def console_bot_deploy(*, upload: Any, bot_name: str | None, request: HttpRequest) -> DeployReport:
    """Deploy an uploaded .zip package (the same path as POST /api/bots/deploy), audited as bot.deploy."""
    if upload is None:
        raise ConsoleActionError("choose a .zip package to upload")
    if upload.size > settings.PACKAGE_MAX_TOTAL_BYTES:
        raise ConsoleActionError(f"the upload is {upload.size} bytes; the limit is {settings.PACKAGE_MAX_TOTAL_BYTES}")
    try:
        package = package_read_zip(upload, bot_name=bot_name or None, limits=package_limits())
    except PackageError as exc:
        raise ConsoleActionError(f"package refused: {exc}") from None
    try:
        report = bot_deploy(package=package)
    except BotDeployError as exc:
        raise ConsoleActionError(str(exc)) from None
    audit_record(action="bot.deploy", object_type="bot", object_id=report.bot.name, request=request,
                 summary={"files_written": report.files_written, "files_removed": report.files_removed,
                          "errors": len(report.errors), "via": "console"})
    return report


def config_key_of(bot: Bot) -> str:
    """The drive key of the bot's config.csv: the one the DriveMonitor knows, else the standard place."""
    from apps.drive.models import DriveObject

    known = DriveObject.objects.filter(bot_name=bot.name, kind="config").values_list("key", flat=True).first()
    return known or f"{package_root(bot.name)}{bot.name}.gbot/config.csv"


def config_text_read(*, bot: Bot) -> str:
    """The bot's config.csv as text ("" when the drive has none)."""
    try:
        data = tenant_drive().read(config_key_of(bot))
    except FileNotFoundError:
        return ""
    return data.decode("utf-8-sig", errors="replace")


@dataclass(frozen=True)
class ConfigSaveResult:
    saved: bool
    issues: list[ConfigIssue]
    keys: int = 0


def console_config_save(*, bot: Bot, text: str, request: HttpRequest) -> ConfigSaveResult:
    """Validate config.csv and, only when it has no issue, write it to the drive and sync the bot now.

    A file with any issue changes nothing (the caller shows the line-level issues with the text kept). A file
    written that then fails to apply (ConsoleActionError) stays in the drive, as any drive change would, and the
    DriveMonitor retries it; the audit log records the save either way.

    The write and its scan hold the tenant's drive lock, as a deploy does (waiting DEPLOY_SCAN_WAIT_S for it):
    written during a deploy, the file was overwritten by that deploy's package or by its rollback. A drive kept
    busy past the wait saves nothing (ConsoleActionError).
    """
    from apps.drive.services import DEPLOY_SCAN_WAIT_S, drive_scan, drive_scan_lock

    data = text.replace("\r\n", "\n").encode("utf-8")
    parsed = config_parse(data)
    if not parsed.ok:
        return ConfigSaveResult(saved=False, issues=parsed.issues)
    with drive_scan_lock(wait_s=DEPLOY_SCAN_WAIT_S) as acquired:
        if not acquired:
            raise ConsoleActionError(f"the drive is busy: another deploy or scan kept running for "
                                     f"{DEPLOY_SCAN_WAIT_S:g} s; nothing was saved, try again")
        key = config_key_of(bot)
        tenant_drive().write(key, data)
        report = drive_scan(bot_name=bot.name)  # the lock is ours: taken again, never skipped
    failure = report.failed.get(key)
    if report.unavailable and key not in report.processed:
        failure = (f"config.csv was saved to the drive, but the drive became unavailable before it was applied "
                   f"({report.unavailable}); the drive scan applies it once the drive is back")
    audit_record(action="bot.config_save", object_type="bot", object_id=bot.name, request=request,
                 summary={"keys": len(parsed.as_dict()), "bytes": len(data), "applied": not failure})
    if failure:
        raise ConsoleActionError(failure)
    return ConfigSaveResult(saved=True, issues=[], keys=len(parsed.as_dict()))


def memory_value_parse(raw: str) -> Any:
    """A memory value typed in the console: JSON (a "quoted text", a number, true, an object...)."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConsoleActionError(
            f"the value must be JSON (a \"quoted text\", a number, true/false, a list or an object): "
            f"{exc.msg} at character {exc.pos + 1}"
        ) from None


def console_memory_set(*, bot: Bot, key: str, raw_value: str, request: HttpRequest) -> None:
    """SET BOT MEMORY from the console; the value is stored encrypted like the scripts' own."""
    key = key.strip()
    if not key or len(key) > MEMORY_KEY_MAX_CHARS or not key.isprintable():
        raise ConsoleActionError(f"the key must be 1 to {MEMORY_KEY_MAX_CHARS} printable characters")
    value = memory_value_parse(raw_value)
    existed = BotMemory.objects.filter(bot=bot, key=key).exists()
    try:
        with transaction.atomic():
            bot_memory_set(bot=bot, key=key, value=value)
            # The value itself is not logged: memory holds customer data, the audit log holds who and what.
            audit_record(action="bot.memory_set", object_type="bot_memory", object_id=f"{bot.name}/{key}",
                         request=request, summary={"created": not existed})
    except BotFileError as exc:
        raise ConsoleActionError(str(exc)) from None


def console_document_retry(*, document: Document, request: HttpRequest) -> None:
    """Queue a failed document again (after its cause was fixed), audited as kb.document_retry."""
    if document.status != Document.Status.FAILED:
        raise ConsoleActionError(f"{document.path} is {document.status}, not failed: nothing to retry")
    with transaction.atomic():
        document_retry(document=document)
        audit_record(action="kb.document_retry", object_type="document", object_id=document.path, request=request,
                     summary={"previous_error": document.error[:300]})


def console_room_create(*, name: str, title: str, bot: Bot | None, request: HttpRequest):
    from apps.meet.services import MeetError, room_create

    try:
        room = room_create(name=name, title=title, bot=bot, created_by=request.user)
    except MeetError as exc:
        raise ConsoleActionError(str(exc)) from None
    audit_record(action="meet.room.create", object_type="meet_room", object_id=room.name, request=request,
                 summary={"via": "console"})
    return room


def console_room_close(*, room, request: HttpRequest):
    from apps.meet.services import MeetError, room_close

    try:
        closed = room_close(room=room)
    except MeetError as exc:
        raise ConsoleActionError(str(exc)) from None
    audit_record(action="meet.room.close", object_type="meet_room", object_id=room.name, request=request,
                 summary={"via": "console"})
    return closed


def console_user_role_set(*, user, role: str, request: HttpRequest) -> None:
    """Give a local user a console role ("" removes it). OIDC users' roles come from their provider at each
    sign-in, and superusers are always admins: neither can be changed here."""
    from apps.accounts.models import ConsoleProfile
    from apps.accounts.selectors import console_profile_of

    if role and role not in Role.values:
        raise ConsoleActionError(f"unknown role {role!r}; use one of {', '.join(Role.values)}")
    profile = console_profile_of(user)
    if profile is not None and profile.oidc_subject:
        raise ConsoleActionError("this user signs in through the identity provider: change the role there")
    if user.is_superuser or user.is_staff:
        raise ConsoleActionError("this user is a tenant administrator (superuser): the role cannot be lowered here")
    if user.pk == getattr(request.user, "pk", None):
        raise ConsoleActionError("you cannot change your own role")
    with transaction.atomic():
        before = profile.role if profile else ""
        ConsoleProfile.objects.update_or_create(user=user, defaults={"role": role})
        audit_record(action="accounts.role_set", object_type="user", object_id=user.get_username(), request=request,
                     summary={"before": before or None, "after": role or None})
