"""The DriveMonitor: bring the database in line with what is in the tenant's drive.

One scan lists every object with its ETag once, compares it with the stored DriveObject rows (one query),
and processes only what changed: compile a `.bas`, sync `config.csv`, register or remove KB documents,
import `.gbdata` CSVs. Unchanged objects cost no query and no read. A file that keeps failing is parked
after settings.DRIVE_MAX_FAILURES attempts and retried only when its content (ETag) changes, so nothing
is re-processed in a loop. One scan at a time per tenant (a PostgreSQL advisory lock).

A drive that is unavailable (DriveUnavailable: S3 down, timing out or failing, a local mount gone) is nobody's
file's fault: the scan stops at once, counts nothing against any file, and leaves every file it did not get to
for the next scan (ScanReport.unavailable says why, one warning line logs it). A listing that fails changes
nothing at all.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.bots import services as bot_services
from apps.bots.config_csv import CONFIG_MAX_BYTES
from apps.bots.models import BOT_NAME_RE, Bot, BotScript
from apps.core.locks import tenant_lock_try
from apps.drive.backends import DriveObjectTooLarge, DriveUnavailable, drive_error_text
from apps.drive.models import DriveObject
from apps.drive.package import kb_name_of, package_classify
from apps.drive.storage import package_root, tenant_drive
from apps.kb import services as kb_services

logger = logging.getLogger(__name__)

# Error text kept per object for the console: enough for a compiler message, not a whole traceback.
MAX_ERROR_CHARS = 2000
# Processing order within a scan: configuration and prompt first, so scripts compiled in the same scan
# and documents registered in it see the bot's current settings.
KIND_ORDER = {"config": 0, "prompt": 1, "data": 2, "bas": 3, "kb": 4, "other": 5}

_BOT_NAME = re.compile(BOT_NAME_RE)

# The most the DriveMonitor reads of a file of each kind it processes, and what the kind is called in the error:
# a larger object is refused from its size (nothing downloaded) and recorded as the file's failure. Without it
# a 3 GB `.gbdata` CSV put in the bucket was read whole into the worker, once per retry.
KIND_MAX_BYTES = {
    "bas": bot_services.SCRIPT_MAX_BYTES,
    "config": CONFIG_MAX_BYTES,
    "prompt": bot_services.PROMPT_MAX_BYTES,
    "data": bot_services.DATA_CSV_MAX_BYTES,
}
KIND_LABELS = {"bas": "a script", "config": "config.csv", "prompt": "a prompt file", "data": "a .gbdata table"}


@dataclass
class ScanReport:
    skipped: bool = False  # another scan of this tenant was running
    listed: int = 0
    processed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    parked: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    # Set when the drive became unavailable (DriveUnavailable's reason): the scan stopped there, and `waiting`
    # holds the changed files it did not get to (none counted as failed), all left to the next scan.
    unavailable: str = ""
    waiting: list[str] = field(default_factory=list)


def drive_object_kind(path: str) -> str:
    """Kind of a file by its place in the package. Everything under `<bot>.gbdrive/` is the bot's own file
    area, written by scripts at run time: it is data, never a script, config or KB document to process,
    whatever its name (a script must not be able to plant `evil.bas` or `x.gbot/config.csv` there)."""
    if path.split("/", 1)[0].lower().endswith(".gbdrive"):
        return "other"
    return package_classify(path)


def _split(key: str) -> tuple[str, str] | None:
    """`Demo.gbai/demo.gbdialog/start.bas` -> ("demo", "demo.gbdialog/start.bas"); None outside packages."""
    head, sep, rest = key.partition("/")
    if not sep or not rest or not head.lower().endswith(".gbai"):
        return None
    name = head[: -len(".gbai")].lower()
    return (name, rest) if _BOT_NAME.match(name) else None


# A deploy (and a console config save) waits this long for the tenant's drive lock, held by a running scan or
# another deploy; still held then, it writes nothing and is refused (409, "busy"). Holding it, it scans itself:
# the admin who deployed must see the compile errors of what they deployed, not an empty "skipped".
DEPLOY_SCAN_WAIT_S = 30.0
SCAN_LOCK_POLL_S = 0.2
SCAN_LOCK_NAME = "drive-scan"


@contextlib.contextmanager
def drive_scan_lock(*, wait_s: float = 0.0) -> Iterator[bool]:
    """Yield True holding the tenant's drive lock (one scan or deploy at a time), waiting up to `wait_s` for
    its holder; False when it is still held then. A session-level advisory lock: the holder may take it again
    (a deploy holding it runs its scan inside)."""
    deadline = time.monotonic() + wait_s
    while True:
        with tenant_lock_try(SCAN_LOCK_NAME) as acquired:
            if acquired or time.monotonic() >= deadline:
                yield acquired
                return
        time.sleep(SCAN_LOCK_POLL_S)


def drive_scan(*, bot_name: str | None = None, wait_s: float = 0.0) -> ScanReport:
    """Scan the current tenant's drive (or one bot's package) and process what changed. With `wait_s`,
    wait that long for another scan of the tenant to finish instead of skipping."""
    with drive_scan_lock(wait_s=wait_s) as acquired:
        return _scan(bot_name) if acquired else ScanReport(skipped=True)


def _scan(bot_name: str | None) -> ScanReport:
    report = ScanReport()
    try:
        drive = tenant_drive()
    except DriveUnavailable as exc:
        return _unavailable(report, exc, None)
    stored = DriveObject.objects.all() if bot_name is None else DriveObject.objects.filter(bot_name=bot_name)
    known = {obj.key: obj for obj in stored}
    _again(known, _reclassify(known))
    hints = {k: (o.size, o.mtime_ns, o.etag) for k, o in known.items() if o.mtime_ns is not None}

    seen: set[str] = set()
    fresh: set[str] = set()  # new or with new content in this scan: a file renamed or moved to is one (_successors)
    created: list[DriveObject] = []
    touched: dict[str, DriveObject] = {}
    pending: list[DriveObject] = []
    try:
        listing = list(drive.list(package_root(bot_name) if bot_name else "", etag_hints=hints))
    except DriveUnavailable as exc:
        # Nothing was written yet: a listing cut short must not look like files removed, nor count as anything.
        return _unavailable(ScanReport(), exc, None)
    for entry in listing:
        split = _split(entry.key)
        if split is None:
            continue  # not inside a `<bot>.gbai/` package: not ours to process
        report.listed += 1
        seen.add(entry.key)
        obj = known.get(entry.key)
        # The modification time is kept only when it may serve as the next scan's hint (see DriveEntry.hintable).
        mtime_ns = entry.mtime_ns if entry.hintable else None
        if obj is None:
            obj = DriveObject(key=entry.key, bot_name=split[0], kind=drive_object_kind(split[1]), etag=entry.etag,
                              size=entry.size, mtime_ns=mtime_ns)
            created.append(obj)
            fresh.add(obj.key)
        elif (obj.etag, obj.size, obj.mtime_ns) != (entry.etag, entry.size, mtime_ns):
            if obj.etag != entry.etag:
                obj.fail_count = 0  # new content: a parked file gets its chances again
                fresh.add(obj.key)
            obj.etag, obj.size, obj.mtime_ns = entry.etag, entry.size, mtime_ns
            touched[obj.key] = obj
        if obj.processed_etag == obj.etag:
            continue
        if obj.kind == "other":
            # Themes, drive files, READMEs: nothing to do but remember the ETag, in the bulk write below.
            obj.processed_etag = obj.etag
            if obj.pk is not None:
                touched[obj.key] = obj
            report.processed.append(obj.key)
            continue
        if obj.fail_count >= settings.DRIVE_MAX_FAILURES:
            report.parked.append(obj.key)
            continue
        pending.append(obj)

    # In key order, whatever order the drive listed them in: of two new `.gbdata` files of one table name, the
    # first recorded holds the table (_data_table_check).
    created.sort(key=lambda o: o.key)
    DriveObject.objects.bulk_create(created)
    if touched:
        DriveObject.objects.bulk_update(
            touched.values(), ["etag", "size", "mtime_ns", "fail_count", "processed_etag"], batch_size=1000
        )

    # Removals first, then the changed files: a file moved within one scan (`a.gbdata/products.csv` to
    # `b.gbdata/products.csv`, `start.bas` to another folder, a folder renamed in another case) is both a
    # removal and a new file of the same table or script name. Processed the other way round, the new file was
    # imported and then the removal of the old path emptied the same table, or the new script was refused
    # ("a script named 'start' already exists") and the removal left the bot with none. A removed script or
    # table whose name another file still has is not undone but handed to that file (_successors: the file it was
    # renamed to before an older refused copy), which is applied next: if it fails, the previous version keeps
    # running, as for a bad change at one path.
    # A bot-scoped scan listed only `<bot>.gbai/` exactly; objects of a differently cased folder of the same
    # bot (`Demo.gbai/`) were not listed, which does not mean they are gone.
    listed_prefix = package_root(bot_name) if bot_name else ""
    gone = [obj for key, obj in known.items() if key not in seen and key.startswith(listed_prefix)]
    recorded = [*known.values(), *created]
    successors, idle = _successors(gone, recorded, fresh)
    for obj in gone:
        _remove(obj, report, heirs=successors.get(obj.key), undo=obj.key not in idle)
    # Removing a bot's settings or prompt file cleared them: another file of that kind still there (the same
    # name in another case, or the file the old one was moved to) applies again, with the changed files. So
    # does a file a removed script or table was handed to (even one parked as refused beside it).
    cleared = {(obj.bot_name, obj.kind) for obj in gone if obj.kind in ("config", "prompt")}
    taking_over = {heirs[0].key for heirs in successors.values()}
    queued = {obj.key for obj in pending}
    for obj in recorded:
        again = (obj.bot_name, obj.kind) in cleared or obj.key in taking_over
        if again and obj.key in seen and obj.key not in queued:
            obj.processed_etag = ""
            pending.append(obj)
            queued.add(obj.key)

    bots = _bots_ensure({o.bot_name for o in created} | {o.bot_name for o in pending})
    try:
        _process_all(drive, bots, pending, report)
    except DriveUnavailable as exc:
        waiting = sorted(o.key for o in pending if o.processed_etag != o.etag and o.key not in report.failed)
        return _unavailable(report, exc, waiting)
    return report


def _process_all(drive, bots: dict[str, Bot], pending: list[DriveObject], report: ScanReport) -> None:
    """Apply the changed files in KIND_ORDER; DriveUnavailable from the first read that meets an outage stops
    it there (every further read would fail alike)."""
    # A script refused for the bot's (or the tenant's) schedule total counted the other scripts' schedules as
    # they were: one of them changed in this scan may be giving schedules up (a.bas 40 -> 60 while b.bas 60 -> 40
    # was refused or not depending on key order). Such scripts are tried again after the rest, until none more
    # fits; the total never goes past the limit in between. What is still refused then is decided by key order.
    deferred: list[DriveObject] = []
    for obj in sorted(pending, key=lambda o: (KIND_ORDER.get(o.kind, 9), o.key)):
        if not _process(drive, bots[obj.bot_name], obj, report, defer_schedule_limit=True):
            deferred.append(obj)
    while deferred:
        retry, deferred = deferred, []
        for obj in retry:
            if not _process(drive, bots[obj.bot_name], obj, report, defer_schedule_limit=True):
                deferred.append(obj)
        if len(deferred) == len(retry):
            break
    for obj in deferred:
        _process(drive, bots[obj.bot_name], obj, report)  # refused for good: recorded as its failure


def _unavailable(report: ScanReport, exc: DriveUnavailable, waiting: list[str] | None) -> ScanReport:
    """The scan stops for a drive outage: nothing more is read, no file is blamed, what is left waits for the
    next scan (the beat queues one every DRIVE_SCAN_INTERVAL_S). `waiting` None: nothing could be listed."""
    report.unavailable, report.waiting = exc.reason, waiting or []
    left = ("before its listing; every change waits for the next scan" if waiting is None
            else f"{len(waiting)} changed file(s) left for the next scan")
    logger.warning("drive scan stopped, the drive is unavailable: %s; %s", exc.reason, left)
    return report


def _again(known: dict[str, DriveObject], undone: set[tuple[str, str]]) -> None:
    """Mark the bots' remaining settings and prompt files of the undone kinds to be processed in this scan."""
    for obj in known.values():
        if (obj.bot_name, obj.kind) in undone:
            obj.processed_etag = ""


