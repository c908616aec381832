"""Writes for bots: scripts, configuration, prompt, memory, tables, and deploying a whole package.

Every function works in the tenant active on the connection (the callers run inside a tenant: an HTTP
request, a tenant task, or `schema_context`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime

from croniter import croniter
from django.conf import settings
from django.db import transaction

from apps.basic.compiler import compile_source
from apps.basic.errors import CompileError
from apps.basic.schedule import cron_step
from apps.bots.config_csv import config_lookup, config_parse, nul_byte_issue
from apps.bots.models import Bot, BotConfig, BotMemory, BotSchedule, BotScript, BotTableRow
from apps.bots.selectors import bot_config_values
from apps.core.locks import tenant_xact_lock
from apps.drive.backends import DriveObjectTooLarge, DriveUnavailable, drive_error_text
from apps.drive.package import Package, PackageLimits
from apps.drive.storage import package_root, tenant_drive

logger = logging.getLogger(__name__)

# Upstream's script-max-size: a dialog script bigger than this is a mistake or an attack on the compiler.
SCRIPT_MAX_BYTES = 1024 * 1024
# A system prompt file (`<bot>.gbot/PROMPT.md`) is instructions, not a document: upstream's script-max-size is
# ample, and the DriveMonitor refuses a bigger file from its size instead of reading it into a worker.
PROMPT_MAX_BYTES = 1024 * 1024
# Rows one bot table may hold (SAVE/INSERT, or a `.gbdata/*.csv` import); more belongs in a real database.
TABLE_ROWS_MAX = 50_000
DATA_CSV_MAX_ROWS = TABLE_ROWS_MAX
# Schedules (SET SCHEDULE) one bot may have over all its scripts (spec 3.8: at most 100 scheduled tasks per
# bot). Every schedule is a job on the platform's shared `jobs` queue each time it fires; the compiler bounds
# one script (apps.basic.limits.MAX_SCHEDULES), this bounds a bot of many scripts.
SCHEDULES_MAX_PER_BOT = 100
# Schedules one tenant may have over all its bots. The per-bot limit alone bounded nothing: a tenant may deploy
# any number of bots (a package upload, or a `<bot>.gbai/` folder the DriveMonitor finds), and 50 bots of 100
# every-minute schedules put 5,000 jobs a minute on the queue all tenants share. Five full bots' worth; what a
# tenant can run at once is bounded separately (apps.automation: AUTOMATION_TENANT_RUNS_IN_FLIGHT_MAX).
SCHEDULES_MAX_PER_TENANT = 500
# The advisory lock (per tenant) every registration of schedules holds until its transaction ends: two scripts
# deployed at once (of one bot or of two) cannot both fit under a limit by counting before the other's rows exist.
SCHEDULES_LOCK_NAME = "bots.schedules"
# A `.gbdata` CSV of DATA_CSV_MAX_ROWS rows at ~300 bytes each: bigger cannot be a table we would import, and
# the DriveMonitor refuses it from its size instead of downloading it (a 3 GB CSV put in the bucket).
DATA_CSV_MAX_BYTES = 16 * 1024 * 1024
# A memory value is a setting or a counter, not a document.
MEMORY_VALUE_MAX_CHARS = 64 * 1024


class BotFileError(ValueError):
    """A file of the package cannot be used; the message says why (shown in the console)."""


class ScheduleLimitError(BotFileError):
    """A script refused only because the other scripts of its bot (SCHEDULES_MAX_PER_BOT) or of its tenant
    (SCHEDULES_MAX_PER_TENANT) hold too many schedules now: the DriveMonitor tries it again once the other scripts
    of its scan are in (they may be giving schedules up)."""


def package_limits() -> PackageLimits:
    """The upload limits from settings (PACKAGE_MAX_*), each refusing an archive before anything is written."""
    return PackageLimits(
        max_entries=settings.PACKAGE_MAX_ENTRIES,
        max_total_bytes=settings.PACKAGE_MAX_TOTAL_BYTES,
        max_file_bytes=settings.PACKAGE_MAX_FILE_BYTES,
        max_ratio=settings.PACKAGE_MAX_RATIO,
    )


def bot_ensure(*, name: str) -> Bot:
    bot, _ = Bot.objects.get_or_create(name=name, defaults={"display_name": name})
    return bot


def _text(data: bytes, what: str) -> str:
    """The text of a package file; BotFileError naming `what` (its path) for bytes no text column can hold."""
    nul = nul_byte_issue(data)
    if nul is not None:  # valid UTF-8, but PostgreSQL stores no NUL: refused here, not as a failed INSERT
        raise BotFileError(f"{what} {nul}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BotFileError(f"{what} is not UTF-8 text (byte {exc.start})") from None


def script_name_of(path: str) -> str:
    """Tool/script name: the file stem, lower-cased (`Tools/Book-Visit.bas` -> `book-visit`)."""
    stem = path.rsplit("/", 1)[-1]
    return stem[: -len(".bas")].lower() if stem.lower().endswith(".bas") else stem.lower()


@transaction.atomic
def script_sync(*, bot: Bot, path: str, data: bytes) -> BotScript:
    """Store and compile one `.bas` file. A script that does not compile is stored with its error (so the
    console shows it, and nothing runs it), unless a version of it compiled before: that one keeps running and
    the refused file is kept beside it (`rejected_*`). `script_failure` turns either into the message to report."""
    if len(data) > SCRIPT_MAX_BYTES:
        raise BotFileError(f"{path}: script is {len(data)} bytes; the limit is {SCRIPT_MAX_BYTES}")
    source = _text(data, path)
    name = script_name_of(path)
    other = BotScript.objects.filter(bot=bot, name=name).exclude(path=path).first()
    if other is not None:
        raise BotFileError(f"{path}: a script named '{name}' already exists at {other.path}")
    script = BotScript.objects.filter(bot=bot, path=path).first() or BotScript(bot=bot, path=path)
    try:
        program = compile_source(source, name)
    except CompileError as exc:
        errors = [{"line": exc.line, "column": exc.col, "message": exc.message}]
        if script.pk is not None and script.ok and script.source_hash:
            # A typo in a redeploy must not take a working script down: the version that compiled keeps
            # running (its schedules too) and the refused one is kept beside it, with its error.
            script.rejected_source, script.rejected_errors = source, errors
            script.save(update_fields=["rejected_source", "rejected_errors", "compiled_at"])
            return script
        script.name, script.source = name, source
        script.source_hash, script.metadata, script.tool_schema = "", {}, None
        script.errors, script.rejected_source, script.rejected_errors = errors, "", []
        script.save()
        schedules_sync(script=script)  # a script that does not compile runs on no schedule
        return script
    metadata = json.loads(json.dumps(program.metadata, default=str))
    script.name, script.source = name, source
    script.source_hash, script.metadata, script.errors = program.source_hash, metadata, []
    script.rejected_source, script.rejected_errors = "", []
    script.tool_schema = metadata.get("tool") if _is_tool(metadata) else None
    script.save()
    schedules_sync(script=script)
    return script


def bot_timezone(bot: Bot) -> zoneinfo.ZoneInfo:
    """The bot's `timezone` from config.csv (an IANA name), UTC when unset or unknown."""
    name = config_lookup(bot_config_values(bot), "timezone", "")
    try:
        return zoneinfo.ZoneInfo(name) if name else zoneinfo.ZoneInfo("UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def schedule_next_run(cron: str, tz: zoneinfo.ZoneInfo, after: datetime) -> datetime:
    """The first time after `after` that `cron` fires, read in the bot's timezone (DST-aware)."""
    return cron_step(croniter(cron, after.astimezone(tz)), cron)


@transaction.atomic
def schedules_sync(*, script: BotScript) -> list[BotSchedule]:
    """Replace the script's schedule rows with the crons its compiler found (none: no rows), and their rows
    in the public schedule index (same transaction: the beat tick never sees a half-replaced schedule)."""
    from django.utils import timezone as django_tz

    unique: dict[str, dict] = {}  # the same cron twice would run the script twice each time: once
    for item in script.metadata.get("schedules") or []:
        unique.setdefault(item["cron"], item)
    crons = list(unique.values())
    if crons:
        _schedules_lock()  # before anything is counted
    removed = list(BotSchedule.objects.filter(script=script).values_list("pk", flat=True))
    if crons:
        _schedule_limits_check(script, len(crons), had=len(removed))
    BotSchedule.objects.filter(pk__in=removed).delete()
    tz, now = bot_timezone(script.bot), django_tz.now()
    created = BotSchedule.objects.bulk_create(
        BotSchedule(bot=script.bot, script=script, expression=item["expression"][:200], cron=item["cron"],
                    line=item.get("line") or 1, timezone=str(tz), next_run_at=schedule_next_run(item["cron"], tz, now))
        for item in crons
    )
    _schedule_index_replace(removed=removed, added=created)
    return created


def _schedules_lock() -> None:
    """Hold the tenant's schedule registration lock until the current transaction ends (its key text as before
    tenant_xact_lock existed)."""
    tenant_xact_lock(SCHEDULES_LOCK_NAME, key_format="{name}:{schema}")


def _schedule_limits_check(script: BotScript, count: int, *, had: int) -> None:
    """Refuse (ScheduleLimitError) a script whose `count` schedules would take its bot past SCHEDULES_MAX_PER_BOT,
    or its tenant past SCHEDULES_MAX_PER_TENANT. `had`: the script's schedules now. A tenant already past its limit
    (schedules registered before there was one) keeps them, and the changes that do not add schedules (a script
    edited, the bot's timezone changed): only adding is refused."""
    refused = "Not deployed: the previous version, if any, keeps running"
    others = BotSchedule.objects.filter(bot_id=script.bot_id).exclude(script=script).count()
    if others + count > SCHEDULES_MAX_PER_BOT:
        raise ScheduleLimitError(
            f"{script.path}: too many schedules: with its {count} SET SCHEDULE times the bot would have "
            f"{others + count}; a bot may have at most {SCHEDULES_MAX_PER_BOT} (SCHEDULES_MAX_PER_BOT). {refused}")
    if count <= had:
        return
    tenant_others = BotSchedule.objects.exclude(script=script).count()
    if tenant_others + count > SCHEDULES_MAX_PER_TENANT:
        raise ScheduleLimitError(
            f"{script.path}: too many schedules: with its {count} SET SCHEDULE times the tenant's bots would have "
            f"{tenant_others + count}; a tenant may have at most {SCHEDULES_MAX_PER_TENANT} over all its bots "
            f"(SCHEDULES_MAX_PER_TENANT). {refused}")


def _schedule_index_replace(*, removed: list[int], added: list[BotSchedule]) -> None:
    """Mirror the tenant's schedule rows in the public index the automation tick reads (apps.automation)."""
    from django.db import connection

    from apps.tenants.models import ScheduleIndex, Tenant

    tenant_id = Tenant.objects.filter(schema_name=connection.schema_name).values_list("pk", flat=True).first()
    if tenant_id is None:  # a schema with no tenant row: nothing there ever runs
        return
    if removed:
        ScheduleIndex.objects.filter(tenant_id=tenant_id, schedule_id__in=removed).delete()
    ScheduleIndex.objects.bulk_create(
        ScheduleIndex(tenant_id=tenant_id, schedule_id=s.pk, cron=s.cron, timezone=s.timezone,
                      next_run_at=s.next_run_at, enabled=s.enabled)
        for s in added
    )


def script_failure(script: BotScript) -> str | None:
    """`path:line:col: message` of the script's first compile error (of the file just stored), or None when it
    compiled."""
    if script.rejected_errors:
        error = script.rejected_errors[0]
        return (f"{script.path}:{error['line']}:{error['column']}: {error['message']} "
                f"(not deployed: the previous version keeps running)")
    if script.ok:
        return None
    error = script.errors[0]
    return f"{script.path}:{error['line']}:{error['column']}: {error['message']}"


def _is_tool(metadata: dict) -> bool:
    return bool(metadata.get("params") or metadata.get("description"))


def script_move(*, bot: Bot, path: str, new_path: str) -> None:
    """Give the script stored from `path` (a file gone from the drive) to `new_path`, a file of the same script
    name (the file moved or renamed): the stored version keeps running, and syncing `new_path` then replaces it
    if it compiles, or is refused beside it if not, as a changed file at one path is."""
    BotScript.objects.filter(bot=bot, path=path, name=script_name_of(new_path)).update(path=new_path)


@transaction.atomic
def script_remove(*, bot: Bot, path: str) -> None:
    schedules = list(BotSchedule.objects.filter(script__bot=bot, script__path=path).values_list("pk", flat=True))
    _schedule_index_replace(removed=schedules, added=[])
    BotScript.objects.filter(bot=bot, path=path).delete()  # its schedules go with it (cascade)


# The settings that decide the vectors of a bot's documents: a change indexes them again (apps.kb).
EMBEDDING_IDENTITY_KEYS = ("embedding-url", "embedding-model", "embedding-dimensions")


def _embedding_identity(bot: Bot) -> dict[str, str]:
    rows = BotConfig.objects.filter(bot=bot, key__in=EMBEDDING_IDENTITY_KEYS).values_list("key", "value")
    return {key: value.strip() for key, value in rows if value.strip()}


def _reindex_if_embedding_changed(bot: Bot, before: dict[str, str]) -> None:
    if _embedding_identity(bot) != before:
        from apps.kb.services import documents_reindex

        documents_reindex(bot=bot)


@transaction.atomic
def config_sync(*, bot: Bot, data: bytes) -> int:
    """Replace the bot's configuration with `config.csv`. A file with any error changes nothing."""
    parsed = config_parse(data)
    if not parsed.ok:
        details = "; ".join(f"line {i.line}: {i.message}" if not i.message.startswith("line") else i.message
                            for i in parsed.issues[:10])
        raise BotFileError(f"config.csv: {details}")
    embedding_before = _embedding_identity(bot)
    BotConfig.objects.filter(bot=bot).delete()
    last_by_key = {row.key: row for row in parsed.rows}
    BotConfig.objects.bulk_create(
        BotConfig(bot=bot, key=row.key, value=row.value, line=row.line) for row in last_by_key.values()
    )
    for script in BotScript.objects.filter(bot=bot, schedules__isnull=False).distinct():
        schedules_sync(script=script)  # the bot's timezone may have changed
    _reindex_if_embedding_changed(bot, embedding_before)
    return len(last_by_key)


@transaction.atomic
def config_clear(*, bot: Bot) -> None:
    embedding_before = _embedding_identity(bot)
    BotConfig.objects.filter(bot=bot).delete()
    _reindex_if_embedding_changed(bot, embedding_before)
    for script in BotScript.objects.filter(bot=bot, schedules__isnull=False).distinct():
        schedules_sync(script=script)  # back to UTC: the timezone came from the removed config


def prompt_sync(*, bot: Bot, data: bytes | None, path: str = "prompt file") -> None:
    bot.system_prompt = _text(data, path) if data is not None else ""
    bot.save(update_fields=["system_prompt"])


def table_name_of_data_file(path: str) -> str:
    return path.rsplit("/", 1)[-1].lower()


def bot_table_lock(bot: Bot, table: str) -> None:
    """Hold the lock of one bot table until the current transaction ends: its writers (scripts' SAVE, INSERT,
    UPDATE, DELETE and the .gbdata import) go one at a time, readers are never blocked."""
    tenant_xact_lock(f"{bot.pk}:{table}", key_format="bot-table:{schema}:{name}")  # the key text as before


@transaction.atomic
def data_csv_sync(*, bot: Bot, path: str, data: bytes | None) -> int:
    """Replace the bot table `<file>.csv` with the rows of a `.gbdata` CSV file (None: the file is gone). A file
    that cannot be read changes nothing, and its error says the table keeps its rows."""
    table = table_name_of_data_file(path)
    bot_table_lock(bot, table)
    kept, _ = BotTableRow.objects.filter(bot=bot, table=table).delete()
    if data is None:
        return 0
    try:
        return _data_csv_import(bot, path, table, data)
    except BotFileError as exc:  # the transaction rolls back: the rows deleted above are still there
        rows = f"{kept} row{'' if kept == 1 else 's'}"
        raise BotFileError(f"{exc} (not imported: the table '{table}' keeps its previous {rows})") from None


def _data_csv_import(bot: Bot, path: str, table: str, data: bytes) -> int:
    reader = csv.reader(io.StringIO(_text(data, path)))
    rows = []
    try:
        header = next((row for row in reader if row), None)  # blank lines before the header are skipped
        if header is None:
            return 0
        names = _data_csv_columns(path, reader.line_num, header)
        for row in reader:
            if not row:
                continue
            # line_num is the line the record ends on: a quoted field may span lines, so counting records
            # named the wrong line.
            if len(rows) >= DATA_CSV_MAX_ROWS:
                raise BotFileError(f"{path} line {reader.line_num}: more than {DATA_CSV_MAX_ROWS} rows")
            if len(row) > len(header):
                raise BotFileError(f"{path} line {reader.line_num}: more values than header columns")
            unnamed = next((n for n in range(len(names), len(row)) if row[n].strip()), None)
            if unnamed is not None:
                raise BotFileError(f"{path} line {reader.line_num}: a value in column {unnamed + 1}, which has no "
                                   "name in the header")
            values = dict(zip(names, row, strict=False))
            values.update(dict.fromkeys(names[len(row):]))  # missing values are null, as before
            rows.append(BotTableRow(bot=bot, table=table, data=values))
    except csv.Error as exc:  # a field past the csv module's limit, a stray quote: the file's error, not ours
        raise BotFileError(f"{path} line {reader.line_num}: {exc}") from None
    BotTableRow.objects.bulk_create(rows)
    return len(rows)


def _data_csv_columns(path: str, line: int, header: list[str]) -> list[str]:
    """The header's column names, each one named and once: a repeated name (`Id,Name,Id`) silently dropped a
    column's values, and a blank one dropped the column. Blank names at the end (`Id,Name,` as spreadsheets
    export a stray empty column) are left out; the rows must leave those columns empty too."""
    names = [name.strip() for name in header]
    while names and not names[-1]:
        names.pop()
    first: dict[str, int] = {}
    for number, name in enumerate(names, start=1):
        if not name:
            raise BotFileError(f"{path} line {line}: column {number} of the header has no name")
        if name in first:
            raise BotFileError(f"{path} line {line}: column {number} of the header repeats '{name}' "
                               f"(column {first[name]}); each column needs its own name")
        first[name] = number
    return names


def bot_memory_set(*, bot: Bot, key: str, value: object) -> None:
    if len(json.dumps(value, default=str)) > MEMORY_VALUE_MAX_CHARS:
        raise BotFileError(f"bot memory '{key}': value longer than {MEMORY_VALUE_MAX_CHARS} characters")
    BotMemory.objects.update_or_create(bot=bot, key=key, defaults={"value": value})


def bot_memory_get(*, bot: Bot, key: str) -> object:
    """The value, or "" when absent (upstream)."""
    row = BotMemory.objects.filter(bot=bot, key=key).first()
    return "" if row is None else row.value


@dataclass
class DeployReport:
    bot: Bot
    files_written: int
    files_removed: int
    scan: object = None
    errors: dict[str, str] = field(default_factory=dict)


class BotDeployError(Exception):
    """The deploy did not happen; the message says why and what is left. `status` is the HTTP answer: 400 the
    package cannot go into this drive, 409 another deploy or scan kept the drive busy, 503 the drive failed."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


def _runtime_collision(new_keys: set[str], kept: set[str]) -> str | None:
    """A package path that cannot be stored beside the files the deploy keeps (the bot's runtime area): a file
    where a kept folder is, or a folder where a kept file is."""
    kept_folders = {key[: i + 1] for key in kept for i, ch in enumerate(key) if ch == "/"}
    for key in sorted(new_keys):
        if key + "/" in kept_folders:
            return key
        if any(key[:i] in kept for i, ch in enumerate(key) if ch == "/"):
            return key
    return None


def bot_deploy(*, package: Package) -> DeployReport:
    """Put a validated package into the tenant's drive (replacing the previous one) and process it now.

    The package was fully validated when it was read (apps.drive.package), so nothing is written for a
    rejected archive. The whole replacement (listing, writes, deletes, then the scan) holds the tenant's drive
    lock, so no scan sees half a package and two deploys of one bot never mix. A write the drive refuses half
    way puts the previous files back. The same scan the DriveMonitor runs then compiles scripts, syncs config
    and registers KB documents; its failures are returned for the caller to show.
    """
    from apps.drive.services import DEPLOY_SCAN_WAIT_S, drive_scan, drive_scan_lock

    with drive_scan_lock(wait_s=DEPLOY_SCAN_WAIT_S) as acquired:
        if not acquired:
            raise BotDeployError(f"another deploy or scan of this drive kept running for {DEPLOY_SCAN_WAIT_S:g} s; "
                                 f"nothing was written, try again", status=409)
        root = package_root(package.bot_name)
        new_keys = {root + f.path for f in package.files}
        try:
            drive = tenant_drive()
            old = {entry.key: entry for entry in drive.list(root)}
        except DriveUnavailable as exc:
            raise BotDeployError(f"{exc}; nothing was written, try again later", status=503) from exc
        old_keys = set(old)
        # The bot's file area (`<bot>.gbdrive/`) holds what scripts wrote at run time: a deploy replaces the
        # package, not the bot's data.
        runtime_area = f"{root}{package.bot_name}.gbdrive/"
        stale = {key for key in old_keys - new_keys if not key.startswith(runtime_area)}
        collision = _runtime_collision(new_keys, old_keys - new_keys - stale)
        if collision is not None:
            raise BotDeployError(
                f"package refused: '{collision[len(root):]}' cannot be stored beside the bot's own files in "
                f"{runtime_area[len(root):]} (what its scripts wrote, which a deploy keeps); rename it",
                status=400)
        # Old files in the way of new ones go first (a file `policies` where a folder `policies/` was, or the
        # other way round: a filesystem drive cannot hold both); the rest of the old package goes after.
        new_folders = {key[: i + 1] for key in new_keys for i, ch in enumerate(key) if ch == "/"}
        in_the_way = {key for key in stale if key + "/" in new_folders
                      or any(key[:i] in new_keys for i, ch in enumerate(key) if ch == "/")}
        _package_replace(drive, package, root, old, in_the_way)
        _stale_delete(drive, root, sorted(stale - in_the_way))
        bot = bot_ensure(name=package.bot_name)
        report = drive_scan(bot_name=package.bot_name)  # the lock is ours: taken again, never skipped
    if report.unavailable:
        # Blaming no file, the scan stopped: the next scan applies what it did not (the files are in the drive).
        raise BotDeployError(
            f"the package was written, but the drive became unavailable while it was being applied "
            f"({report.unavailable}); the drive scan applies the rest once the drive is back", status=503)
    errors = dict(report.failed)
    return DeployReport(bot=bot, files_written=len(new_keys), files_removed=len(stale), scan=report, errors=errors)


def _backup_max_bytes() -> int:
    """What a deploy keeps in memory of the files it replaces, to put them back if a write fails: the package
    limit (PACKAGE_MAX_TOTAL_BYTES), which every package deployed before fits in. Only files put into the
    package folder by other means (the console, S3) go past it; without a total, up to PACKAGE_MAX_ENTRIES x
    PACKAGE_MAX_FILE_BYTES (10 GB) could be held."""
    return settings.PACKAGE_MAX_TOTAL_BYTES


def _package_backup(drive, package: Package, root: str, old: dict, in_the_way: set[str]) -> tuple[dict, list]:
    """(saved content, keys not saved) of the old files the deploy replaces, read before anything is written.

    An old file in the way of a new one is deleted by the deploy: it must be saved, or the deploy is refused
    (BotDeployError, nothing written). An old file the package overwrites and which is larger than a package
    file is not kept (reported if a failure leaves it lost). The whole is at most _backup_max_bytes()."""
    new_md5 = {root + f.path: hashlib.md5(f.data, usedforsecurity=False).hexdigest() for f in package.files}
    file_max, total_max = settings.PACKAGE_MAX_FILE_BYTES, _backup_max_bytes()
    wanted = [key for key in sorted(in_the_way | (new_md5.keys() & old.keys()))
              if new_md5.get(key) != old[key].etag]  # the same bytes: nothing to put back
    unsaved = [key for key in wanted if key not in in_the_way and old[key].size > file_max]
    for key in wanted:
        if key in in_the_way and old[key].size > file_max:
            raise BotDeployError(
                f"'{key[len(root):]}' ({old[key].size} bytes) stands where the package puts a folder or file and "
                f"is larger than a package file ({file_max} bytes), too large to keep to put it back if a write "
                f"fails; nothing was written: move or delete it first", status=400)
    listed = sum(old[key].size for key in wanted if key not in unsaved)
    if listed > total_max:
        raise BotDeployError(
            f"the files this deploy replaces hold {listed} bytes, more than the {total_max} bytes "
            f"(PACKAGE_MAX_TOTAL_BYTES) kept to put them back if a write fails; nothing was written: delete the "
            f"old package's largest files first", status=400)
    saved: dict[str, bytes] = {}
    remaining = total_max
    for key in wanted:
        if key in unsaved:
            continue
        try:
            saved[key] = drive.read(key, max_bytes=min(file_max, remaining))  # bounded even if it grew meanwhile
        except FileNotFoundError:
            unsaved.append(key)  # gone since the listing: nothing to put back
            continue
        except DriveObjectTooLarge as exc:
            if key in in_the_way:
                raise BotDeployError(f"'{key[len(root):]}' grew past what can be kept to put it back ({exc}); "
                                     f"nothing was written, try again", status=400) from exc
            unsaved.append(key)
            continue
        except Exception as exc:  # noqa: BLE001 - any drive failure (permissions, S3 errors) is answered
            logger.exception("deploy backup read failed", extra={"key": key})
            raise BotDeployError(f"the drive could not read the previous '{key[len(root):]}' to keep it "
                                 f"({drive_error_text(exc)}); nothing was written, the previous "
                                 f"package is unchanged", status=503) from exc
        remaining -= len(saved[key])
    return saved, unsaved


def _package_replace(drive, package: Package, root: str, old: dict, in_the_way: set[str]) -> None:
    """Delete the old files in the way and write the new ones; if the drive fails meanwhile, put back what was
    there (old content read first, _package_backup) and raise BotDeployError."""
    saved, unsaved = _package_backup(drive, package, root, old, in_the_way)
    done: list[str] = []
    current = ""
    try:
        for key in sorted(in_the_way):
            current = key
            drive.delete(key)
            done.append(key)
        for item in package.files:
            current = root + item.path
            drive.write(current, item.data)
            done.append(current)
    except Exception as exc:  # noqa: BLE001 - any drive failure (disk, S3, a folder in the way) is answered
        logger.exception("deploy write failed", extra={"key": current})
        missing = sorted(_package_restore(drive, done, old, saved) | (set(unsaved) & set(done)))
        restored = ("the previous files were put back" if not missing else
                    f"the previous files were put back except {', '.join(k[len(root):] for k in missing[:20])}")
        raise BotDeployError(
            f"the drive refused '{current[len(root):]}' ({drive_error_text(exc)}); nothing was "
            f"deployed and {restored}", status=503) from exc


def _stale_delete(drive, root: str, keys: list[str]) -> None:
    """Delete the old package's files the new one does not have; BotDeployError (503) naming those the drive
    refused: the new package is in place, but they stay beside it until deleted (the next scan applies them)."""
    refused: list[str] = []
    cause = ""
    for key in keys:
        try:
            drive.delete(key)
        except Exception as exc:  # noqa: BLE001 - any drive failure is answered, the other deletes still tried
            logger.exception("deploy stale delete failed", extra={"key": key})
            refused.append(key[len(root):])
            cause = cause or drive_error_text(exc)
    if refused:
        raise BotDeployError(
            f"the new package is in place, but the drive refused to remove {len(refused)} file(s) of the previous "
            f"one ({', '.join(refused[:20])}; {cause}); they stay in the drive and the next scan applies them with "
            f"the new package: delete them, or deploy again", status=503)


def _package_restore(drive, done: list[str], old: dict, saved: dict[str, bytes]) -> set[str]:
    """Undo `done` (deletes and writes, in that order) newest first; returns the keys that could not be."""
    lost: set[str] = set()
    for key in reversed(done):
        try:
            if key in saved:
                drive.write(key, saved[key])
            elif key not in old:
                drive.delete(key)
        except Exception:  # noqa: BLE001 - the drive is failing: report what is left, do not hide the cause
            lost.add(key)
    return lost
