"""Fixtures of the attack suite: tenant drives on the real SeaweedFS S3 server (started once per run), the real
OpenID providers and Vault of the sign-in tests (I10), and our Qdrant server on loopback (I12)."""

import pytest

from tests.accounts.conftest import (  # noqa: F401 - the sign-in tests' providers (npm oidc-provider) and Vault
    other_provider,
    provider,
    provider_key,
    provider_process,
    vault_server,
    vault_settings,
)
from tests.drive.conftest import s3_server  # noqa: F401 - the shared SeaweedFS server of the drive tests
from tests.support.qdrant_fake import qdrant_platform, qdrant_server  # noqa: F401 - the Qdrant fake


@pytest.fixture
def s3_settings(settings, s3_server):  # noqa: F811
    """Tenant drives in the real SeaweedFS S3 server (one bucket, a prefix per tenant), as in production."""
    settings.S3_ENDPOINT_URL, settings.S3_BUCKET = s3_server.endpoint_url, "security-tests"
    settings.S3_ACCESS_KEY, settings.S3_SECRET_KEY = s3_server.access_key, s3_server.secret_key
    settings.S3_REGION = s3_server.region
    return settings


@pytest.fixture
def oidc_fresh():
    """No provider metadata cached from an earlier test (each provider process has its own issuer URL)."""
    from apps.accounts.oidc import oidc_cache_clear

    oidc_cache_clear()
    yield
    oidc_cache_clear()