def _bots_ensure(names: set[str]) -> dict[str, Bot]:
    bots = {bot.name: bot for bot in Bot.objects.filter(name__in=names)}
    for name in names - bots.keys():
        bots[name] = bot_services.bot_ensure(name=name)
    return bots


def _process(drive, bot: Bot, obj: DriveObject, report: ScanReport, *, defer_schedule_limit: bool = False) -> bool:
    """Apply one changed file (its failure recorded); False, with nothing recorded, when `defer_schedule_limit`
    and the script was refused for the bot's schedule total only (the caller tries it again later)."""
    path = obj.key.partition("/")[2]
    failure = None
    try:
        with transaction.atomic():
            if obj.kind == "bas":
                script = bot_services.script_sync(bot=bot, path=obj.key, data=_read(drive, obj))
                failure = bot_services.script_failure(script)  # stored with its error, reported below
            elif obj.kind == "config":
                bot_services.config_sync(bot=bot, data=_read(drive, obj))
            elif obj.kind == "prompt":
                bot_services.prompt_sync(bot=bot, path=obj.key, data=_read(drive, obj))
            elif obj.kind == "data":
                _data_table_check(obj)
                bot_services.data_csv_sync(bot=bot, path=obj.key, data=_read(drive, obj))
            elif obj.kind == "kb":
                kb_services.document_register(
                    bot=bot, kb_name=kb_name_of(path) or "default", path=obj.key, etag=obj.etag, size=obj.size
                )
    except bot_services.ScheduleLimitError as exc:
        if defer_schedule_limit:
            return False
        _failed(obj, str(exc), report)
    except bot_services.BotFileError as exc:
        _failed(obj, str(exc), report)
    except DriveUnavailable:  # the drive's outage, not this file's: nothing recorded, the scan stops (_scan)
        raise
    except FileNotFoundError:
        _vanished(obj, report)
    except DriveObjectTooLarge as exc:
        _failed(obj, f"{obj.key}: {exc.size} bytes; the limit for {KIND_LABELS[obj.kind]} is {exc.max_bytes} "
                     f"bytes (not read)", report)
    except SoftTimeLimitExceeded:  # the task's time limit, not a fault of this file: the task reports it
        raise
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the scan of the others
        logger.exception("drive object processing failed", extra={"key": obj.key})
        _failed(obj, f"internal error: {type(exc).__name__}", report)
    else:
        if failure is not None:
            _failed(obj, failure, report)
            return True
        obj.processed_etag, obj.fail_count, obj.last_error, obj.last_failed_at = obj.etag, 0, "", None
        obj.save(update_fields=["processed_etag", "fail_count", "last_error", "last_failed_at", "updated_at"])
        report.processed.append(obj.key)
    return True


