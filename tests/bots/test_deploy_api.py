"""Deploying through the API and the command; hostile archives are refused and change nothing."""

import io
import zipfile

import pytest
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
        reader = api_key_create(name="reader", scopes=["bots:read"]).secret
        deployer = api_key_create(name="ci", scopes=["bots:deploy"]).secret
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
