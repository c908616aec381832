"""The tenant's drive: folders and files under a prefix, and downloads (tenant_drive(), never a path)."""

from __future__ import annotations

from dataclasses import dataclass

from django.http import Http404, HttpRequest, HttpResponse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from apps.accounts.permissions import console_role_required
from apps.accounts.roles import Role, role_allows
from apps.bots.config_csv import config_text_masked
from apps.compliance.services import audit_record
from apps.console.pagination import console_page
from apps.console.views.common import console_render
from apps.drive.backends import DriveKeyError, DriveObjectTooLarge, drive_key_validate
from apps.drive.package import package_holds_settings
from apps.drive.storage import tenant_drive

# Objects read from a listing before it is cut: the drive lists recursively, so a folder holding a huge
# tree (a bot's runtime files) must not make one page read millions of keys.
DRIVE_LIST_MAX_OBJECTS = 10_000
# Top-level folders starting with "_" are the platform's own areas (`_compliance/` holds data-subject exports):
# never listed nor served here; each has its own page with its own role and audit trail.
INTERNAL_AREA_MARK = "_"
# Largest file the console hands out in one response (read whole by the drive backends); bigger files
# belong to an S3 client.
DRIVE_DOWNLOAD_MAX_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class DriveItem:
    name: str
    key: str
    folder: bool
    size: int = 0
    files: int = 0


def _listing(prefix: str) -> tuple[list[DriveItem], bool]:
    """The folders and files directly under `prefix` (keys end without '/'), and whether the listing was cut."""
    folders: dict[str, int] = {}
    files: list[DriveItem] = []
    cut = False
    for count, entry in enumerate(tenant_drive().list(prefix)):
        if count >= DRIVE_LIST_MAX_OBJECTS:
            cut = True
            break
        if _internal(entry.key):
            continue
        rest = entry.key[len(prefix):]
        head, sep, _tail = rest.partition("/")
        if sep:
            folders[head] = folders.get(head, 0) + 1
        else:
            files.append(DriveItem(name=rest, key=entry.key, folder=False, size=entry.size))
    items = [DriveItem(name=name, key=f"{prefix}{name}/", folder=True, files=n) for name, n in sorted(folders.items())]
    return items + sorted(files, key=lambda item: item.name), cut


def _internal(key: str) -> bool:
    return key.startswith(INTERNAL_AREA_MARK)


def _prefix_of(request: HttpRequest) -> str:
    prefix = request.GET.get("prefix", "").strip()
    if not prefix:
        return ""
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    try:
        drive_key_validate(prefix[:-1])
    except DriveKeyError as exc:
        raise Http404(str(exc)) from None
    if _internal(prefix):
        raise Http404(_("No such folder in the drive."))
    return prefix


@require_GET
@console_role_required(Role.VIEWER)
def drive_browser_page(request: HttpRequest) -> HttpResponse:
    prefix = _prefix_of(request)
    items, cut = _listing(prefix)
    parts, crumbs = prefix.rstrip("/").split("/") if prefix else [], []
    for i, part in enumerate(parts):
        crumbs.append({"name": part, "prefix": "/".join(parts[: i + 1]) + "/"})
    return console_render(request, "console/drive/browser.html", {
        "prefix": prefix, "crumbs": crumbs, "page_obj": console_page(request, items), "cut": cut,
        "max_objects": DRIVE_LIST_MAX_OBJECTS,
    })


def _too_large(size: int) -> HttpResponse:
    return HttpResponse(_("This file is %(size)d bytes; the console hands out files up to %(max)d bytes.") % {
        "size": size, "max": DRIVE_DOWNLOAD_MAX_BYTES}, status=413, content_type="text/plain; charset=utf-8")


@require_GET
@console_role_required(Role.VIEWER)
def drive_download(request: HttpRequest) -> HttpResponse:
    """One file as an attachment (never rendered by the browser: octet-stream, nosniff)."""
    key = request.GET.get("key", "")
    try:
        drive_key_validate(key)
    except DriveKeyError as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain; charset=utf-8")
    if _internal(key):
        raise Http404(_("No such file in the drive."))
    from apps.drive.models import DriveObject

    # The size the DriveMonitor last saw (every object inside a bot package has a row): refuse before reading.
    # Files outside packages have no row, and a file may have grown since: the read itself is bounded too.
    size = DriveObject.objects.filter(key=key).values_list("size", flat=True).first() or 0
    if size > DRIVE_DOWNLOAD_MAX_BYTES:
        return _too_large(size)
    drive = tenant_drive()
    try:
        data = drive.read(key, max_bytes=DRIVE_DOWNLOAD_MAX_BYTES)
    except FileNotFoundError:
        raise Http404(_("No such file in the drive.")) from None
    except DriveObjectTooLarge as exc:
        return _too_large(exc.size)
    if package_holds_settings(key) and not role_allows(getattr(request, "console_role", None), Role.EDITOR):
        # A bot's settings hold its credentials (llm-key, email-pass): viewers get them masked, as on its page.
        data = config_text_masked(data.decode("utf-8", "replace")).encode("utf-8")
    audit_record(action="drive.download", object_type="drive", object_id=key[:200], summary={"bytes": len(data)},
                 request=request)
    response = HttpResponse(data, content_type="application/octet-stream")
    filename = key.rsplit("/", 1)[-1].replace('"', "")
    response["Content-Disposition"] = f"attachment; filename*=UTF-8''{_rfc5987(filename)}"
    return response


def _rfc5987(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")