def _read(drive, obj: DriveObject) -> bytes:
    """The file's content, at most its kind's KIND_MAX_BYTES (DriveObjectTooLarge from its size, unread).

    A read the drive refuses for this file alone (S3 AccessDenied on its key, a local file without read permission,
    a symbolic link) is the file's failure, with the drive's reason (BotFileError): it was stored as "internal
    error: ClientError". An outage (DriveUnavailable) goes up and stops the scan; a vanished file is _vanished."""
    try:
        return drive.read(obj.key, max_bytes=KIND_MAX_BYTES[obj.kind])
    except (FileNotFoundError, DriveObjectTooLarge, DriveUnavailable, SoftTimeLimitExceeded):
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the drive refused this one file with
        logger.warning("drive object read refused", extra={"key": obj.key}, exc_info=True)
        raise bot_services.BotFileError(f"{obj.key}: the drive refused to read it ({drive_error_text(exc)})") from exc


def _vanished(obj: DriveObject, report: ScanReport) -> None:
    """The file went between the listing and its read: said so (the error's text named the file's path on the
    server) and not counted as its failure, nothing of it applied; the next scan, not listing it, removes it."""
    obj.last_error = f"{obj.key} was removed while the scan read it"
    obj.processed_etag = ""
    obj.save(update_fields=["last_error", "processed_etag", "updated_at"])
    report.failed[obj.key] = obj.last_error


