"""Deploying through the API and the command; hostile archives are refused and change nothing."""

import io
import threading
import time
import zipfile

import pytest
from botocore.exceptions import ClientError
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from django_tenants.utils import schema_context

from apps.bots.models import Bot, BotConfig, BotScript
from apps.drive.models import DriveObject
from apps.drive.storage import tenant_drive

pytestmark = pytest.mark.django_db

START = b'TALK "hello"\n'


@pytest.fixture(autouse=True)
def _local_storage(local_storage):
    return local_storage


def _zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for info, data in entries:
            archive.writestr(info, data)
    return buffer.getvalue()


def _symlink_entry() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("shop.gbai/shop.gbdialog/link.bas")
    info.external_attr = (0o120777 << 16)
    return info


def _many_entries() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for i in range(100_001):
            archive.writestr(f"shop.gbai/f{i}", b"")
    return buffer.getvalue()


def _admin_client(tenant) -> Client:
    client = Client(HTTP_HOST=tenant.host)
    assert client.post("/accounts/login/", {"username": "admin", "password": tenant.admin_password}).status_code == 302
    return client


def _upload(client: Client, data: bytes, **headers):
    return client.post("/api/bots/deploy", {"package": io.BytesIO(data)}, format="multipart", **headers)


def _state(schema: str) -> tuple:
    with schema_context(schema):
        return (
            sorted(e.key for e in tenant_drive().list()),
            list(Bot.objects.values_list("name", flat=True)),
            DriveObject.objects.count(),
            BotScript.objects.count(),
        )


def test_admin_uploads_a_package_and_sees_the_result(canary_tenants):
    client = _admin_client(canary_tenants.a)
    data = _zip([("shop.gbai/shop.gbdialog/start.bas", START),
                 ("shop.gbai/shop.gbdialog/bad.bas", b"FOR i = 1 TO\n")])
    response = _upload(client, data)
    assert response.status_code == 200
    body = response.json()
    assert body["bot"] == "shop" and body["files_written"] == 2
    assert list(body["errors"]) == ["shop.gbai/shop.gbdialog/bad.bas"]
    with schema_context(canary_tenants.a.schema_name):
        assert BotScript.objects.get(name="start").ok


@pytest.mark.parametrize(
    ("archive", "message"),
    [
        (lambda: _zip([("shop.gbai/../../evil.bas", START)]), "escapes"),
        (lambda: _zip([("/etc/shop.gbai/start.bas", START)]), "absolute"),
        (lambda: _zip([(_symlink_entry(), b"/etc/passwd")]), "symbolic link"),
        (_many_entries, "entries"),
        (lambda: _zip([("shop.gbai/zeros.txt", b"\0" * (30 * 1024 * 1024))]), "compressed size"),
        (lambda: b"this is not a zip file", "zip"),
    ],
    ids=["zip-slip", "absolute-path", "symlink", "100k-entries", "ratio-bomb", "not-a-zip"],
)
def test_hostile_archives_are_refused_with_a_reason_and_change_nothing(canary_tenants, archive, message):
    client = _admin_client(canary_tenants.a)
    assert _upload(client, _zip([("shop.gbai/shop.gbdialog/start.bas", START)])).status_code == 200
    before = _state(canary_tenants.a.schema_name)
    response = _upload(client, archive())
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert _state(canary_tenants.a.schema_name) == before


def _bot_state(schema: str) -> tuple:
    with schema_context(schema):
        drive = tenant_drive()
        return (
            {e.key: drive.read(e.key) for e in drive.list()},
            sorted(BotScript.objects.values_list("path", "source")),
            sorted(BotConfig.objects.values_list("key", "value")),
        )


