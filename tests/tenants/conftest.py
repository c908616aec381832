"""Fixtures of the tenant tests: the Qdrant and Vault fakes on loopback (tenant deletion purges the tenant's
vectors and its secrets)."""

import pytest

from apps.core import secrets as secrets_module
from tests.support.qdrant_fake import qdrant_platform, qdrant_server  # noqa: F401 - shared fixtures
from tests.support.vault_fake import FakeVault


@pytest.fixture
def vault(settings):
    """Our Vault-API server on loopback as the platform's Vault (static non-expiring token, production mode)."""
    secrets_module.secrets_reset()
    with FakeVault() as fake:
        fake.seed_encryption_keys()  # with VAULT_ADDR set, encrypted fields read their keys from Vault
        settings.VAULT_ADDR = fake.url
        settings.VAULT_TOKEN = fake.create_token(0)
        settings.VAULT_REQUIRED, settings.DEBUG = False, False
        yield fake
    secrets_module.secrets_reset()
