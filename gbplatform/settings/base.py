"""Settings shared by every environment. Everything configurable is read from the environment.

Outside services are optional and each is switched on by its URL (DATABASE_URL, REDIS_URL, QDRANT_URL,
S3_*, VAULT_ADDR, OIDC_*, LLM_*, SMTP_*, LIVEKIT_*); `.env.example` lists every variable.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from celery.schedules import crontab

from gbplatform.settings.env import env_bool, env_int, env_list, env_str, redis_url_for_db

BASE_DIR = Path(__file__).resolve().parent.parent.parent
# Local state of `make run` and `make test` (embedded database, Redis, files); ignored by git.
VAR_DIR = Path(env_str("GB_VAR_DIR") or BASE_DIR / "var")

PLATFORM_VERSION = "0.1.0"

# --- Core --------------------------------------------------------------------------------------------
SECRET_KEY = env_str("DJANGO_SECRET_KEY")
DEBUG = False
# Tenants are added at run time, so the Host header is checked against the Domain table by the tenant
# middleware (unknown host: 404). ALLOWED_HOSTS still narrows what may reach it: in production set the
# parent domains, e.g. ".bots.example.com".
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["*"])
# Only trust X-Forwarded-Host / X-Forwarded-Proto behind a proxy you control; off by default so a client
# cannot pick another tenant with a forged header.
USE_X_FORWARDED_HOST = env_bool("USE_X_FORWARDED_HOST", False)
if env_bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Tenancy (django-tenants: one PostgreSQL schema per tenant) ---------------------------------------
PLATFORM_PUBLIC_DOMAIN = env_str("PLATFORM_PUBLIC_DOMAIN", "localhost").lower()

SHARED_APPS = [
    "django_tenants",
    "apps.tenants",
    "apps.core",
    "apps.basic",
    "daphne",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.admin",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "channels",
]
# Auth and sessions live in every tenant schema too: a tenant's console users and their sessions are
# rows of that tenant, so a session cookie from tenant A finds no session on tenant B.
TENANT_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "apps.bots",
    "apps.drive",
    "apps.kb",
    "apps.compliance",
    "apps.accounts",
    "apps.sessions",
    "apps.llm",
    "apps.automation",
    "apps.mail",
    "apps.meet",
    "apps.console",
    "apps.analytics",
]
INSTALLED_APPS = list(dict.fromkeys(SHARED_APPS + TENANT_APPS))

TENANT_MODEL = "tenants.Tenant"
TENANT_DOMAIN_MODEL = "tenants.Domain"
PUBLIC_SCHEMA_NAME = "public"
PUBLIC_SCHEMA_URLCONF = "gbplatform.urls_public"
ROOT_URLCONF = "gbplatform.urls_tenant"
# New tenants are cloned from this migrated schema instead of replaying every migration: creation time
# stays flat as the number of tenants grows (see tests/bench/bench_tenants.py).
TENANT_BASE_SCHEMA = "tenant_template"
TENANT_CREATION_FAKES_MIGRATIONS = True
DATABASE_ROUTERS = ["django_tenants.routers.TenantSyncRouter"]
# Issue `SET search_path` once per connection and schema change, not before every query (it was 39% of a
# chat turn's time under load). django-tenants 4 forgets the cached path on close, rollback, savepoint
# rollback and every set_tenant/schema_context, so a reused connection never keeps another schema's path;
# the isolation and attack suites (tests/tenants, tests/security) run with this on.
TENANT_LIMIT_SET_CALLS = True

MIDDLEWARE = [
    "apps.core.middleware.LivenessMiddleware",
    "apps.core.middleware.RequestContextMiddleware",
    "apps.core.middleware.NulCharacterMiddleware",
    "apps.tenants.middleware.TenantHostMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "apps.compliance.middleware.SecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The console's language: the django_language cookie set by set_language (en / pt-br), else the
    # browser's Accept-Language, else LANGUAGE_CODE. After sessions, before CommonMiddleware (Django docs).
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Ends signed-in sessions idle past SESSION_IDLE_TIMEOUT_S (apps.accounts.middleware), before the OIDC
    # re-check: an idle session ends instead of being renewed silently by the provider.
    "apps.accounts.middleware.SessionIdleTimeoutMiddleware",
    # Re-checks OIDC console sessions with the tenant's provider (apps.accounts.middleware).
    "apps.accounts.middleware.OidcSessionRefreshMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]

ASGI_APPLICATION = "gbplatform.asgi.application"

# --- Database ----------------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL")
# Under ASGI every request may run on another thread: persistent connections would leak (Django docs).
DATABASE_CONN_MAX_AGE = 0


def database_from_url(url: str) -> dict:
    config = dj_database_url.parse(url, conn_max_age=DATABASE_CONN_MAX_AGE)
    # The password apart from the URL (compose passes POSTGRES_PASSWORD as is): a generated one with '/', '@'
    # or '#' written into the URL unencoded is read as part of the host or the path.
    if password := env_str("DATABASE_PASSWORD"):
        config["PASSWORD"] = password
    config["ENGINE"] = "django_tenants.postgresql_backend"
    config.setdefault("OPTIONS", {})
    # A query that runs this long is a bug or an attack; fail it instead of holding a worker.
    config["OPTIONS"]["options"] = f"-c statement_timeout={env_int('DATABASE_STATEMENT_TIMEOUT_MS', 30000)}"
    return config


DATABASES = {"default": database_from_url(DATABASE_URL)} if DATABASE_URL else {}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: Celery broker, cache, channel layer (each on its own logical database) --------------------
REDIS_URL = env_str("REDIS_URL")
REDIS_DB_BROKER, REDIS_DB_CACHE, REDIS_DB_CHANNELS = 0, 1, 2


def caches_for(redis_url: str) -> dict:
    if not redis_url:
        return {
            "default": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "KEY_FUNCTION": "django_tenants.cache.make_key",
            }
        }
    return {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": redis_url_for_db(redis_url, REDIS_DB_CACHE),
            # The tenant's schema name prefixes every key: one tenant can never read another's entry.
            "KEY_FUNCTION": "django_tenants.cache.make_key",
            "REVERSE_KEY_FUNCTION": "django_tenants.cache.reverse_key",
            "OPTIONS": {
                # A cache outage must slow a request down a little, not hang it.
                "SOCKET_CONNECT_TIMEOUT": 2,
                "SOCKET_TIMEOUT": 2,
            },
        }
    }


CHANNEL_LAYER_READ_TIMEOUT_S = 30
# Redis connections one web process may hold for the channel layer: each open socket waits on one while
# idle, so redis-py's default of 100 refused the 101st chat socket ("Too many connections").
CHANNEL_LAYER_MAX_CONNECTIONS = 5000


def channel_layers_for(redis_url: str) -> dict:
    if not redis_url:
        return {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    return {
        "default": {
            # Redis pub/sub: every consumer has its own subscription. The list-based RedisChannelLayer shares one
            # blocking receive loop per process, and under load (hundreds of sockets opening and closing) its
            # consumers stopped receiving their events (tests/bench/bench_chat.py lost replies).
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            # channels-redis blocks up to 5 s reading a consumer's messages; redis-py 8 times reads out at
            # 5 s by default, which killed every idle socket. Reads may wait this long before Redis is
            # considered gone.
            "CONFIG": {"hosts": [{"address": redis_url_for_db(redis_url, REDIS_DB_CHANNELS),
                                  "socket_timeout": CHANNEL_LAYER_READ_TIMEOUT_S,
                                  "max_connections": CHANNEL_LAYER_MAX_CONNECTIONS}]},
        }
    }


CACHES = caches_for(REDIS_URL)
CHANNEL_LAYERS = channel_layers_for(REDIS_URL)

# --- Celery ------------------------------------------------------------------------------------------
CELERY_BROKER_URL = redis_url_for_db(REDIS_URL, REDIS_DB_BROKER) if REDIS_URL else "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "jobs"
# Each app's tasks go to its queue, so a backlog of indexing never delays a drive scan or an email. Beat's quick,
# time-sensitive platform tasks on `jobs` (the schedule tick, sweeps, dispatchers that queue one task per tenant,
# the heartbeat) have a queue of their own, `dispatch`: behind a backlog of scheduled runs on `jobs`, the tick
# (expiring after one interval) was dropped again and again and no tenant's schedules were claimed at all. A
# worker takes from its queues in turn, so a dispatch task waits for one task to end, not for the whole backlog.
CELERY_TASK_ROUTES = {
    "automation.tick": {"queue": "dispatch"},
    "automation.sweep_lost_runs": {"queue": "dispatch"},
    "chat.sweep_lost_waits": {"queue": "dispatch"},
    "analytics.dispatch_refresh": {"queue": "dispatch"},
    "compliance.dispatch_retention": {"queue": "dispatch"},
    "compliance.requeue_stale": {"queue": "dispatch"},
    "core.beat_heartbeat": {"queue": "dispatch"},
    "drive.*": {"queue": "drive"},
    "kb.*": {"queue": "index"},
    "mail.*": {"queue": "mail"},
    "automation.*": {"queue": "jobs"},
}
# At-least-once delivery: ack after the task ran, requeue if the worker process dies, and take one
# message at a time so a crash loses nothing and a slow task does not hold others hostage. Every task
# must therefore be idempotent.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Must exceed the longest task and any countdown, or Redis redelivers a running task (celery#4400).
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT_S", 7200)}
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT_S", 600)
CELERY_TASK_TIME_LIMIT = CELERY_TASK_SOFT_TIME_LIMIT + 60
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    "platform-heartbeat": {"task": "core.beat_heartbeat", "schedule": 30.0, "options": {"queue": "dispatch"}},
    "kb-requeue-stale": {"task": "kb.requeue_stale", "schedule": 300.0, "options": {"queue": "index"}},
    "mail-requeue-stale": {"task": "mail.requeue_stale", "schedule": 300.0, "options": {"queue": "mail"}},
    "compliance-requeue-stale": {"task": "compliance.requeue_stale", "schedule": 300.0,
                                 "options": {"queue": "dispatch"}},
}

# --- Optional outside services (each switched on by its URL) -----------------------------------------
QDRANT_URL = env_str("QDRANT_URL")
QDRANT_API_KEY = env_str("QDRANT_API_KEY")
S3_ENDPOINT_URL = env_str("S3_ENDPOINT_URL")
S3_ACCESS_KEY = env_str("S3_ACCESS_KEY")
S3_SECRET_KEY = env_str("S3_SECRET_KEY")
S3_BUCKET = env_str("S3_BUCKET", "gbplatform")
S3_REGION = env_str("S3_REGION", "us-east-1")
VAULT_ADDR = env_str("VAULT_ADDR")
VAULT_TOKEN = env_str("VAULT_TOKEN")
VAULT_REQUIRED = env_bool("VAULT_REQUIRED", False)
# AppRole login (preferred in production): a new token is fetched on expiry or a 403.
VAULT_ROLE_ID = env_str("VAULT_ROLE_ID")
VAULT_SECRET_ID = env_str("VAULT_SECRET_ID")
VAULT_KV_MOUNT = env_str("VAULT_KV_MOUNT", "secret")  # the seed keeps KV v2 under secret/
VAULT_CACERT = env_str("VAULT_CACERT")  # CA bundle for TLS to Vault
VAULT_TIMEOUT_S = env_int("VAULT_TIMEOUT_S", 3)  # per Vault call: a hung Vault must not hang a request
VAULT_CACHE_TTL_S = env_int("VAULT_CACHE_TTL_S", 30)  # per-process cache: rotation shows within this
# Console sign-in: the platform's default OIDC provider for tenants without their own (apps.accounts);
# OIDC_CLIENT_SECRET may be a `vault:<path>#<key>` reference. Empty OIDC_ISSUER: local passwords.
OIDC_ISSUER = env_str("OIDC_ISSUER")
OIDC_CLIENT_ID = env_str("OIDC_CLIENT_ID")
OIDC_CLIENT_SECRET = env_str("OIDC_CLIENT_SECRET")
# Seconds per call to a provider, answer included (mozilla-django-oidc's default is no timeout: a hung provider
# hangs us; a per-read timeout alone lets a provider trickling its answer hold the call for ever).
OIDC_TIMEOUT = env_int("OIDC_TIMEOUT_S", 5)
# A tenant's own provider (accounts.OidcConfig: its issuer and the JWKS, token and userinfo URLs its discovery
# document names) is requested over https at public addresses only (SSRF guard) unless this is on (a provider
# inside the platform's network, or on loopback over http). The platform's OIDC_ISSUER is never checked.
OIDC_ALLOW_PRIVATE_HOSTS = env_bool("OIDC_ALLOW_PRIVATE_HOSTS", False)
# --- LLM (apps.llm): the platform default provider, last in every bot's chain -------------------------
# LLM_API_KEY may be a `vault:<path>#<key>` reference. LLM_PROVIDER: `openai` (any OpenAI-compatible API:
# OpenAI, Groq, Ollama, llama.cpp, vLLM) or `anthropic`; empty: detected from LLM_URL.
LLM_URL = env_str("LLM_URL")
LLM_API_KEY = env_str("LLM_API_KEY")
LLM_MODEL = env_str("LLM_MODEL")
LLM_PROVIDER = env_str("LLM_PROVIDER")
# Read timeout between bytes of a provider's answer (spec §7.2: 180 s; slow local models stream slowly).
LLM_TIMEOUT_S = env_int("LLM_TIMEOUT_S", 180)
# The circuit breaker of providers every tenant shares (the platform's endpoint and key): consecutive
# failures before it opens, and how long it stays open. A bot's circuit-breaker-* apply to its own key only.
LLM_BREAKER_THRESHOLD = env_int("LLM_BREAKER_THRESHOLD", 5)
LLM_BREAKER_TIMEOUT_S = env_int("LLM_BREAKER_TIMEOUT_S", 30)
# Tokens (prompt + completion) each tenant may use per UTC day, all bots together; 0 = unlimited.
LLM_TENANT_DAILY_TOKENS = env_int("LLM_TENANT_DAILY_TOKENS", 0)
# Bots' own llm-url / llm-fallback-url / embedding-url must be public hosts (SSRF guard) unless this is on
# (local model servers).
LLM_ALLOW_PRIVATE_HOSTS = env_bool("LLM_ALLOW_PRIVATE_HOSTS", False)
SMTP_HOST = env_str("SMTP_HOST")
SMTP_PORT = env_int("SMTP_PORT", 587)
SMTP_USER = env_str("SMTP_USER")
SMTP_PASSWORD = env_str("SMTP_PASSWORD")
SMTP_USE_TLS = env_bool("SMTP_USE_TLS", True)
# Bot mail (apps.mail): sender when a bot sets no email-from; IMAP poll interval (beat); first retry delay
# of a temporarily failed send (doubles per retry); whether bots may name private or loopback mail hosts
# (off: a tenant could otherwise make the workers connect to internal services).
MAIL_DEFAULT_FROM = env_str("MAIL_DEFAULT_FROM")
# Through the platform's SMTP server (bots with no email-server of their own), mail goes out From
# MAIL_DEFAULT_FROM with the bot's email-from as Reply-To, unless that address is in one of these domains
# (ones the platform may send for): a tenant must not send as any address it likes through the platform's relay.
MAIL_PLATFORM_SENDER_DOMAINS = [d.lower() for d in env_list("MAIL_PLATFORM_SENDER_DOMAINS")]
MAIL_POLL_INTERVAL_S = env_int("MAIL_POLL_INTERVAL_S", 60)
# Mails one bot may queue per hour (0: no limit): a script looping on SEND MAIL, or a flood of mail the bot
# answers, stops there with an error instead of sending thousands (and the sending domain's reputation).
MAIL_SEND_PER_BOT_PER_HOUR = env_int("MAIL_SEND_PER_BOT_PER_HOUR", 500)
MAIL_RETRY_BASE_S = env_int("MAIL_RETRY_BASE_S", 30)
MAIL_ALLOW_PRIVATE_HOSTS = env_bool("MAIL_ALLOW_PRIVATE_HOSTS", False)
CELERY_BEAT_SCHEDULE["mail-poll"] = {
    "task": "mail.dispatch_polls",
    "schedule": float(MAIL_POLL_INTERVAL_S),
    "options": {"queue": "mail"},
}
LIVEKIT_URL = env_str("LIVEKIT_URL")
LIVEKIT_API_KEY = env_str("LIVEKIT_API_KEY")
LIVEKIT_API_SECRET = env_str("LIVEKIT_API_SECRET")
# Meetings (apps.meet): the LiveKit URL browsers connect to (wss://...) when it differs from LIVEKIT_URL
# (e.g. LIVEKIT_URL reaches LiveKit inside the cluster); the meeting page's CSP connect-src allows it.
LIVEKIT_PUBLIC_URL = env_str("LIVEKIT_PUBLIC_URL")
# Scheme of the absolute join links BOOK / START MEET return (no request to take it from): http for make run.
MEET_LINK_SCHEME = env_str("MEET_LINK_SCHEME", "https")

# Storage: S3 when S3_ENDPOINT_URL (or S3_BUCKET on AWS with S3_ACCESS_KEY) is set, local files otherwise.
MEDIA_ROOT = Path(env_str("MEDIA_ROOT") or VAR_DIR / "media")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
if S3_ACCESS_KEY:
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": S3_ENDPOINT_URL or None,
            "access_key": S3_ACCESS_KEY,
            "secret_key": S3_SECRET_KEY,
            "region_name": S3_REGION,
            "file_overwrite": True,
        },
    }

# --- Drive and packages -------------------------------------------------------------------------------
# How often beat asks for a DriveMonitor scan of every tenant (upstream polls every 5 s; 10 s halves load).
DRIVE_SCAN_INTERVAL_S = env_int("DRIVE_SCAN_INTERVAL_S", 10)
CELERY_BEAT_SCHEDULE["drive-monitor"] = {
    "task": "drive.dispatch_scans",
    "schedule": float(DRIVE_SCAN_INTERVAL_S),
    "options": {"queue": "drive"},
}
# A file that fails this many times in a row is parked until its content (ETag) changes.
DRIVE_MAX_FAILURES = env_int("DRIVE_MAX_FAILURES", 5)
# Uploaded packages (zip): refused before anything is written when over any of these.
PACKAGE_MAX_ENTRIES = env_int("PACKAGE_MAX_ENTRIES", 1000)
PACKAGE_MAX_TOTAL_BYTES = env_int("PACKAGE_MAX_TOTAL_BYTES", 100 * 1024 * 1024)
PACKAGE_MAX_FILE_BYTES = env_int("PACKAGE_MAX_FILE_BYTES", 10 * 1024 * 1024)
PACKAGE_MAX_RATIO = env_int("PACKAGE_MAX_RATIO", 100)
# Slow clients (apps.core.daphne_slow_clients, defaults and reasons there): a request's line and headers must
# arrive within HTTP_REQUEST_HEAD_TIMEOUT_S, its body at HTTP_REQUEST_BODY_MIN_BYTES_PER_S on average after
# HTTP_REQUEST_BODY_TIMEOUT_S, else 408 and the connection closes (0 switches a deadline off).
HTTP_REQUEST_HEAD_TIMEOUT_S = env_int("HTTP_REQUEST_HEAD_TIMEOUT_S", 20)
HTTP_REQUEST_BODY_TIMEOUT_S = env_int("HTTP_REQUEST_BODY_TIMEOUT_S", 20)
HTTP_REQUEST_BODY_MIN_BYTES_PER_S = env_int("HTTP_REQUEST_BODY_MIN_BYTES_PER_S", 1000)
# A document still `pending` this long lost its indexing task (a killed worker): the sweep queues it again.
KB_INDEX_STALE_S = env_int("KB_INDEX_STALE_S", 600)
# Tenants' drives in S3: one bucket, one prefix per tenant (the prefix is built in apps.drive.storage only).
S3_TENANT_PREFIX = "tenants"

# --- Automation: SET SCHEDULE jobs (apps.automation) ----------------------------------------------------
# How often beat looks for due schedules: crons have minute resolution, so a job starts at most this late.
AUTOMATION_TICK_INTERVAL_S = env_int("AUTOMATION_TICK_INTERVAL_S", 10)
# A run due longer ago than this (workers or beat were down) is skipped and recorded as stale instead of
# fired late: a 9:00 report is not sent at 14:00, and an outage does not end in a burst of catch-up runs.
AUTOMATION_LATE_CUTOFF_S = env_int("AUTOMATION_LATE_CUTOFF_S", 300)
# Runs one tenant may have queued, running or back from a WAIT at once (apps.automation.services.
# job_runs_in_flight); its other due schedules wait, still due, for a tick after some of them end. Every tenant's
# runs share the `jobs` queue in order of arrival: another tenant's run waits behind at most this many of one
# tenant's, so keep it under the jobs workers' concurrency times the cut-off over a long run's seconds (20: 4 worker
# processes, 60-second runs, 300 s).
AUTOMATION_TENANT_RUNS_IN_FLIGHT_MAX = max(1, env_int("AUTOMATION_TENANT_RUNS_IN_FLIGHT_MAX", 20))
CELERY_BEAT_SCHEDULE["automation-tick"] = {
    "task": "automation.tick",
    "schedule": float(AUTOMATION_TICK_INTERVAL_S),
    # A tick nobody picked up within its interval is dropped: the next one does the same work.
    "options": {"queue": "dispatch", "expires": float(AUTOMATION_TICK_INTERVAL_S)},
}
# Runs whose worker died mid-run are recorded as errors by this sweep (they would show `running` for ever).
CELERY_BEAT_SCHEDULE["automation-sweep-lost-runs"] = {
    "task": "automation.sweep_lost_runs", "schedule": 300.0, "options": {"queue": "dispatch", "expires": 300.0},
}
# Analytics (apps.analytics): how often beat recomputes today's and yesterday's daily aggregates of every
# tenant (the console's analytics lag the conversations by at most this much), and the price table behind
# "cost per bot": {"model name or prefix": [prompt, completion]} in USD per million tokens (a bot's
# config.csv llm-price-prompt / llm-price-completion win; models without a price show as unpriced).
ANALYTICS_REFRESH_INTERVAL_S = 300
ANALYTICS_MODEL_PRICES: dict[str, list[float]] = {}
CELERY_BEAT_SCHEDULE["analytics-refresh"] = {
    "task": "analytics.dispatch_refresh",
    "schedule": float(ANALYTICS_REFRESH_INTERVAL_S),
    # A dispatch nobody picked up within its interval is dropped: the next one does the same work.
    "options": {"queue": "dispatch", "expires": float(ANALYTICS_REFRESH_INTERVAL_S)},
}

# --- Compliance: the daily retention purge (apps.compliance.retention) ---------------------------------
# Once a day at a quiet hour (UTC); each ready tenant gets one purge task deleting in small batches.
CELERY_BEAT_SCHEDULE["compliance-retention"] = {
    "task": "compliance.dispatch_retention",
    "schedule": crontab(hour=3, minute=30),
    # A purge nobody picked up within the day is dropped: the next day's does the same work.
    "options": {"queue": "dispatch", "expires": 23 * 3600.0},
}

# --- Chat (apps.sessions) -----------------------------------------------------------------------------
# Longest user message taken (upstream web client caps input similarly); longer is refused with the limit.
CHAT_MESSAGE_MAX_CHARS = env_int("CHAT_MESSAGE_MAX_CHARS", 8000)
# Turns one web process runs at once (each holds a thread and a database connection while it streams).
CHAT_TURN_THREADS = env_int("CHAT_TURN_THREADS", 32)
# Of those, the turns of one tenant a web process runs at once (more while this many stay free for the others);
# its others wait in the tenant's line (a tenant whose model is slow or hangs waits on its own turns, the others'
# start at once). Keep it well below CHAT_TURN_THREADS: a quarter by default (apps.sessions.slots).
CHAT_TURNS_PER_TENANT = env_int("CHAT_TURNS_PER_TENANT", 8)
# Seconds a REST message waits for one of its tenant's turn slots before it is refused as busy (503).
CHAT_TURN_SLOT_WAIT_S = env_int("CHAT_TURN_SLOT_WAIT_S", 10)
# Messages one chat session may send per minute whatever its bot's config.csv says (apps.sessions.limits).
CHAT_SESSION_MESSAGES_PER_MINUTE_MAX = env_int("CHAT_SESSION_MESSAGES_PER_MINUTE_MAX", 60)
# Threads (and database connections) of a web process for the chat's quick work: opening sessions, rate
# checks, replays. Not an operator setting: apps.sessions.checks counts it in the connection budget.
CHAT_QUICK_THREADS = 8
# One IP may send this many times a session's message rate (people behind one NAT share an address).
CHAT_RATE_IP_FACTOR = env_int("CHAT_RATE_IP_FACTOR", 10)
# WebSocket connections one client IP may open per minute (each creates a session and runs start.bas).
CHAT_CONNECTS_PER_MINUTE = env_int("CHAT_CONNECTS_PER_MINUTE", 60)
# Web chat page loads without the chat cookie per address per minute (each starts a conversation). Higher than
# the connects: a cross-site embed never sends its cookie, and an office or carrier NAT shares one address.
CHAT_PAGE_LOADS_PER_MINUTE = env_int("CHAT_PAGE_LOADS_PER_MINUTE", 240)
# A web process imports the LLM providers' SDKs (2 s) and loads the offline embedding model when it starts,
# in the background, instead of on the first question that needs them (an LLM turn, a knowledge-base search,
# a semantic cache lookup): after each deploy or restart that user would wait seconds.
WEB_PRELOAD = env_bool("WEB_PRELOAD", True)
# Dialogs at a WAIT whose resume message was lost (broker down at commit, Redis restarted) are resumed by this
# sweep (apps.sessions.services.waits_requeue_lost); a sweep nobody picked up within its minute is dropped: the
# next one does the same work.
CELERY_BEAT_SCHEDULE["chat-sweep-lost-waits"] = {
    "task": "chat.sweep_lost_waits", "schedule": 60.0, "options": {"queue": "dispatch", "expires": 60.0},
}

# Days the audit log keeps its events (each tenant's; the daily retention purge deletes older ones). Unset or
# 0: forever. At least 90 (apps.compliance.retention.AUDIT_LOG_KEEP_MIN_DAYS) whatever is set.
AUDIT_LOG_KEEP_DAYS = env_int("AUDIT_LOG_KEEP_DAYS", 0)

# Health: which checks make /api/health answer 503 when they fail. The others only degrade it.
HEALTH_REQUIRED_CHECKS = tuple(env_list("HEALTH_REQUIRED_CHECKS", ["database", "cache"]))
# An outside dependency that does not answer a health probe this fast counts as failing.
HEALTH_CHECK_TIMEOUT_S = float(env_str("HEALTH_CHECK_TIMEOUT_S", "2"))
# A web process answers /api/health from its last report for this long: the endpoint is public and each
# report probes the database, Redis, the vector store, Vault and the LLM provider (a flood of requests must
# not become a flood of probes). Load balancers poll every few seconds; 0 probes on every request.
HEALTH_REPORT_TTL_S = float(env_str("HEALTH_REPORT_TTL_S", "5"))

# --- Static files, i18n ------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("pt-br", "Português (Brasil)")]
# Translations of the console and the other tenant pages (locale/pt_BR/LC_MESSAGES/django.po and its .mo).
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Auth and sessions -------------------------------------------------------------------------------
# The tenant's OIDC provider first; passwords only where a tenant has none (and on the public host's admin).
AUTHENTICATION_BACKENDS = [
    "apps.accounts.backends.TenantOIDCBackend",
    "apps.accounts.backends.LocalPasswordBackend",
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/console/"
# Redirect after sign-out: Django's default "logged out" page lives in the admin, which tenant hosts lack.
LOGOUT_REDIRECT_URL = "/"
# Host-only cookies: never share a session or CSRF cookie across tenant subdomains.
SESSION_COOKIE_DOMAIN = None
CSRF_COOKIE_DOMAIN = None
SESSION_COOKIE_HTTPONLY = True
# Eight hours: a working day, then sign in again (ASVS 7.3.2 absolute timeout).
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE_S", 8 * 3600)
# Thirty minutes without a request, then sign in again (ASVS 7.3.1 idle timeout; apps.accounts.middleware).
SESSION_IDLE_TIMEOUT_S = env_int("SESSION_IDLE_TIMEOUT_S", 30 * 60)
SESSION_COOKIE_SAMESITE = "Lax"
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024  # request bodies other than file uploads

# --- Security headers and client addresses (apps.compliance) -----------------------------------------
# Extra CSP sources as "directive source" entries, comma-separated, e.g.
# CSP_EXTRA_SOURCES="img-src https://cdn.example.com, connect-src https://api.example.com"; checked at
# start-up ('unsafe-inline', 'unsafe-eval' and wildcards are refused).
SECURITY_CSP_EXTRA_SOURCES = env_list("CSP_EXTRA_SOURCES", [])
# Permissions-Policy: apps.compliance.middleware's default (camera, microphone, geolocation... off) unless
# a settings file sets SECURITY_PERMISSIONS_POLICY.
# Proxies whose X-Forwarded-For is believed when they are the direct peer (REMOTE_ADDR); with none, the
# client IP recorded in the audit log is REMOTE_ADDR, which a client cannot forge.
TRUSTED_PROXY_IPS = env_list("TRUSTED_PROXY_IPS", [])

# --- Rate limits (apps.core.ratelimit) ---------------------------------------------------------------
# Platform defaults (the seed's documented values). A bot's config.csv may change them with the seed's
# keys (rate-limit-requests, -window, -burst, -by, rate-limit-api-chat/-files/-auth/-llm) within the
# ceilings below. Counters live in the cache's Redis, per tenant.
RATE_LIMIT_ENABLED = env_bool("RATE_LIMIT_ENABLED", True)
RATE_LIMIT_REQUESTS = env_int("RATE_LIMIT_REQUESTS", 100)  # any API request, per window
RATE_LIMIT_WINDOW_S = env_int("RATE_LIMIT_WINDOW_S", 60)
RATE_LIMIT_BURST = env_int("RATE_LIMIT_BURST", 20)  # extra requests allowed back to back after a pause
RATE_LIMIT_BY = env_str("RATE_LIMIT_BY", "ip")  # ip | user | session | api-key
RATE_LIMIT_API_CHAT = env_int("RATE_LIMIT_API_CHAT", 30)
RATE_LIMIT_API_FILES = env_int("RATE_LIMIT_API_FILES", 50)
RATE_LIMIT_API_AUTH = env_int("RATE_LIMIT_API_AUTH", 10)  # sign-in attempts: slows password guessing
RATE_LIMIT_API_LLM = env_int("RATE_LIMIT_API_LLM", 20)
# Ceilings for values from config.csv: a typo or a tenant cannot make a limit meaningless.
RATE_LIMIT_MAX_REQUESTS = 100_000
RATE_LIMIT_MAX_WINDOW_S = 86_400
# Platform-wide limit per client IP (IPv6 per /64): events a minute from one address across every tenant and
# limited entry point (API and sign-in requests, chat socket connects and messages, REST chat), on top of
# each tenant's own limits; 0 switches it off. 3000 is ten times the largest per-tenant per-IP allowance at
# the defaults (chat messages: 30 x CHAT_RATE_IP_FACTOR 10 = 300 a minute): a NAT whose users use several
# tenants is not cut off, while one address spreading over any number of tenants stays at 50 events/s.
RATE_LIMIT_PLATFORM_IP_PER_MINUTE = env_int("RATE_LIMIT_PLATFORM_IP_PER_MINUTE", 3000)
# Redis unreachable: refuse with 503 (false, fail closed) or let requests through unlimited (true).
RATE_LIMIT_FAIL_OPEN = env_bool("RATE_LIMIT_FAIL_OPEN", False)

# --- Encryption at rest (apps.core.crypto, apps.core.fields) -----------------------------------------
# Keys come from Vault when VAULT_ADDR is set (KV secret at this path: fields active_key_id and keys),
# otherwise from the key file (same fields, mode 0600). See apps/core/README.md for rotation.
ENCRYPTION_VAULT_PATH = env_str("ENCRYPTION_VAULT_PATH", "gbo/encryption")
ENCRYPTION_KEY_FILE = Path(env_str("ENCRYPTION_KEY_FILE") or VAR_DIR / "keys" / "encryption.json")
# Only the development and test settings may generate a missing key file on first use; anything else
# refuses to encrypt without keys (ImproperlyConfigured) rather than invent a key other processes lack.
ENCRYPTION_KEY_FILE_CREATE = env_str("DJANGO_SETTINGS_MODULE") in (
    "gbplatform.settings.dev",
    "gbplatform.settings.test",
)

# --- Logging: one JSON object per line, with request id and tenant -----------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_context": {"()": "apps.core.logging.RequestContextFilter"},
        # E-mail addresses, phone and card numbers masked before any line is written (apps.compliance.pii).
        "pii_mask": {"()": "apps.compliance.pii.PiiMaskingFilter"},
    },
    "formatters": {
        "json": {
            "()": "apps.core.logging.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        }
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["pii_mask", "request_context"]}
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        "celery": {"level": "INFO"},
    },
}