@pytest.mark.parametrize(
    "entries",
    [[], [("__MACOSX/._start.bas", b"junk"), (".DS_Store", b"junk"), ("shop.gbdialog/", b"")]],
    ids=["empty-zip", "only-litter"],
)
def test_a_package_without_files_is_refused_and_the_bot_keeps_everything(canary_tenants, entries):
    """With the bot name given, an empty zip (or one of macOS litter and folders) was read as a package with no
    files: the deploy then deleted every file of the bot as stale and answered 200."""
    client = _admin_client(canary_tenants.a)
    package = _zip([("shop.gbai/shop.gbdialog/start.bas", START),
                    ("shop.gbai/shop.gbot/config.csv", b"name,value\nbot-name,Shop\n")])
    assert _upload(client, package).status_code == 200
    before = _bot_state(canary_tenants.a.schema_name)
    assert len(before[0]) == 2 and before[1] and before[2]
    response = client.post("/api/bots/deploy", {"package": io.BytesIO(_zip(entries)), "bot": "shop"},
                           format="multipart")
    assert response.status_code == 400
    assert "package holds no files" in response.json()["error"]
    assert _bot_state(canary_tenants.a.schema_name) == before


def test_anonymous_and_non_admin_users_cannot_deploy(canary_tenants):
    anonymous = Client(HTTP_HOST=canary_tenants.a.host)
    response = _upload(anonymous, _zip([("shop.gbai/shop.gbdialog/start.bas", START)]))
    assert response.status_code == 401
    assert _state(canary_tenants.a.schema_name)[1] == [canary_tenants.a.canary]


def test_an_api_key_deploys_only_with_the_deploy_scope_and_only_in_its_tenant(canary_tenants):
    from apps.accounts.services import api_key_create

    with schema_context(canary_tenants.a.schema_name):
        admin = get_user_model().objects.get(username="admin")
        reader = api_key_create(name="reader", scopes=["kb:search"], created_by=admin).secret
        deployer = api_key_create(name="ci", scopes=["bots:deploy"], created_by=admin).secret
    package = _zip([("keyed.gbai/keyed.gbdialog/start.bas", START)])
    client_a = Client(HTTP_HOST=canary_tenants.a.host)
    assert _upload(client_a, package, HTTP_AUTHORIZATION=f"Bearer {reader}").status_code == 403
    client_b = Client(HTTP_HOST=canary_tenants.b.host)
    assert _upload(client_b, package, HTTP_AUTHORIZATION=f"Bearer {deployer}").status_code == 401
    assert _upload(client_a, package, HTTP_AUTHORIZATION=f"Bearer {deployer}").status_code == 200
    with schema_context(canary_tenants.b.schema_name):
        assert not Bot.objects.filter(name="keyed").exists()


def test_deploy_command_reads_a_folder_and_reports_refusals(canary_tenants, tmp_path, capsys):
    package = tmp_path / "Shop.gbai" / "shop.gbdialog"
    package.mkdir(parents=True)
    (package / "start.bas").write_bytes(START)
    call_command("bot_deploy", str(tmp_path / "Shop.gbai"), "--tenant", canary_tenants.b.schema_name)
    assert "deployed bot shop" in capsys.readouterr().out
    with schema_context(canary_tenants.b.schema_name):
        assert BotScript.objects.get(name="start").ok
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(_zip([("shop.gbai/../x.bas", START)]))
    with pytest.raises(CommandError, match="package refused"):
        call_command("bot_deploy", str(bomb), "--tenant", canary_tenants.b.schema_name)
    with pytest.raises(CommandError, match="no ready tenant"):
        call_command("bot_deploy", str(bomb), "--tenant", "nope")


def _v1_v2() -> tuple[bytes, bytes]:
    v1 = _zip([("shop.gbai/shop.gbdialog/a.bas", b'TALK "a1"\n'),
               ("shop.gbai/shop.gbot/config.csv", b"name,value\nbot-name,One\n"),
               ("shop.gbai/shop.gbkb/faq/old.md", b"# old\n")])
    v2 = _zip([("shop.gbai/shop.gbdialog/a.bas", b'TALK "a2"\n'),
               ("shop.gbai/shop.gbdialog/b.bas", b'TALK "b2"\n'),
               ("shop.gbai/shop.gbdialog/c.bas", b'TALK "c2"\n'),
               ("shop.gbai/shop.gbot/config.csv", b"name,value\nbot-name,Two\n")])
    return v1, v2


