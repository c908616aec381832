"""Development: what `make run` and a bare `manage.py` use on a laptop.

Without DATABASE_URL the embedded PostgreSQL in var/pg is started (or reused) so `manage.py shell` just
works; `make run` starts it first and passes DATABASE_URL and REDIS_URL to every process.
"""

from gbplatform.settings.base import *  # noqa: F403
from gbplatform.settings.base import DATABASE_URL, VAR_DIR, database_from_url

DEBUG = True
SECRET_KEY = SECRET_KEY or "dev-only-insecure-key-never-use-in-production"  # noqa: F405
ALLOWED_HOSTS = ["*"]

if not DATABASE_URL:
    from gbplatform.localservices import postgres_start

    DATABASES = {"default": database_from_url(postgres_start(VAR_DIR / "pg").url)}

# Serve app static files (admin CSS) straight from the apps, no collectstatic needed in development.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
