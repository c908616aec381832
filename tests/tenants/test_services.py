"""Provisioning: tenant_create clones the template, validates its input and changes nothing on error."""

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django_tenants.utils import schema_context, schema_exists

from apps.bots.models import Bot
from apps.tenants.models import Domain, Tenant
from apps.tenants.services import TenantProvisioningError, tenant_create, tenant_delete

pytestmark = pytest.mark.django_db


def test_created_tenant_is_ready_reachable_and_empty(canary_tenants):
    tenant, password = tenant_create(name="Fresh", domain="Fresh.Test.Localhost.")
    assert tenant.ready and tenant.schema_name == "fresh"
    assert Domain.objects.get(tenant=tenant).domain == "fresh.test.localhost"
    with schema_context("fresh"):
        assert Bot.objects.count() == 0  # cloned structure, not the template's (or anyone's) rows
    client = Client(HTTP_HOST="fresh.test.localhost")
    assert client.post("/accounts/login/", {"username": "admin", "password": password}).status_code == 302
    assert client.get("/api/bots").json() == {"tenant": "Fresh", "bots": []}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "X", "domain": "tenant-a.test.localhost", "schema_name": "other"}, "already belongs"),
        ({"name": "X", "domain": "new1.test.localhost", "schema_name": "tenant_a"}, "already exists"),
        ({"name": "X", "domain": "new2.test.localhost", "schema_name": "public"}, "reserved"),
        ({"name": "X", "domain": "new3.test.localhost", "schema_name": "tenant_template"}, "reserved"),
        ({"name": "X", "domain": "new4.test.localhost", "schema_name": "pg_evil"}, "must start"),
        ({"name": "X", "domain": "new5.test.localhost", "schema_name": "a; DROP SCHEMA public"}, "must start"),
        ({"name": "X", "domain": "bad_host!.localhost"}, "not a valid host name"),
        ({"name": "X", "domain": "localhost"}, "platform's own host name"),
        ({"name": "", "domain": "new6.test.localhost"}, "tenant name"),
        # Schema names that are the first part of the platform's raw Redis keys (llm:quota:..., rl:...).
        ({"name": "X", "domain": "llm.test.localhost"}, "'llm' is reserved"),
        ({"name": "X", "domain": "new7.test.localhost", "schema_name": "rl"}, "'rl' is reserved"),
        ({"name": "X", "domain": "platform.test.localhost"}, "'platform' is reserved"),
    ],
)
def test_invalid_requests_are_refused_with_a_reason_and_change_nothing(canary_tenants, kwargs, message):
    tenants_before = set(Tenant.objects.values_list("schema_name", flat=True))
    domains_before = set(Domain.objects.values_list("domain", flat=True))
    with pytest.raises(TenantProvisioningError, match=message):
        tenant_create(**kwargs)
    assert set(Tenant.objects.values_list("schema_name", flat=True)) == tenants_before
    assert set(Domain.objects.values_list("domain", flat=True)) == domains_before


def test_failure_after_the_schema_was_cloned_rolls_everything_back(canary_tenants, monkeypatch):
    from django.contrib.auth.models import UserManager

    def explode(*args, **kwargs):
        raise RuntimeError("simulated failure while creating the admin")

    monkeypatch.setattr(UserManager, "create_superuser", explode)
    with pytest.raises(RuntimeError):
        tenant_create(name="Broken", domain="broken.test.localhost")
    assert not Tenant.objects.filter(schema_name="broken").exists()
    assert not Domain.objects.filter(domain="broken.test.localhost").exists()
    assert not schema_exists("broken")