def test_a_drive_write_failing_half_way_is_a_clear_error_and_the_previous_files_are_put_back(canary_tenants):
    """drive.write raising at the 2nd file was a 500 that left a.bas new, the rest old and the stale files there,
    a mix the next scan applied. Here the failure is real: a folder left by a crashed write (holding only a
    temporary file, which listings skip) stands where b.bas goes."""
    schema = canary_tenants.a.schema_name
    client = _admin_client(canary_tenants.a)
    v1, v2 = _v1_v2()
    assert _upload(client, v1).status_code == 200
    with schema_context(schema):
        obstacle = tenant_drive().root / "shop.gbai/shop.gbdialog/b.bas"
    obstacle.mkdir()
    (obstacle / ".drive-tmp-crashed").write_bytes(b"")
    before = _bot_state(schema)
    response = _upload(client, v2)
    assert response.status_code == 503
    error = response.json()["error"]
    assert "the drive refused 'shop.gbdialog/b.bas'" in error and "the previous files were put back" in error
    assert "except" not in error
    assert _bot_state(schema) == before
    with schema_context(schema):
        assert tenant_drive().read("shop.gbai/shop.gbdialog/a.bas") == b'TALK "a1"\n'


def test_an_undone_deploy_puts_back_a_file_whose_place_a_new_folder_took(canary_tenants):
    """v1's file `shop.gbot/theme` gave way to v2's `shop.gbot/theme/css/main.css`; a later write failed, and
    undoing deleted main.css but left the empty `theme/css/` folders, so putting `theme` back failed
    (IsADirectoryError) and its saved content was lost."""
    schema = canary_tenants.a.schema_name
    client = _admin_client(canary_tenants.a)
    v1 = _zip([("shop.gbai/shop.gbdialog/a.bas", b'TALK "a1"\n'), ("shop.gbai/shop.gbot/theme", b"old theme")])
    v2 = _zip([("shop.gbai/shop.gbdialog/a.bas", b'TALK "a2"\n'),
               ("shop.gbai/shop.gbot/theme/css/main.css", b"body {}"), ("shop.gbai/shop.gbot/zz.txt", b"z")])
    assert _upload(client, v1).status_code == 200
    with schema_context(schema):
        obstacle = tenant_drive().root / "shop.gbai/shop.gbot/zz.txt"  # written after main.css
    obstacle.mkdir()
    (obstacle / ".drive-tmp-crashed").write_bytes(b"")
    before = _bot_state(schema)
    response = _upload(client, v2)
    assert response.status_code == 503
    error = response.json()["error"]
    assert "the drive refused 'shop.gbot/zz.txt'" in error and "the previous files were put back" in error
    assert "except" not in error
    assert _bot_state(schema) == before
    with schema_context(schema):
        assert tenant_drive().read("shop.gbai/shop.gbot/theme") == b"old theme"


def test_a_deploy_keeps_at_most_the_package_limit_of_old_files_in_memory_or_writes_nothing(canary_tenants, settings):
    """The previous files were kept in memory to put them back with only a per-file limit: up to
    PACKAGE_MAX_ENTRIES x PACKAGE_MAX_FILE_BYTES (10 GB) for files put into the package folder by other means."""
    schema = canary_tenants.a.schema_name
    client = _admin_client(canary_tenants.a)
    assert _upload(client, _zip([("shop.gbai/shop.gbdialog/a.bas", b'TALK "a1"\n')])).status_code == 200
    with schema_context(schema):
        tenant_drive().write("shop.gbai/shop.gbkb/faq/a.md", b"a" * 600)  # uploaded beside the package
        tenant_drive().write("shop.gbai/shop.gbkb/faq/b.md", b"b" * 600)
    before = _bot_state(schema)
    settings.PACKAGE_MAX_TOTAL_BYTES = 1000
    v2 = _zip([("shop.gbai/shop.gbdialog/a.bas", b'TALK "a2"\n'), ("shop.gbai/shop.gbkb/faq/a.md", b"new a"),
               ("shop.gbai/shop.gbkb/faq/b.md", b"new b")])
    response = _upload(client, v2)
    assert response.status_code == 400
    assert response.json()["error"] == (
        "the files this deploy replaces hold 1210 bytes, more than the 1000 bytes (PACKAGE_MAX_TOTAL_BYTES) kept to "
        "put them back if a write fails; nothing was written: delete the old package's largest files first")
    assert _bot_state(schema) == before
    settings.PACKAGE_MAX_TOTAL_BYTES = 1210
    assert _upload(client, v2).status_code == 200


