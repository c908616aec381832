"""Tests: real PostgreSQL and Redis on loopback, never mocks.

With DATABASE_URL / REDIS_URL set (CI with its own servers) they are used as given. Otherwise importing
these settings starts the embedded PostgreSQL in var/test-pg and a private redis-server, and exports their
URLs so subprocesses of the test run (CLI tests) reach the same servers. pytest-django loads settings before
any conftest runs, which is why the start happens here; tests/conftest.py stops them when the run ends.
"""

import os

from gbplatform import localservices
from gbplatform.settings.base import *  # noqa: F403
from gbplatform.settings.base import (
    DATABASE_URL,
    REDIS_URL,
    VAR_DIR,
    caches_for,
    channel_layers_for,
    database_from_url,
    redis_url_for_db,
)
from gbplatform.settings.env import env_bool

if not DATABASE_URL:
    DATABASE_URL = localservices.postgres_start(VAR_DIR / "test-pg").url
    os.environ["DATABASE_URL"] = DATABASE_URL
if not REDIS_URL:
    REDIS_URL = localservices.redis_start(VAR_DIR / "test-redis", persist=False).url
    os.environ["REDIS_URL"] = REDIS_URL

DATABASES = {"default": database_from_url(DATABASE_URL)}
# One test database per run: two runs at once (two terminals, an editor's runner) would otherwise drop
# each other's database. pytest-django drops it at the end; `make clean` clears what a killed run left.
DATABASES["default"]["TEST"] = {"NAME": f"test_gbplatform_{os.getpid()}"}
CACHES = caches_for(REDIS_URL)
CHANNEL_LAYERS = channel_layers_for(REDIS_URL)
CELERY_BROKER_URL = redis_url_for_db(REDIS_URL, 0)
# Tests read task results back; production ignores them.
CELERY_RESULT_BACKEND = redis_url_for_db(REDIS_URL, 3)

DEBUG = False
# Tests change a dependency and ask again at once; tests/core/test_health.py turns the report cache on.
HEALTH_REPORT_TTL_S = 0
# The test servers start often and most never search or call a model: the first that does loads them.
WEB_PRELOAD = env_bool("WEB_PRELOAD", False)
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