def test_delete_drops_the_schema_and_refuses_special_schemas(canary_tenants, local_storage):
    from django.core.cache import cache
    from django_redis import get_redis_connection

    from apps.drive.storage import tenant_drive
    from apps.llm.quota import quota_key

    tenant_create(name="Doomed", domain="doomed.test.localhost")
    tenant_drive("doomed").write("shop.gbai/shop.gbdialog/start.bas", b'TALK "old tenant"\n')
    redis = get_redis_connection("default")
    with schema_context("doomed"):
        cache.set("drive:scan-queued", "1", timeout=600)
    redis.set(quota_key("doomed"), 99999)
    redis.set("llm:cache:doomed:1:model:e:abc", "an old answer")
    with schema_context(canary_tenants.b.schema_name):
        cache.set("drive:scan-queued", "kept", timeout=600)
    redis.set("llm:cache:doomedx:1:model:e:abc", "another tenant's")  # a schema name that only starts alike
    tenant_delete(schema_name="doomed")
    assert not schema_exists("doomed")
    # A new tenant that gets the same schema name starts with an empty drive and none of the old Redis state
    # (its token quota spent, cached answers, a queued-scan mark holding back its scans).
    assert list(tenant_drive("doomed").list()) == []
    assert redis.keys("doomed:*") == [] and redis.get(quota_key("doomed")) is None
    assert redis.get("llm:cache:doomed:1:model:e:abc") is None
    assert redis.get("llm:cache:doomedx:1:model:e:abc") == b"another tenant's"
    with schema_context(canary_tenants.b.schema_name):
        assert cache.get("drive:scan-queued") == "kept"
    redis.delete("llm:cache:doomedx:1:model:e:abc")
    assert Client(HTTP_HOST="doomed.test.localhost").get("/api/bots").status_code == 404
    for special in ("public", "tenant_template"):
        with pytest.raises(TenantProvisioningError):
            tenant_delete(schema_name=special)


def test_deleting_a_tenant_removes_its_outside_vectors_even_those_written_during_the_purge(
        canary_tenants, local_storage, qdrant_platform, monkeypatch):
    """An indexer holding a document row committed its last Qdrant points after the purge, while the drop waited
    for its lock: a later tenant with the same schema name found them in its search results."""
    from apps.kb.vectorstores import ChunkRecord, QdrantStore, vector_store_for_settings

    store = vector_store_for_settings()  # the platform's client of our Qdrant server (QDRANT_URL)
    assert isinstance(store, QdrantStore)
    tenant_create(name="Indexed", domain="indexed.test.localhost")
    with schema_context("indexed"):
        Bot.objects.create(name="shop")

    def index() -> None:
        record = ChunkRecord(document_id=1, document_path="shop.gbai/shop.gbkb/faq/a.md", kb="faq", index=0,
                             text="old tenant's passage", start_char=0, end_char=20, page=None, heading="",
                             vector=[1.0, 0.0, 0.0, 0.0])
        store.replace_document(tenant="indexed", bot="shop", bot_id=1, kb_id=1, document_id=1, records=[record],
                               model="test-model")

    index()
    drop = Tenant.delete

    def drop_after_a_late_write(self, *args, **kwargs):
        index()  # the indexer's commit lands between the purge and the drop
        return drop(self, *args, **kwargs)

    monkeypatch.setattr(Tenant, "delete", drop_after_a_late_write)
    tenant_delete(schema_name="indexed")
    assert store.count(tenant="indexed", bot="shop") == 0
    # Both writes reached Qdrant, and the purge deleted the bot's points there before and after the drop.
    assert [r.status for r in qdrant_platform.requests if r.method == "PUT" and r.path.endswith("/points")] == [200] * 2
    bot_purges = [r.status for r in qdrant_platform.requests if r.path.endswith("/points/delete")
                  and {c["key"] for c in r.body["filter"]["must"]} == {"tenant", "bot"}]
    assert bot_purges == [200, 200]


