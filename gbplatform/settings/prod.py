"""Production: everything from the environment, secure defaults, nothing embedded.

Required: DJANGO_SECRET_KEY, DATABASE_URL, REDIS_URL, ALLOWED_HOSTS (parent domains of the tenants).
"""

from django.core.exceptions import ImproperlyConfigured

from gbplatform.settings.base import *  # noqa: F403
from gbplatform.settings.base import ALLOWED_HOSTS, DATABASE_URL, ENCRYPTION_KEY_FILE, REDIS_URL, SECRET_KEY, VAULT_ADDR
from gbplatform.settings.env import env_bool, env_int

DEBUG = False

_missing = [
    name
    for name, value in (
        ("DJANGO_SECRET_KEY", SECRET_KEY),
        ("DATABASE_URL", DATABASE_URL),
        ("REDIS_URL", REDIS_URL),
    )
    if not value
]
if _missing:
    raise ImproperlyConfigured(f"production settings need these environment variables: {', '.join(_missing)}")
# Encrypted fields (bot memory, secrets) need keys: from Vault, or a key file the operator provisions.
# Production never creates a key file itself (a lost generated key would lose the data it sealed).
if not VAULT_ADDR and not ENCRYPTION_KEY_FILE.exists():
    raise ImproperlyConfigured("set VAULT_ADDR (keys at gbo/encryption) or provide ENCRYPTION_KEY_FILE")
if "*" in ALLOWED_HOSTS:  # anywhere in the list, it admits any Host header
    raise ImproperlyConfigured("set ALLOWED_HOSTS to the tenants' parent domains, e.g. .bots.example.com")

# HTTPS everywhere; the proxy in front terminates TLS and must set X-Forwarded-Proto, which is trusted only
# with TRUST_X_FORWARDED_PROTO (base settings): trusted without a proxy, any client could claim HTTPS.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
# One year, subdomains included: every tenant host is served over HTTPS.
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
X_FRAME_OPTIONS = "DENY"
