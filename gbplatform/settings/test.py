"""Tests: real PostgreSQL and Redis, started by the harness (tests/conftest.py) unless given by URL.

The harness exports DATABASE_URL and REDIS_URL before Django loads these settings, so everything here
is the ordinary base configuration plus speed-ups that do not change behaviour.
"""

from gbplatform.settings.base import *  # noqa: F403

DEBUG = False
SECRET_KEY = "test-only-key-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJ"
ALLOWED_HOSTS = ["*"]
# Hashing cost is irrelevant to what the tests check and dominates user creation.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