def _failed(obj: DriveObject, message: str, report: ScanReport) -> None:
    obj.fail_count += 1
    obj.last_error = message[:MAX_ERROR_CHARS]
    obj.last_failed_at = timezone.now()
    # Nothing of this content is applied: a file put back as it was before it failed is processed again (a
    # script reverted to its running version clears its refused one).
    obj.processed_etag = ""
    obj.save(update_fields=["fail_count", "last_error", "last_failed_at", "processed_etag", "updated_at"])
    report.failed[obj.key] = obj.last_error
    if obj.fail_count >= settings.DRIVE_MAX_FAILURES:
        logger.warning("drive object parked after repeated failures", extra={"key": obj.key})


def _unapply(obj: DriveObject) -> None:
    """Undo what processing the file did to its bot (it is gone, or no longer of its recorded kind)."""
    bot = Bot.objects.filter(name=obj.bot_name).first()
    if bot is not None:
        if obj.kind == "bas":
            bot_services.script_remove(bot=bot, path=obj.key)
        elif obj.kind == "config":
            bot_services.config_clear(bot=bot)
        elif obj.kind == "prompt":
            bot_services.prompt_sync(bot=bot, data=None)
        elif obj.kind == "data":
            bot_services.data_csv_sync(bot=bot, path=obj.key, data=None)
    if obj.kind == "kb":
        kb_services.document_remove(path=obj.key)