def test_an_old_file_in_the_way_that_cannot_be_kept_is_refused_not_deleted(canary_tenants, settings):
    """An old file where the package puts a folder was deleted even when it was too large to keep: a later failing
    write could not put it back (and a deploy that went through lost it without a word)."""
    schema = canary_tenants.a.schema_name
    client = _admin_client(canary_tenants.a)
    assert _upload(client, _zip([("shop.gbai/shop.gbdialog/a.bas", b'TALK "a1"\n')])).status_code == 200
    with schema_context(schema):
        tenant_drive().write("shop.gbai/shop.gbot/theme", b"t" * 300)
    before = _bot_state(schema)
    settings.PACKAGE_MAX_FILE_BYTES = 200
    v2 = _zip([("shop.gbai/shop.gbdialog/a.bas", b'TALK "a2"\n'), ("shop.gbai/shop.gbot/theme/main.css", b"x")])
    response = _upload(client, v2)
    assert response.status_code == 400
    assert response.json()["error"].startswith(
        "'shop.gbot/theme' (300 bytes) stands where the package puts a folder or file and is larger than a package "
        "file (200 bytes)")
    assert "nothing was written" in response.json()["error"]
    assert _bot_state(schema) == before


def _drive_failing(monkeypatch, method: str, failing_key: str, exc: Exception) -> None:
    from apps.drive.backends import LocalDrive

    original = getattr(LocalDrive, method)

    def failing(self, key, *args, **kwargs):
        if key == failing_key:
            raise exc
        return original(self, key, *args, **kwargs)

    monkeypatch.setattr(LocalDrive, method, failing)


@pytest.mark.parametrize("exc", [PermissionError(13, "Permission denied"),
                                 ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}},
                                             "GetObject")], ids=["permission", "s3-client-error"])
def test_a_previous_file_the_drive_cannot_read_is_a_clear_error_and_nothing_is_written(
        canary_tenants, monkeypatch, exc):
    """Reading the previous files to keep them raised anything but a missing or too large file out of the deploy:
    a 500."""
    schema = canary_tenants.a.schema_name
    client = _admin_client(canary_tenants.a)
    v1, v2 = _v1_v2()
    assert _upload(client, v1).status_code == 200
    before = _bot_state(schema)
    with monkeypatch.context() as patched:
        _drive_failing(patched, "read", "shop.gbai/shop.gbdialog/a.bas", exc)
        response = _upload(client, v2)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error.startswith(f"the drive could not read the previous 'shop.gbdialog/a.bas' to keep it "
                            f"({type(exc).__name__}: ")
    assert error.endswith("nothing was written, the previous package is unchanged")
    assert _bot_state(schema) == before


def test_an_old_file_the_drive_refuses_to_remove_is_a_clear_error_saying_the_new_package_is_in_place(
        canary_tenants, monkeypatch):
    """The old package's files were deleted after the writes, outside their error handling: a delete the drive
    refused was a 500 that did not say the new package was already in place."""
    schema = canary_tenants.a.schema_name
    client = _admin_client(canary_tenants.a)
    v1, v2 = _v1_v2()
    assert _upload(client, v1).status_code == 200
    with monkeypatch.context() as patched:
        _drive_failing(patched, "delete", "shop.gbai/shop.gbkb/faq/old.md", PermissionError(13, "Permission denied"))
        response = _upload(client, v2)
    assert response.status_code == 503
    assert response.json()["error"] == (
        "the new package is in place, but the drive refused to remove 1 file(s) of the previous one "
        "(shop.gbkb/faq/old.md; PermissionError: Permission denied); they stay in the drive and the "
        "next scan applies them with the new package: delete them, or deploy again")
    files = _bot_state(schema)[0]
    assert files["shop.gbai/shop.gbdialog/a.bas"] == b'TALK "a2"\n' and "shop.gbai/shop.gbdialog/c.bas" in files
    assert files["shop.gbai/shop.gbkb/faq/old.md"] == b"# old\n"