# The deleted tenant's secrets: its own, its admins' (OIDC client secret) and its bots'.
ACME_SECRETS = {
    "gbo/tenants/acme": {"llm-api-key": "sk-acme-tenant-level"},
    "gbo/tenants/acme/llm": {"api_key": "sk-acme-llm"},
    "gbo/tenants/acme/smtp": {"password": "acme-smtp-password"},
    "gbo/tenants/acme/admin": {"client_secret": "acme-oidc-client-secret"},
    "gbo/tenants/acme/admin/oidc": {"client_secret": "acme-oidc-client-secret-2"},
    "gbo/orgs/acme/bots/helper": {"llm_key": "sk-acme-helper-bot"},
}
# Everyone else's: a tenant whose schema name starts with "acme", another tenant's paths starting alike, and the
# platform's.
OTHER_SECRETS = {
    "gbo/tenants/acme2": {"llm-api-key": "sk-acme2-tenant-level"},
    "gbo/tenants/acme2/llm": {"api_key": "sk-acme2-llm"},
    "gbo/tenants/acme2/admin": {"client_secret": "acme2-oidc-client-secret"},
    "gbo/orgs/acme2/bots/helper": {"llm_key": "sk-acme2-helper-bot"},
    "gbo/tenants/acme_eu/llm": {"api_key": "sk-acme-eu-llm"},
    "gbo": {"llm-api-key": "sk-platform-global"},
    "gbo/llm": {"api_key": "sk-platform-llm"},
}


def _vault_seed(vault) -> None:
    import hvac

    for path, data in {**ACME_SECRETS, **OTHER_SECRETS}.items():
        vault.put_secret(path, data)
    # A secret whose latest version was deleted the soft way: Vault keeps it (undeletable) until its metadata goes.
    client = hvac.Client(url=vault.url, token=vault.create_token(0))
    client.secrets.kv.v2.create_or_update_secret(path="gbo/tenants/acme/retired", secret={"password": "old"},
                                                 mount_point=vault.mount)
    client.secrets.kv.v2.delete_latest_version_of_secret(path="gbo/tenants/acme/retired", mount_point=vault.mount)
    assert vault.stored("gbo/tenants/acme/retired")


def test_deleting_a_tenant_deletes_all_its_vault_secrets_and_no_other_tenants(canary_tenants, local_storage,
                                                                                vault):
    """Left in Vault, a deleted tenant's secrets became those of the next tenant given its schema name: its LLM
    keys, SMTP password and OIDC client secret. Deletion removes every version of each, under the tenant's own
    paths only (`acme/`, never `acme2` beside it)."""
    from apps.core.secrets import secret_resolve, vault_secrets

    tenant_create(name="Acme", domain="acme.test.localhost")
    tenant_create(name="Acme Two", domain="acme2.test.localhost")
    _vault_seed(vault)
    assert vault_secrets().read("gbo/tenants/acme/llm") == {"api_key": "sk-acme-llm"}  # now in this process's cache
    seeded = len(vault.requests)

    tenant_delete(schema_name="acme")

    assert not schema_exists("acme")
    assert [path for path in [*ACME_SECRETS, "gbo/tenants/acme/retired"] if vault.stored(path)] == []
    assert {path: vault.secrets_data.get(path) for path in OTHER_SECRETS} == OTHER_SECRETS
    # Metadata deletes (every version), and only of acme's paths (its bots' root is deleted whether there or not).
    assert {path for method, path in vault.requests[seeded:] if method == "DELETE"} == {
        vault.metadata_path(path) for path in [*ACME_SECRETS, "gbo/tenants/acme/retired", "gbo/orgs/acme"]}
    # The process that deleted them no longer serves them from its cache; the next "acme" gets the platform's key.
    assert vault_secrets().read("gbo/tenants/acme/llm") is None
    tenant_create(name="Acme Again", domain="acme.test.localhost")
    assert secret_resolve("llm-api-key", tenant="acme", org=None, bot=None) == "sk-platform-global"
    assert secret_resolve("llm-api-key", tenant="acme2", org=None, bot=None) == "sk-acme2-tenant-level"


