"""apps.core.secrets.bot_config_secret_value refuses the secrets the tenant admins' configuration names by itself:
a caller that passes nothing is still refused them, and a caller that keeps an AdminSecretReferences for several
values has the admins' configuration read once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django_tenants.utils import schema_context

from apps.accounts import selectors as accounts_selectors
from apps.core import secrets as secrets_module
from apps.core.secrets import AdminSecretReferences, bot_config_secret_value
from tests.support.vault_fake import FakeVault

pytestmark = pytest.mark.django_db


@pytest.fixture
def vault(settings) -> Iterator[FakeVault]:
    secrets_module.secrets_reset()
    with FakeVault() as fake:
        fake.seed_encryption_keys()  # the OIDC configuration's values are encrypted with keys from Vault
        settings.VAULT_ADDR = fake.url
        settings.VAULT_TOKEN = fake.create_token(0)
        settings.VAULT_REQUIRED, settings.DEBUG = False, False
        yield fake
    secrets_module.secrets_reset()


@pytest.fixture
def legacy_oidc_secret(canary_tenants, vault) -> str:
    """Tenant A's OIDC client secret kept where it was before the admin path existed (in the tenant's own path,
    which bot configuration may otherwise name), and a neighbour key at the same path."""
    from apps.accounts.models import OidcConfig

    a = canary_tenants.a.schema_name
    vault.put_secret(f"gbo/tenants/{a}/oidc", {"client_secret": "oidc-secret", "note": "not the admins'"})
    with schema_context(a):
        OidcConfig.objects.create(issuer="https://id.example.test", client_id="c",  # as saved before: no clean()
                                  client_secret=f"vault:gbo/tenants/{a}/oidc#client_secret")
    return a


@pytest.fixture
def reads(monkeypatch) -> list[int]:
    """One entry per read of the tenant admins' secret references."""
    done: list[int] = []
    real = accounts_selectors.admin_secret_references

    def counted() -> frozenset[tuple[str, str]]:
        done.append(1)
        return real()

    monkeypatch.setattr(accounts_selectors, "admin_secret_references", counted)
    return done


def test_a_caller_that_passes_nothing_is_still_refused_the_admins_secret(legacy_oidc_secret, vault):
    a = legacy_oidc_secret
    with schema_context(a):
        with pytest.raises(ValueError, match="the tenant admins' own secrets"):
            bot_config_secret_value(f"vault:gbo/tenants/{a}/oidc#client_secret", tenant=a, bot="thief")
        with pytest.raises(ValueError, match="the tenant admins' own secrets"):
            bot_config_secret_value(f"vault:gbo/tenants/{a}/oidc#client_secret", tenant=a, bot="thief",
                                    with_bot_path=False)
        assert bot_config_secret_value(f"vault:gbo/tenants/{a}/oidc#note", tenant=a, bot="neighbour") == (
            "not the admins'")
    # Refused before Vault was asked: the one read is the neighbour's.
    assert vault.count(vault.kv_path(f"gbo/tenants/{a}/oidc")) == 1


def test_a_kept_holder_reads_the_admins_configuration_once(legacy_oidc_secret, reads):
    a = legacy_oidc_secret
    with schema_context(a):
        assert bot_config_secret_value("plain value", tenant=a, bot="b") == "plain value"
        assert reads == []  # a value that is no reference reads nothing
        kept = AdminSecretReferences(a)
        for _ in range(3):  # a chain naming three keys
            with pytest.raises(ValueError, match="the tenant admins' own secrets"):
                bot_config_secret_value(f"vault:gbo/tenants/{a}/oidc#client_secret", tenant=a, bot="b",
                                        admin_references=kept)
        assert reads == [1]
        bot_config_secret_value(f"vault:gbo/tenants/{a}/oidc#note", tenant=a, bot="b")
        assert reads == [1, 1]  # without one, each call reads them for itself


def test_a_holder_of_another_tenant_is_refused(legacy_oidc_secret, canary_tenants):
    a, b = legacy_oidc_secret, canary_tenants.b.schema_name
    with schema_context(b), pytest.raises(RuntimeError, match="admin secret references of tenant"):
        bot_config_secret_value(f"vault:gbo/tenants/{b}/oidc#client_secret", tenant=b, bot="b",
                                admin_references=AdminSecretReferences(a))


def test_the_llm_key_resolver_reads_them_once_for_its_whole_chain(legacy_oidc_secret, reads, settings):
    from types import SimpleNamespace

    from apps.llm.config import llm_settings_for

    settings.LLM_URL = settings.LLM_MODEL = settings.LLM_API_KEY = settings.LLM_PROVIDER = ""
    a = legacy_oidc_secret
    with schema_context(a):
        found = llm_settings_for(SimpleNamespace(name="helper", pk=7), {
            "llm-url": "https://llm.example.test/v1", "llm-model": "m",
            "llm-key": f"vault:gbo/tenants/{a}/oidc#client_secret",
            "llm-fallback-url": "https://fallback.example.test/v1", "llm-fallback-model": "m2",
            "llm-fallback-key": f"vault:gbo/tenants/{a}/oidc#client_secret"}, tenant=a)
    assert found.providers == ()
    assert sum("admins' own" in problem for problem in found.problems) == 2
    assert reads == [1]