def test_a_package_file_where_the_bots_own_files_are_is_refused_before_anything_is_written(canary_tenants):
    """A package file `shop.gbdrive/notes` where scripts wrote `shop.gbdrive/notes/today.txt` (kept by every
    deploy) failed the write half way (IsADirectoryError, a 500) after old files had been replaced."""
    schema = canary_tenants.a.schema_name
    client = _admin_client(canary_tenants.a)
    v1, _ = _v1_v2()
    assert _upload(client, v1).status_code == 200
    with schema_context(schema):
        tenant_drive().write("shop.gbai/shop.gbdrive/notes/today.txt", b"written by a script")
    before = _bot_state(schema)
    colliding = _zip([("shop.gbai/shop.gbdialog/a.bas", b'TALK "new"\n'), ("shop.gbai/shop.gbdrive/notes", b"x")])
    response = _upload(client, colliding)
    assert response.status_code == 400
    assert "'shop.gbdrive/notes' cannot be stored beside the bot's own files" in response.json()["error"]
    assert _bot_state(schema) == before


def _hold_the_drive_lock(schema: str, seconds: float, held: threading.Event, seen: list) -> threading.Thread:
    """Another worker (its own database session) holding the tenant's drive lock for `seconds`; what the drive
    holds just before it lets go is appended to `seen`."""
    from django.db import connections

    from apps.core.locks import tenant_lock_try
    from apps.drive.services import SCAN_LOCK_NAME

    def hold() -> None:
        try:
            with schema_context(schema), tenant_lock_try(SCAN_LOCK_NAME) as acquired:
                assert acquired
                held.set()
                time.sleep(seconds)
                drive = tenant_drive(schema)
                seen.append({e.key: drive.read(e.key) for e in drive.list()})
        finally:
            held.set()
            connections.close_all()

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(timeout=30)
    return thread


def test_deploys_and_scans_of_a_tenant_take_turns(canary_tenants):
    """Deploys wrote and deleted without the drive lock: a scan (or another deploy of the bot) running meanwhile
    saw, and applied, a mix of two packages. A deploy now waits for the lock before it lists or writes."""
    from apps.bots.services import bot_deploy, package_limits
    from apps.drive.package import package_read_zip

    schema = canary_tenants.a.schema_name
    client = _admin_client(canary_tenants.a)
    v1, v2 = _v1_v2()
    assert _upload(client, v1).status_code == 200
    before = _bot_state(schema)[0]
    seen: list = []
    thread = _hold_the_drive_lock(schema, 1.0, threading.Event(), seen)
    with schema_context(schema):
        report = bot_deploy(package=package_read_zip(io.BytesIO(v2), limits=package_limits()))
    thread.join()
    assert seen == [before]  # nothing of v2 was written while the other held the lock
    assert report.errors == {}
    assert sorted(_bot_state(schema)[0]) == [f"shop.gbai/shop.gbdialog/{n}.bas" for n in "abc"] + [
        "shop.gbai/shop.gbot/config.csv"]


def test_a_deploy_that_cannot_get_the_drive_in_time_writes_nothing(canary_tenants, monkeypatch):
    from apps.drive import services as drive_services

    schema = canary_tenants.a.schema_name
    client = _admin_client(canary_tenants.a)
    v1, v2 = _v1_v2()
    assert _upload(client, v1).status_code == 200
    before = _bot_state(schema)
    monkeypatch.setattr(drive_services, "DEPLOY_SCAN_WAIT_S", 0.3)
    thread = _hold_the_drive_lock(schema, 1.5, threading.Event(), [])
    try:
        response = _upload(client, v2)
    finally:
        thread.join()
    assert response.status_code == 409
    assert "another deploy or scan of this drive kept running" in response.json()["error"]
    assert _bot_state(schema) == before