def _siblings_unprocessed(obj: DriveObject, kind: str) -> None:
    """In the transaction that undoes `obj` as the bot's settings or prompt: the bot's other file of that kind
    must be applied again, and is marked so in the same commit (a crash between the two must not leave the
    bot without settings while its file looks processed)."""
    if kind in ("config", "prompt"):
        DriveObject.objects.filter(bot_name=obj.bot_name, kind=kind).exclude(pk=obj.pk).update(processed_etag="")


def _remove(obj: DriveObject, report: ScanReport, *, heirs: list[DriveObject] | None = None,
            undo: bool = True) -> None:
    """Forget a file gone from the drive and undo what it did; with `heirs` (_successors), hand that to the first of
    them instead. `undo` False: the file held nothing to undo (a script or `.gbdata` file refused beside another of
    its name)."""
    with transaction.atomic():
        if heirs:
            _hand_over(obj, heirs)
        elif undo:
            _unapply(obj)
        _siblings_unprocessed(obj, obj.kind)
        obj.delete()
    report.removed.append(obj.key)


def _name_of(obj: DriveObject) -> str | None:
    """The script or table a script or `.gbdata` file defines (by file name: files of one bot may share it)."""
    if obj.kind == "bas":
        return bot_services.script_name_of(obj.key)
    if obj.kind == "data":
        return bot_services.table_name_of_data_file(obj.key)
    return None


def _successors(gone: list[DriveObject], recorded: list[DriveObject],
                fresh: set[str]) -> tuple[dict[str, list[DriveObject]], set[str]]:
    """For the scan's removed scripts and `.gbdata` files: the remaining files of the name of each one that held its
    script or table (by removed key), the one that takes over first; and the removed keys that held none.

    One file holds a bot's script name (the file its script row was stored from) or table name (its first recorded
    `.gbdata` file, _data_table_check); others of that name were refused. When the holder is gone and other files of
    that name remain, one takes over, by preference:

    1. a file new or changed in this scan (`fresh`): the file the holder was renamed or moved to. Of several, the
       one with the removed file's content (a move keeps it), then the first in key order;
    2. a file that never failed;
    3. a file refused beside the holder (even parked), the first recorded.

    An older refused copy never wins over the file the user renamed to (it did, being recorded first). The script or
    table is kept as it is, and the file taking over is applied in this scan, replacing it if it can (a new file that
    fails leaves the previous version running, and its error says so)."""
    gone_keys = {obj.key for obj in gone}
    groups: dict[tuple[str, str, str], list[DriveObject]] = {}
    for obj in sorted(recorded, key=lambda o: o.pk):
        name = _name_of(obj)
        if name is not None:
            groups.setdefault((obj.bot_name, obj.kind, name), []).append(obj)
    scripts = set(BotScript.objects.filter(path__in=[obj.key for obj in gone if obj.kind == "bas"])
                  .values_list("path", flat=True))
    successors: dict[str, list[DriveObject]] = {}
    idle: set[str] = set()
    for obj in gone:
        name = _name_of(obj)
        if name is None:
            continue
        group = groups[(obj.bot_name, obj.kind, name)]
        if not (obj.key in scripts if obj.kind == "bas" else group[0].pk == obj.pk):
            idle.add(obj.key)
            continue
        remaining = sorted((other for other in group if other.key not in gone_keys),
                           key=lambda other: _preference(other, obj, fresh))
        if remaining:
            successors[obj.key] = remaining
    return successors, idle


