"""Fixtures of the tenant tests: the Qdrant fake on loopback (tenant deletion purges the tenant's vectors)."""

from tests.support.qdrant_fake import qdrant_platform, qdrant_server  # noqa: F401 - shared fixtures