@pytest.mark.parametrize("failure", ["sealed", "unreachable", "policy without delete"])
def test_a_tenant_whose_vault_secrets_cannot_be_deleted_is_kept_suspended_and_deleting_again_finishes(
        canary_tenants, local_storage, vault, failure):
    """Dropping the schema anyway would leave the secrets behind with nothing naming them any more: the deletion
    stops before the drop (as a failed drive purge does) and says how to finish."""
    from apps.drive.storage import tenant_drive
    from apps.tenants.services import TenantDeleteIncomplete

    tenant_create(name="Acme", domain="acme.test.localhost")
    tenant_drive("acme").write("shop.gbai/shop.gbdialog/start.bas", b'TALK "still here"\n')
    _vault_seed(vault)
    port = int(vault.url.rsplit(":", 1)[1])
    if failure == "sealed":
        vault.outage_status = 503
    elif failure == "unreachable":
        vault.stop()
    else:
        vault.deny_paths = {"gbo/tenants/acme"}  # the metadata of the tenant's folder: list refused (403)

    with pytest.raises(TenantDeleteIncomplete, match=r"'acme' was not deleted: secrets under gbo/tenants/acme "
                                                     r"could not be deleted.*delete it again"):
        tenant_delete(schema_name="acme")

    assert schema_exists("acme")
    assert Tenant.objects.get(schema_name="acme").ready is False  # suspended: its hosts answer 503
    assert [entry.key for entry in tenant_drive("acme").list()] == ["shop.gbai/shop.gbdialog/start.bas"]
    assert [path for path in ACME_SECRETS if not vault.stored(path)] == []

    vault.outage_status, vault.deny_paths = None, set()
    if failure == "unreachable":
        vault.start(port)
    tenant_delete(schema_name="acme")
    assert not schema_exists("acme")
    assert [path for path in [*ACME_SECRETS, "gbo/tenants/acme/retired"] if vault.stored(path)] == []
    assert {path: vault.secrets_data.get(path) for path in OTHER_SECRETS} == OTHER_SECRETS


def test_management_command_creates_and_reports_errors(canary_tenants, capsys):
    call_command("tenant_create", "Cmd Corp", "cmd.test.localhost", "--admin-password", "s3cret-pass")
    assert "created tenant Cmd Corp" in capsys.readouterr().out
    with pytest.raises(CommandError, match="already belongs"):
        call_command("tenant_create", "Again", "cmd.test.localhost", "--schema", "cmd2")


@pytest.mark.parametrize("schema", ["llm", "rl"])
def test_deleting_a_tenant_named_like_a_redis_prefix_purges_only_its_own_keys(canary_tenants, schema):
    # Its cache keys were purged with the pattern `<schema>:*`: for a tenant `llm` that is every tenant's token
    # quota and cached answers (llm:quota:..., llm:cache:...), for `rl` every tenant's rate limits.
    from django.core.cache import cache
    from django_redis import get_redis_connection

    from apps.llm.quota import quota_key

    Tenant(schema_name=schema, name="Made before the name was reserved", ready=True).save(verbosity=0)
    other = canary_tenants.b.schema_name
    redis = get_redis_connection("default")
    kept = {quota_key(other): b"1234", f"llm:cache:{other}:1:model:e:abc": b"an answer",
            f"rl:{other}:api:abc": b"17", "rl:platform:ip:abc": b"42", "llm:breaker:endpoint": b"open"}
    gone = [quota_key(schema), f"llm:cache:{schema}:1:model:e:abc", f"rl:{schema}:api:abc"]
    for key in [*kept, *gone]:
        redis.set(key, kept.get(key, b"x"))
    with schema_context(schema):
        cache.set("drive:scan-queued", "1", timeout=600)
    try:
        tenant_delete(schema_name=schema)
        assert {key: redis.get(key) for key in kept} == kept
        assert [key for key in gone if redis.exists(key)] == []
        with schema_context(schema):
            assert cache.get("drive:scan-queued") is None
    finally:
        redis.delete(*kept, *gone)