def _preference(other: DriveObject, holder: DriveObject, fresh: set[str]) -> tuple:
    """Sort key of the files that may take `holder`'s script or table over, the first preferred (_successors)."""
    if other.key in fresh:
        return (0, other.etag != holder.etag, other.key)
    return (1 if other.fail_count == 0 and not other.last_error else 2, other.pk)


def _hand_over(obj: DriveObject, heirs: list[DriveObject]) -> None:
    """In the transaction forgetting `obj`: its script becomes `heirs[0]`'s (a table stays as it is), and `heirs[0]`
    is marked to be applied, in the same commit. A table goes to the bot's first recorded file of its name
    (_data_table_check): the others of that name recorded before `heirs[0]` are recorded again after it (their
    state kept, refused files still refused), so it holds the table in this scan and the next ones."""
    successor = heirs[0]
    bot = Bot.objects.filter(name=obj.bot_name).first()
    if bot is not None and obj.kind == "bas":
        bot_services.script_move(bot=bot, path=obj.key, new_path=successor.key)
    if obj.kind == "data":
        for other in sorted((o for o in heirs[1:] if o.pk < successor.pk), key=lambda o: o.pk):
            DriveObject.objects.filter(pk=other.pk).delete()
            other.pk = None
            other.save(force_insert=True)  # the same object (the scan's copy), with a new pk
    DriveObject.objects.filter(pk=successor.pk).update(processed_etag="")
    successor.processed_etag = ""


def _data_table_check(obj: DriveObject) -> None:
    """Refuse (BotFileError) a `.gbdata` file whose table another file of the bot holds: tables are named by file
    name (`a.gbdata/products.csv` and `b.gbdata/products.csv` are both `products.csv`), and the first file
    recorded holds it. Imported too, the second replaced the first's rows silently, and removing either emptied
    the table while the other looked applied. The second is applied once the first is removed (_successors; a file
    taking a table over is made the first recorded, _hand_over)."""
    table = bot_services.table_name_of_data_file(obj.key)
    earlier = DriveObject.objects.filter(bot_name=obj.bot_name, kind="data", pk__lt=obj.pk).order_by("pk")
    holder = next((other for other in earlier if bot_services.table_name_of_data_file(other.key) == table), None)
    if holder is not None:
        raise bot_services.BotFileError(
            f"{obj.key}: the table '{table}' belongs to {holder.key}, the bot's first file of that name (tables are "
            f"named by file name); not imported: rename or remove one of the two files")


def _reclassify(known: dict[str, DriveObject]) -> set[tuple[str, str]]:
    """Objects recorded under a kind the current rules no longer give them (an upgrade changed the rules):
    what they did is undone and they are processed again under their new kind. Returns the (bot, kind) pairs
    undone, whose remaining files of that kind must be applied again (a stray `old-config.csv` was recorded as
    the bot's settings; undoing it cleared them)."""
    undone: set[tuple[str, str]] = set()
    for obj in known.values():
        split = _split(obj.key)
        kind = drive_object_kind(split[1]) if split is not None else obj.kind
        if kind == obj.kind:
            continue
        recorded = obj.kind
        with transaction.atomic():
            _unapply(obj)
            _siblings_unprocessed(obj, recorded)
            obj.kind, obj.processed_etag = kind, ""
            obj.save(update_fields=["kind", "processed_etag", "updated_at"])
        logger.info("drive object reclassified", extra={"key": obj.key, "kind": kind})
        if recorded in ("config", "prompt"):
            undone.add((obj.bot_name, recorded))
    return undone
