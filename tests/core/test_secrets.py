"""Vault secrets against our own Vault-API server on loopback (tests/support/vault_fake.py), through hvac.

None of these tests has database access (no `django_db` mark): pytest-django refuses any query, so every
test here also shows that reading, resolving and caching secrets never touches the database.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import hvac
import hvac.exceptions
import pytest

from apps.core import secrets as secrets_module
from apps.core.secrets import (
    DISABLED,
    HEALTHY,
    UNHEALTHY,
    SecretNotFound,
    SecretUnavailable,
    VaultSecrets,
    config_secret_reference_parse,
    config_secret_value,
    secret_env_name,
    secret_get,
    secret_resolution_paths,
    secret_resolve,
    secret_scope_prefixes,
    vault_health,
)
from tests.support.vault_fake import APPROLE_LOGIN, LOOKUP_SELF, RENEW_SELF, FakeVault

ROLE_ID, SECRET_ID = "role-gbo-web", "secret-id-7c1e"
BOT_SECRET = "bot-level-sk-4a81f0"
TENANT_SECRET = "tenant-level-sk-93be2d"
GLOBAL_SECRET = "global-level-sk-5e07c9"
SCOPE = {"tenant": "acme", "org": "sales", "bot": "helper"}


@pytest.fixture(autouse=True)
def _fresh_client():
    secrets_module.secrets_reset()
    yield
    secrets_module.secrets_reset()


@pytest.fixture
def vault():
    with FakeVault() as fake:
        fake.add_approle(ROLE_ID, SECRET_ID)
        yield fake


@pytest.fixture
def vault_settings(settings, vault):
    """Settings pointing at the fake with a non-expiring token; production mode (DEBUG off)."""
    settings.VAULT_ADDR = vault.url
    settings.VAULT_TOKEN = vault.create_token(0)
    settings.VAULT_REQUIRED = False
    settings.DEBUG = False
    settings.VAULT_TIMEOUT_S = 1.0
    return settings


def _seed_levels(vault: FakeVault) -> None:
    vault.put_secret("gbo/orgs/sales/bots/helper", {"llm-api-key": BOT_SECRET})
    vault.put_secret("gbo/tenants/acme", {"llm-api-key": TENANT_SECRET, "smtp-password": TENANT_SECRET})
    vault.put_secret("gbo", {"llm-api-key": GLOBAL_SECRET, "smtp-password": GLOBAL_SECRET,
                             "meet-api-key": GLOBAL_SECRET})


# --- resolution order ----------------------------------------------------------------------------------


def test_resolution_paths_are_bot_then_tenant_then_global():
    assert secret_resolution_paths(**SCOPE) == ["gbo/orgs/sales/bots/helper", "gbo/tenants/acme", "gbo"]
    assert secret_resolution_paths(tenant="acme", org=None, bot="helper") == ["gbo/tenants/acme", "gbo"]
    assert secret_resolution_paths(tenant=None, org=None, bot=None) == ["gbo"]


def test_resolve_takes_the_most_specific_level_that_has_the_key(vault, vault_settings):
    _seed_levels(vault)
    assert secret_resolve("llm-api-key", **SCOPE) == BOT_SECRET
    assert secret_resolve("smtp-password", **SCOPE) == TENANT_SECRET
    assert secret_resolve("meet-api-key", **SCOPE) == GLOBAL_SECRET
    assert secret_resolve("llm-api-key", tenant="acme", org=None, bot=None) == TENANT_SECRET
    assert secret_resolve("llm-api-key", tenant="other", org="sales", bot="other") == GLOBAL_SECRET
    with pytest.raises(SecretNotFound, match="nowhere-key"):
        secret_resolve("nowhere-key", **SCOPE)


def test_resolve_reads_each_level_once_within_the_cache_ttl(vault, vault_settings):
    _seed_levels(vault)
    for _ in range(5):
        secret_resolve("meet-api-key", **SCOPE)
    for path in secret_resolution_paths(**SCOPE):
        assert vault.count(vault.kv_path(path)) == 1


def test_resolve_does_not_fall_through_to_a_less_specific_secret_when_a_level_is_unreadable(vault, vault_settings):
    _seed_levels(vault)
    vault.deny_paths.add("gbo/orgs/sales/bots/helper")
    with pytest.raises(SecretUnavailable, match="gbo/orgs/sales/bots/helper#llm-api-key"):
        secret_resolve("llm-api-key", **SCOPE)


def test_environment_is_the_last_level_in_development_only(vault, vault_settings, monkeypatch):
    assert secret_env_name("llm-api-key") == "GBO_SECRET_LLM_API_KEY"
    monkeypatch.setenv("GBO_SECRET_ONLY_IN_ENV", "from-env-1")
    vault_settings.DEBUG = True
    assert secret_resolve("only-in-env", **SCOPE) == "from-env-1"
    vault_settings.DEBUG = False
    with pytest.raises(SecretNotFound):
        secret_resolve("only-in-env", **SCOPE)
    vault_settings.DEBUG, vault_settings.VAULT_REQUIRED = True, True
    with pytest.raises(SecretNotFound):
        secret_resolve("only-in-env", **SCOPE)


def test_without_vault_the_environment_serves_development_and_nothing_serves_production(settings, monkeypatch):
    settings.VAULT_ADDR, settings.VAULT_REQUIRED = "", False
    monkeypatch.setenv("GBO_SECRET_LLM_API_KEY", "dev-key")
    settings.DEBUG = True
    assert secret_resolve("llm-api-key", **SCOPE) == "dev-key"
    settings.DEBUG = False
    with pytest.raises(SecretUnavailable, match="not configured"):
        secret_resolve("llm-api-key", **SCOPE)
    with pytest.raises(SecretUnavailable, match="not configured"):
        secret_get("gbo/llm", "api_key")
    settings.DEBUG, settings.VAULT_REQUIRED = True, True
    with pytest.raises(SecretUnavailable, match="VAULT_REQUIRED"):
        secret_resolve("llm-api-key", **SCOPE)


@pytest.mark.parametrize("scope", [
    {"tenant": "acme", "org": "sales", "bot": "x/../../../tenants/other"},
    {"tenant": "../other", "org": None, "bot": None},
    {"tenant": "acme", "org": "..", "bot": "helper"},
])
def test_resolve_refuses_names_that_would_leave_their_path(vault_settings, scope):
    with pytest.raises(ValueError, match="invalid"):
        secret_resolve("llm-api-key", **scope)


# --- config.csv references -----------------------------------------------------------------------------


def test_config_reference_resolves_both_spellings_and_passes_plain_values(vault, vault_settings):
    vault.put_secret("gbo/meet", {"api_key": GLOBAL_SECRET})
    assert config_secret_value("vault:gbo/meet#api_key") == GLOBAL_SECRET
    assert config_secret_value("  VAULT:gbo/meet#api_key ") == GLOBAL_SECRET
    assert config_secret_value("vault:gbo/meet/api_key") == GLOBAL_SECRET  # the seed's `vault:<path>/<field>`
    assert config_secret_value("wss://localhost:7880") == "wss://localhost:7880"
    assert config_secret_value("") == ""
    with pytest.raises(SecretNotFound, match="gbo/meet#api_secret"):
        config_secret_value("vault:gbo/meet#api_secret")


@pytest.mark.parametrize("reference", [
    "vault:", "vault:#key", "vault:gbo/meet#", "vault:gbo#a#b", "vault:gbo/../jwt#secret", "vault:/gbo#key",
    "vault:gbo//meet#key", "vault:gbo meet#key", "vault:apikey",
])
def test_malformed_config_references_are_a_clear_value_error(reference):
    with pytest.raises(ValueError, match="vault"):
        config_secret_reference_parse(reference)


def test_config_reference_outside_the_bots_scope_is_refused(vault, vault_settings):
    vault.put_secret("gbo/tenants/other/config", {"api_key": "other-tenant-secret"})
    vault.put_secret("gbo/tenants/acme/config", {"api_key": TENANT_SECRET})
    scope = secret_scope_prefixes(**SCOPE)
    assert config_secret_value("vault:gbo/tenants/acme/config#api_key", allowed_prefixes=scope) == TENANT_SECRET
    with pytest.raises(ValueError, match="outside"):
        config_secret_value("vault:gbo/tenants/other/config#api_key", allowed_prefixes=scope)
    with pytest.raises(ValueError, match="outside"):
        config_secret_value("vault:gbo/tenants/acme-evil#api_key", allowed_prefixes=scope)
    assert vault.count(vault.kv_path("gbo/tenants/other/config")) == 0


# --- token renewal and re-login ------------------------------------------------------------------------


def test_the_fake_expires_a_token_after_its_ttl(vault):
    token = vault.create_token(1)
    client = hvac.Client(url=vault.url, token=token, timeout=2)
    client.auth.token.lookup_self()
    time.sleep(1.2)
    with pytest.raises(hvac.exceptions.Forbidden):
        client.auth.token.lookup_self()


def test_a_5_second_token_keeps_working_for_15_seconds_of_calls(vault, vault_settings):
    """The acceptance test: renewal at ~2/3 of a 5 s TTL, no cache, calls every 0.25 s for 15 s."""
    vault.put_secret("gbo/llm", {"api_key": GLOBAL_SECRET})
    vault_settings.VAULT_TOKEN = vault.create_token(5, renewable=True)
    vault_settings.VAULT_CACHE_TTL_S = 0
    started = time.monotonic()
    calls = 0
    while time.monotonic() - started < 15:
        assert secret_get("gbo/llm", "api_key") == GLOBAL_SECRET
        calls += 1
        time.sleep(0.25)
    assert calls >= 50
    assert vault.count(RENEW_SELF) >= 3  # 15 s / (5 s * 2/3) renewals, give or take the first lookup
    assert vault.count(APPROLE_LOGIN) == 0
    assert vault.count(LOOKUP_SELF) == 1


def test_approle_logs_in_again_before_a_non_renewable_token_expires(vault, settings):
    vault.put_secret("gbo/llm", {"api_key": GLOBAL_SECRET})
    vault.approle_ttl_s, vault.approle_renewable = 2, False
    client = VaultSecrets(addr=vault.url, role_id=ROLE_ID, secret_id=SECRET_ID, cache_ttl_s=0, timeout_s=1)
    started = time.monotonic()
    while time.monotonic() - started < 5:
        assert client.get("gbo/llm", "api_key") == GLOBAL_SECRET
        time.sleep(0.2)
    assert 3 <= vault.count(APPROLE_LOGIN) <= 5  # one per ~2/3 of 2 s, never one per call
    assert vault.count(RENEW_SELF) == 0


def test_approle_logs_in_again_when_renewal_hits_the_max_ttl(vault):
    vault.put_secret("gbo/llm", {"api_key": GLOBAL_SECRET})
    vault.approle_ttl_s, vault.approle_max_ttl_s = 3, 4
    client = VaultSecrets(addr=vault.url, role_id=ROLE_ID, secret_id=SECRET_ID, cache_ttl_s=0, timeout_s=1)
    started = time.monotonic()
    while time.monotonic() - started < 6:
        assert client.get("gbo/llm", "api_key") == GLOBAL_SECRET
        time.sleep(0.2)
    assert 2 <= vault.count(APPROLE_LOGIN) <= 4
    assert 1 <= vault.count(RENEW_SELF) <= 3  # not renewed on every call once at the max TTL


def test_a_403_causes_exactly_one_relogin_and_the_call_succeeds(vault):
    vault.put_secret("gbo/llm", {"api_key": GLOBAL_SECRET})
    client = VaultSecrets(addr=vault.url, token=vault.create_token(0), role_id=ROLE_ID, secret_id=SECRET_ID,
                          cache_ttl_s=0)
    assert client.get("gbo/llm", "api_key") == GLOBAL_SECRET
    vault.revoke_all_tokens()  # e.g. an operator revoked it, or it outlived its max TTL while idle
    assert client.get("gbo/llm", "api_key") == GLOBAL_SECRET
    assert vault.count(APPROLE_LOGIN) == 1
    assert vault.count(vault.kv_path("gbo/llm")) == 3  # ok, 403, ok after the re-login


def test_threads_hitting_a_403_together_share_one_relogin(vault):
    vault.put_secret("gbo/llm", {"api_key": GLOBAL_SECRET})
    client = VaultSecrets(addr=vault.url, token=vault.create_token(0), role_id=ROLE_ID, secret_id=SECRET_ID,
                          cache_ttl_s=0)
    assert client.get("gbo/llm", "api_key") == GLOBAL_SECRET
    vault.revoke_all_tokens()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: client.get("gbo/llm", "api_key"), range(32)))
    assert results == [GLOBAL_SECRET] * 32
    assert vault.count(APPROLE_LOGIN) == 1


def test_a_persistent_403_logs_in_once_then_fails_without_a_loop(vault):
    vault.put_secret("gbo/jwt", {"secret": "jwt-signing-key"})
    vault.deny_paths.add("gbo/jwt")
    client = VaultSecrets(addr=vault.url, token=vault.create_token(0), role_id=ROLE_ID, secret_id=SECRET_ID,
                          cache_ttl_s=0)
    with pytest.raises(SecretUnavailable, match="gbo/jwt.*permission denied"):
        client.get("gbo/jwt", "secret")
    assert vault.count(APPROLE_LOGIN) == 1
    assert vault.count(vault.kv_path("gbo/jwt")) == 2
    # The token is fresh from that login: a 403 now is the policy, and logging in again would not help.
    for _ in range(5):
        with pytest.raises(SecretUnavailable, match="permission denied"):
            client.get("gbo/jwt", "secret")
    assert vault.count(APPROLE_LOGIN) == 1
    assert vault.count(vault.kv_path("gbo/jwt")) == 7


def test_a_403_with_a_static_token_and_no_approle_fails_without_login(vault, vault_settings):
    vault.put_secret("gbo/llm", {"api_key": GLOBAL_SECRET})
    vault_settings.VAULT_TOKEN = "hvs.not-a-token"
    with pytest.raises(SecretUnavailable, match="permission denied"):
        secret_get("gbo/llm", "api_key")
    assert vault.count(APPROLE_LOGIN) == 0


# --- fail closed ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("debug", [False, True])
def test_required_vault_sealed_fails_closed_and_never_reads_the_environment(vault, vault_settings, monkeypatch,
                                                                            debug):
    monkeypatch.setenv("GBO_SECRET_LLM_API_KEY", "env-must-not-be-used")
    vault_settings.VAULT_REQUIRED, vault_settings.DEBUG = True, debug
    vault.outage_status = 503
    with pytest.raises(SecretUnavailable, match="VaultDown"):
        secret_resolve("llm-api-key", **SCOPE)
    with pytest.raises(SecretUnavailable):
        secret_get("gbo/llm", "api_key")


def test_required_vault_refusing_connections_fails_closed(vault, vault_settings, monkeypatch):
    monkeypatch.setenv("GBO_SECRET_LLM_API_KEY", "env-must-not-be-used")
    vault_settings.VAULT_REQUIRED, vault_settings.DEBUG = True, True
    vault.stop()
    with pytest.raises(SecretUnavailable, match="unreachable"):
        secret_resolve("llm-api-key", **SCOPE)


def test_required_vault_that_hangs_fails_closed_within_the_timeout(vault, vault_settings):
    vault_settings.VAULT_REQUIRED = True
    vault_settings.VAULT_TIMEOUT_S = 0.5
    vault.hang_s = 10
    started = time.monotonic()
    with pytest.raises(SecretUnavailable, match=r"within 0.5 s"):
        secret_get("gbo/llm", "api_key")
    assert time.monotonic() - started < 2.5  # lookup-self + nothing else: one timeout, not hvac's 30 s


def test_vault_down_in_development_falls_back_to_the_environment_with_a_warning(vault, vault_settings, monkeypatch,
                                                                                 caplog):
    monkeypatch.setenv("GBO_SECRET_LLM_API_KEY", "dev-env-key")
    vault_settings.DEBUG = True
    vault.outage_status = 503
    with caplog.at_level(logging.WARNING, logger="apps.core.secrets"):
        assert secret_resolve("llm-api-key", **SCOPE) == "dev-env-key"
    assert "GBO_SECRET_LLM_API_KEY" in caplog.text


# --- cache ---------------------------------------------------------------------------------------------


def test_cache_serves_within_its_ttl_then_rereads(vault):
    vault.put_secret("gbo/llm", {"api_key": "first"})
    client = VaultSecrets(addr=vault.url, token=vault.create_token(0), cache_ttl_s=0.5)
    assert client.get("gbo/llm", "api_key") == "first"
    vault.put_secret("gbo/llm", {"api_key": "rotated"})
    assert client.get("gbo/llm", "api_key") == "first"
    assert vault.count(vault.kv_path("gbo/llm")) == 1
    time.sleep(0.6)
    assert client.get("gbo/llm", "api_key") == "rotated"
    assert vault.count(vault.kv_path("gbo/llm")) == 2


def test_cache_rides_out_an_outage_shorter_than_its_ttl_then_fails_closed(vault):
    vault.put_secret("gbo/llm", {"api_key": GLOBAL_SECRET})
    client = VaultSecrets(addr=vault.url, token=vault.create_token(0), cache_ttl_s=0.5, timeout_s=0.5)
    assert client.get("gbo/llm", "api_key") == GLOBAL_SECRET
    vault.outage_status = 503
    assert client.get("gbo/llm", "api_key") == GLOBAL_SECRET
    time.sleep(0.6)
    with pytest.raises(SecretUnavailable):
        client.get("gbo/llm", "api_key")


def test_a_standby_behind_412_is_asked_again_a_bounded_number_of_times(vault):
    """Test plan F7's 412: a performance standby that has not caught up answers 412 and clients retry; a Vault
    that keeps answering it fails closed after VAULT_TRANSIENT_ATTEMPTS, without a loop."""
    from apps.core.secrets import VAULT_TRANSIENT_ATTEMPTS

    vault.put_secret("gbo/llm", {"api_key": GLOBAL_SECRET})
    client = VaultSecrets(addr=vault.url, token=vault.create_token(0), cache_ttl_s=0)
    assert client.get("gbo/llm", "api_key") == GLOBAL_SECRET  # the token is looked up once, here
    before = len(vault.requests)
    vault.fail_next = [412, 429]
    assert client.get("gbo/llm", "api_key") == GLOBAL_SECRET
    assert len(vault.requests) - before == 3 and vault.fail_next == []
    before = len(vault.requests)
    vault.fail_next = [412] * (VAULT_TRANSIENT_ATTEMPTS + 2)
    with pytest.raises(SecretUnavailable):
        client.get("gbo/llm", "api_key")
    assert len(vault.requests) - before == VAULT_TRANSIENT_ATTEMPTS  # then it fails closed: no loop
    vault.fail_next = []
    assert client.get("gbo/llm", "api_key") == GLOBAL_SECRET


def test_cache_remembers_missing_paths_too(vault):
    client = VaultSecrets(addr=vault.url, token=vault.create_token(0), cache_ttl_s=30)
    for _ in range(3):
        assert client.read("gbo/orgs/sales/bots/helper") is None
    assert vault.count(vault.kv_path("gbo/orgs/sales/bots/helper")) == 1


def test_the_write_endpoint_of_the_fake_is_read_back_through_the_client(vault):
    token = vault.create_token(0)
    hvac.Client(url=vault.url, token=token, timeout=2).secrets.kv.v2.create_or_update_secret(
        path="gbo/email", secret={"password": "smtp-pass-1"}, mount_point="secret")
    client = VaultSecrets(addr=vault.url, token=token)
    assert client.get("gbo/email", "password") == "smtp-pass-1"


# --- deleting a tenant's secrets ------------------------------------------------------------------------


def test_the_fake_lists_a_folder_for_LIST_and_for_GET_with_list_true_alike(vault):
    import requests

    vault.put_secret("gbo/tenants/acme", {"k": "v"})
    vault.put_secret("gbo/tenants/acme/llm", {"k": "v"})
    vault.put_secret("gbo/tenants/acme/admin/oidc", {"k": "v"})
    vault.put_secret("gbo/tenants/acme2/llm", {"k": "v"})
    token = vault.create_token(0)
    listed = hvac.Client(url=vault.url, token=token).secrets.kv.v2.list_secrets(path="gbo/tenants/acme/")
    assert listed["data"]["keys"] == ["admin/", "llm"]
    answer = requests.get(vault.url + vault.metadata_path("gbo/tenants") + "/?list=true",
                          headers={"X-Vault-Token": token}, timeout=2)
    assert answer.json()["data"]["keys"] == ["acme", "acme/", "acme2/"]
    with pytest.raises(hvac.exceptions.InvalidPath):  # an empty folder is a 404, as in Vault
        hvac.Client(url=vault.url, token=token).secrets.kv.v2.list_secrets(path="gbo/tenants/acme/llm/")


def test_tenant_secrets_delete_removes_the_tenants_subtrees_and_forgets_them_in_the_cache(vault, vault_settings):
    from apps.core.secrets import tenant_secrets_delete, vault_secrets

    _seed_levels(vault)  # gbo/tenants/acme, gbo/orgs/sales/..., gbo
    vault.put_secret("gbo/tenants/acme/admin", {"client_secret": "s"})
    vault.put_secret("gbo/orgs/acme/bots/helper", {"llm_key": "k"})
    vault.put_secret("gbo/tenants/acme2", {"llm-api-key": "other"})
    assert vault_secrets().read("gbo/tenants/acme/admin") == {"client_secret": "s"}
    assert sorted(tenant_secrets_delete("acme")) == ["gbo/orgs/acme", "gbo/orgs/acme/bots/helper",
                                                     "gbo/tenants/acme", "gbo/tenants/acme/admin"]
    assert sorted(vault.secrets_data) == ["gbo", "gbo/orgs/sales/bots/helper", "gbo/tenants/acme2"]
    assert vault_secrets().read("gbo/tenants/acme/admin") is None
    assert tenant_secrets_delete("acme") == ["gbo/tenants/acme", "gbo/orgs/acme"]  # again: nothing left, no error
    with pytest.raises(ValueError):
        tenant_secrets_delete("../gbo")
    vault_settings.VAULT_ADDR = ""
    assert tenant_secrets_delete("acme") == []  # no Vault: no secrets of the tenant's anywhere


def test_a_tree_larger_than_the_limit_is_refused_before_anything_is_deleted(vault, monkeypatch):
    from apps.core.secrets import SecretDeleteFailed

    monkeypatch.setattr(secrets_module, "VAULT_TREE_MAX_SECRETS", 3)
    for name in ("a", "b", "c", "d/e"):
        vault.put_secret(f"gbo/tenants/big/{name}", {"k": "v"})
    client = VaultSecrets(addr=vault.url, token=vault.create_token(0))
    with pytest.raises(SecretDeleteFailed, match="more than 3 secrets; nothing was deleted"):
        client.tree_delete("gbo/tenants/big")
    assert len([path for path in vault.secrets_data if path.startswith("gbo/tenants/big/")]) == 4
    assert [method for method, _path in vault.requests if method == "DELETE"] == []


# --- no secret in logs ---------------------------------------------------------------------------------


def test_no_secret_value_reaches_the_logs_or_the_error_messages(vault, vault_settings, caplog, monkeypatch):
    monkeypatch.setenv("GBO_SECRET_ENV_ONLY", "env-secret-0d9e")
    _seed_levels(vault)
    vault.put_secret("gbo/meet", {"api_key": "meet-secret-71aa"})
    vault.approle_ttl_s = 2
    client_settings = {"VAULT_TOKEN": vault.create_token(2), "VAULT_ROLE_ID": ROLE_ID, "VAULT_SECRET_ID": SECRET_ID,
                       "VAULT_CACHE_TTL_S": 0}
    for name, value in client_settings.items():
        setattr(vault_settings, name, value)
    errors: list[str] = []
    with caplog.at_level(logging.DEBUG):
        for name in ("llm-api-key", "smtp-password", "meet-api-key"):
            secret_resolve(name, **SCOPE)
        config_secret_value("vault:gbo/meet#api_key")
        time.sleep(1.5)  # renewal due
        secret_resolve("llm-api-key", **SCOPE)
        vault.revoke_all_tokens()  # 403 -> re-login
        time.sleep(0.1)
        secret_resolve("llm-api-key", **SCOPE)
        vault_settings.DEBUG = True
        secret_resolve("env-only", **SCOPE)
        vault.outage_status = 503
        for call in (lambda: secret_resolve("llm-api-key", **SCOPE), lambda: secret_get("gbo/meet", "api_key")):
            try:
                call()
            except SecretUnavailable as exc:
                errors.append(str(exc))
    assert caplog.records, "the scenario should have logged something"
    assert "gbo/orgs/sales/bots/helper" in caplog.text or "gbo/meet" in caplog.text
    everything = caplog.text + "\n".join(errors) + "".join(str(r.args) for r in caplog.records)
    assert vault.count(APPROLE_LOGIN) >= 1 and len(vault.issued_tokens) >= 2
    for value in (BOT_SECRET, TENANT_SECRET, GLOBAL_SECRET, "meet-secret-71aa", "env-secret-0d9e", SECRET_ID,
                  *vault.issued_tokens):
        assert value not in everything


# --- health --------------------------------------------------------------------------------------------


def test_health_reports_up_down_and_disabled(vault, vault_settings):
    status, latency_ms, _detail = vault_health()
    assert status == HEALTHY and latency_ms is not None
    vault.outage_status = 503
    status, _latency, detail = vault_health()
    assert status == UNHEALTHY and "VaultDown" in detail
    vault.outage_status = None
    vault.stop()
    assert vault_health()[0] == UNHEALTHY
    vault_settings.VAULT_ADDR = ""
    assert vault_health() == (DISABLED, None, "")
    vault_settings.VAULT_REQUIRED = True
    assert vault_health()[0] == UNHEALTHY


@pytest.mark.django_db
def test_a_vault_read_in_a_tenant_is_audited_with_its_path_and_never_its_value(vault, vault_settings, canary_tenants):
    from django_tenants.utils import schema_context

    from apps.compliance.models import AuditEvent

    _seed_levels(vault)
    with schema_context(canary_tenants.a.schema_name):
        before = AuditEvent.objects.filter(action="secret.read").count()
        assert secret_resolve("smtp-password", tenant="acme", org=None, bot=None) == TENANT_SECRET
        secret_resolve("smtp-password", tenant="acme", org=None, bot=None)  # cached: not fetched again
        events = list(AuditEvent.objects.filter(action="secret.read").order_by("id"))[before:]
        assert [e.object_id for e in events] == ["gbo/tenants/acme"]
        assert TENANT_SECRET not in str(events[0].summary)
    with schema_context(canary_tenants.b.schema_name):
        assert not AuditEvent.objects.filter(action="secret.read", object_id="gbo/tenants/acme").exists()
