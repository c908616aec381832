"""Provisioning of tenants: create, delete, and the two special schemas (public and the template).

A new tenant's schema is cloned from the migrated template schema (settings.TENANT_BASE_SCHEMA) rather than
built by replaying every migration, so creation time stays flat as tenants accumulate.
"""

from __future__ import annotations

import logging
import re
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django_tenants.utils import get_public_schema_name, schema_context, schema_exists

from apps.tenants.models import Domain, Tenant
from apps.tenants.selectors import hostname_normalize

logger = logging.getLogger(__name__)

# PostgreSQL identifiers are at most 63 bytes; we keep schema names to plain lower-case ASCII so they never
# need quoting and cannot collide with system schemas (pg_*) or ours.
SCHEMA_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
RESERVED_SCHEMA_PREFIXES = ("pg_", "information_schema")


def reserved_schema_names() -> frozenset[str]:
    """The first part of the raw keys written to the cache's Redis database beside the tenants' `<schema>:`
    cache keys (`llm:` of apps.llm's quota, answer cache and breaker, `rl:` of apps.core.ratelimit) and
    `platform`, the tenant part of the platform-wide rate limits (`rl:platform:...`). A tenant given one of these
    schema names (host llm.example.com) would share those keys, and deleting it would purge every tenant's."""
    from apps.core.ratelimit import PLATFORM_TENANT
    from apps.llm.breaker import KEY_PREFIX as BREAKER_PREFIX

    return frozenset({prefix.split(":", 1)[0] for prefix in (*_tenant_redis_key_prefixes(), BREAKER_PREFIX)}
                     | {PLATFORM_TENANT})
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
MAX_TENANT_NAME_LENGTH = 100
MAX_ORGANIZATION_ID_LENGTH = 200  # Tenant.oidc_organization_id
GENERATED_PASSWORD_BYTES = 18


class TenantProvisioningError(ValueError):
    """A tenant cannot be created as asked; the message says why and nothing was changed."""


class TenantDeleteIncomplete(RuntimeError):
    """A tenant's deletion stopped before its schema was dropped: the tenant stays, suspended, with its data.
    The message says what failed; deleting it again once that is fixed finishes the job."""


def schema_name_from_domain(domain: str) -> str:
    label = hostname_normalize(domain).split(".", 1)[0]
    return re.sub(r"[^a-z0-9_]", "_", label)[:63]


def _validate(name: str, domain: str, schema_name: str, oidc_organization_id: str = "") -> None:
    if len(oidc_organization_id) > MAX_ORGANIZATION_ID_LENGTH:
        raise TenantProvisioningError(f"the organisation id must be at most {MAX_ORGANIZATION_ID_LENGTH} characters")
    if not name.strip() or len(name) > MAX_TENANT_NAME_LENGTH:
        raise TenantProvisioningError(f"tenant name must be 1 to {MAX_TENANT_NAME_LENGTH} characters")
    if not HOSTNAME_RE.match(domain):
        raise TenantProvisioningError(f"{domain!r} is not a valid host name")
    if domain == settings.PLATFORM_PUBLIC_DOMAIN:
        raise TenantProvisioningError(f"{domain!r} is the platform's own host name")
    if not SCHEMA_NAME_RE.match(schema_name) or schema_name.startswith(RESERVED_SCHEMA_PREFIXES):
        raise TenantProvisioningError(
            f"schema name {schema_name!r} must start with a letter and hold only a-z, 0-9 and _ (max 63)"
        )
    if schema_name in {get_public_schema_name(), settings.TENANT_BASE_SCHEMA}:
        raise TenantProvisioningError(f"schema name {schema_name!r} is reserved")
    if schema_name in reserved_schema_names():
        raise TenantProvisioningError(
            f"schema name {schema_name!r} is reserved (the platform's own Redis keys start with it): "
            f"give the tenant another schema name"
        )
    if Domain.objects.filter(domain=domain).exists():
        raise TenantProvisioningError(f"host name {domain!r} already belongs to a tenant")
    if Tenant.objects.filter(schema_name=schema_name).exists() or schema_exists(schema_name):
        raise TenantProvisioningError(f"schema {schema_name!r} already exists")


def public_tenant_ensure() -> Tenant:
    """The public schema's tenant row and the platform host name (Django admin for support staff)."""
    with schema_context(get_public_schema_name()):
        tenant, _ = Tenant.objects.get_or_create(
            schema_name=get_public_schema_name(), defaults={"name": "Platform", "ready": True}
        )
        Domain.objects.get_or_create(
            domain=settings.PLATFORM_PUBLIC_DOMAIN, defaults={"tenant": tenant, "is_primary": True}
        )
    return tenant


def template_schema_ensure() -> Tenant:
    """The migrated template every tenant is cloned from. It has no domain and is never ready.

    It is a Tenant row so that `migrate_schemas` keeps it migrated with every other tenant schema.
    """
    with schema_context(get_public_schema_name()):
        template = Tenant.objects.filter(schema_name=settings.TENANT_BASE_SCHEMA).first()
        if template is None:
            # Saving runs the tenant migrations into the new schema (there is nothing to clone yet).
            template = Tenant(schema_name=settings.TENANT_BASE_SCHEMA, name="Template (internal)", ready=False)
            template.save(verbosity=0)
    return template


def platform_schema_names() -> set[str]:
    """The schemas that are no customer's: `public` (the platform host: support staff's admin, health, the
    meet webhook) and the template. They are never suspended or resumed."""
    return {get_public_schema_name(), settings.TENANT_BASE_SCHEMA}


class TenantStateError(ValueError):
    """A tenant cannot be suspended or resumed as asked; the message says why and nothing was changed."""


def tenant_ready_set(*, tenant: Tenant, ready: bool, actor: str) -> bool:
    """Suspend (`ready=False`: its hosts answer 503, its jobs stop) or resume a tenant, written to the tenant's
    audit log in the same transaction as `tenant.suspended` / `tenant.resumed` by `actor`. False when it already
    was so. The platform's own schemas are refused: a suspended public tenant took the admin down with it."""
    from apps.compliance.services import audit_record
    from apps.tenants.selectors import tenant_settings_forget

    if tenant.schema_name in platform_schema_names():
        raise TenantStateError(f"{tenant.schema_name!r} is the platform's own schema: it is never suspended or resumed")
    with schema_context(get_public_schema_name()), transaction.atomic():
        changed = Tenant.objects.filter(pk=tenant.pk, ready=not ready).update(ready=ready)
        if changed:
            with schema_context(tenant.schema_name):
                audit_record(action="tenant.resumed" if ready else "tenant.suspended", actor=actor,
                             object_type="tenant", object_id=tenant.schema_name)
    tenant_settings_forget(tenant.schema_name)  # this process sees the change at once, the others within its TTL
    return bool(changed)


def tenant_create(
    *,
    name: str,
    domain: str,
    schema_name: str | None = None,
    admin_username: str | None = "admin",
    admin_password: str | None = None,
    admin_email: str = "",
    oidc_organization_id: str = "",
) -> tuple[Tenant, str | None]:
    """Create a tenant with its schema, host name and first admin user, all or nothing. With the platform's
    default OIDC provider on (OIDC_ISSUER), `oidc_organization_id` is the tenant's organisation there: without
    it, nobody signs in to the tenant's console until support staff set it (apps.accounts).

    Returns the tenant and the admin password (generated when not given; None without an admin).
    """
    domain = hostname_normalize(domain)
    schema_name = schema_name or schema_name_from_domain(domain)
    template_schema_ensure()
    with schema_context(get_public_schema_name()):
        _validate(name, domain, schema_name, oidc_organization_id.strip())
        password = None
        with transaction.atomic():
            tenant = Tenant(schema_name=schema_name, name=name.strip(), ready=False,
                            oidc_organization_id=oidc_organization_id.strip())
            tenant.save(verbosity=0)  # clones the template schema (CREATE SCHEMA is transactional)
            Domain.objects.create(domain=domain, tenant=tenant, is_primary=True)
            if admin_username:
                password = admin_password or secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)
                with schema_context(schema_name):
                    get_user_model().objects.create_superuser(
                        username=admin_username, email=admin_email, password=password
                    )
            tenant.ready = True
            tenant.save(update_fields=["ready"])
    logger.info("tenant created", extra={"tenant": schema_name, "domain": domain})
    return tenant, password


def _tenant_drive_purge(schema_name: str) -> None:
    from apps.drive.storage import tenant_drive

    drive = tenant_drive(schema_name)
    packages = {entry.key.split("/", 1)[0] for entry in drive.list() if "/" in entry.key}
    for package in packages:
        drive.delete_prefix(package + "/")


def _tenant_data_outside_postgres_purge(schema_name: str, bots: list[str] | None = None) -> list[str]:
    """The drive files and the outside store's vectors of a tenant. Dropping the schema does not reach them,
    and a later tenant may get the same schema name (it comes from the host name): left behind, they would
    become that tenant's bots, scripts and search results. Returns the bot names whose vectors went (`bots`:
    those names, once the schema that lists them is gone)."""
    from apps.bots.models import Bot
    from apps.kb.vectorstores import PgVectorStore, vector_store_for_settings

    _tenant_drive_purge(schema_name)
    store = vector_store_for_settings()
    if isinstance(store, PgVectorStore):  # pgvector rows go with the schema
        return []
    if bots is None:
        with schema_context(schema_name):
            bots = list(Bot.objects.values_list("name", flat=True))
    for bot in bots:
        store.delete_bot(tenant=schema_name, bot=bot)
    return bots


def _tenant_redis_key_prefixes() -> tuple[str, ...]:
    """Raw Redis keys of a tenant beside its Django cache entries: the LLM answer cache and token quota
    (`llm:cache:<schema>:...`, `llm:quota:<schema>:...`) and its rate-limit buckets (`rl:<schema>:...`)."""
    from apps.core.ratelimit import KEY_PREFIX as RATE_LIMIT_PREFIX
    from apps.llm.cache import KEY_PREFIX as CACHE_PREFIX
    from apps.llm.quota import KEY_PREFIX as QUOTA_PREFIX

    return CACHE_PREFIX, QUOTA_PREFIX, RATE_LIMIT_PREFIX


def tenant_redis_patterns(schema_name: str) -> list[str]:
    """The Redis key patterns (SCAN MATCH) of exactly this tenant's keys. Its cache entries are
    `<schema>:<KEY_PREFIX>:<version>:<key>` (django_tenants.cache.make_key): matched with the cache's key
    prefix, so a schema named like a raw prefix never matches another tenant's raw keys. Schema names hold no
    glob characters (SCHEMA_NAME_RE)."""
    from django.core.cache import cache

    from apps.core.ratelimit import KEY_PREFIX as RATE_LIMIT_PREFIX
    from apps.core.ratelimit import PLATFORM_TENANT

    patterns = [f"{schema_name}:{cache.key_prefix}:*"]
    for prefix in _tenant_redis_key_prefixes():
        if prefix == RATE_LIMIT_PREFIX and schema_name == PLATFORM_TENANT:
            continue  # rl:platform:... are the platform-wide limits (a tenant made before the name was reserved)
        patterns.append(f"{prefix}:{schema_name}:*")
    return patterns


def _tenant_redis_purge(schema_name: str) -> int:
    """Delete the tenant's keys in Redis: its cache entries (queued-job marks, stream buffers), LLM answer
    cache, token quota and rate-limit buckets. Left behind, a later tenant given the same schema name would
    start with the old one's quota spent, its cached answers, its clients' rate limits, and marks that hold back
    its drive scans and mail polls."""
    if not settings.REDIS_URL:
        return 0
    from django_redis import get_redis_connection

    from apps.llm.store import redis_delete_matching

    client = get_redis_connection("default")
    return sum(redis_delete_matching(client, pattern) for pattern in tenant_redis_patterns(schema_name))


def _tenant_secrets_purge(schema_name: str) -> None:
    """Delete the tenant's secrets in Vault (its own, its admins', its bots'; apps.core.secrets.
    tenant_secrets_delete). Left behind, a later tenant given the same schema name would resolve them as its own:
    the old tenant's LLM keys, SMTP password and OIDC client secret.

    A failure raises TenantDeleteIncomplete before the schema is dropped, as a failed drive or vector purge
    does: once the tenant row is gone nothing in the platform names those secrets any more, so logging the
    leftover and dropping anyway would leave them for the next tenant of that name to find. The tenant stays
    suspended instead, and deleting it again (once Vault answers) finishes."""
    from apps.core.secrets import SecretDeleteFailed, tenant_secrets_delete

    try:
        deleted = tenant_secrets_delete(schema_name)
    except SecretDeleteFailed as exc:
        logger.error("tenant deletion stopped: its Vault secrets could not be deleted (%s)", exc,
                     extra={"tenant": schema_name})
        raise TenantDeleteIncomplete(
            f"tenant {schema_name!r} was not deleted: {exc}. It stays suspended with all of its data; make Vault "
            "reachable (the platform's policy needs list and delete on the KV metadata of gbo/tenants/* and "
            "gbo/orgs/*) and delete it again"
        ) from exc
    if deleted:
        logger.info("tenant secrets deleted from Vault (%d paths)", len(deleted), extra={"tenant": schema_name})


def tenant_delete(*, schema_name: str) -> None:
    """Drop a tenant and its whole schema (all of its data). Refuses the public and template schemas.

    The tenant stops first (not ready: its hosts answer 503, dispatchers and its queued tasks skip it), so
    little writes while it is purged. Its Vault secrets go first (the outside store most likely to refuse:
    down, sealed, or a policy without delete), then its drive and outside vectors, and only then the schema:
    a failure in any of them raises before the drop (TenantDeleteIncomplete for Vault), leaving the tenant
    suspended with its database so that deleting it again finishes instead of leaving outside data nothing
    names. What was purged before the failure stays purged (a drive purge failing after the secrets went leaves
    a tenant without its secrets): a tenant whose deletion stopped is deleted again, not resumed.
    The drive and outside vectors are purged again after the drop for what a task still running wrote
    meanwhile (the platform never writes to Vault, so its secrets need no second pass), and its Redis keys go
    last."""
    if schema_name in {get_public_schema_name(), settings.TENANT_BASE_SCHEMA}:
        raise TenantProvisioningError(f"schema {schema_name!r} cannot be deleted")
    with schema_context(get_public_schema_name()):
        tenant = Tenant.objects.filter(schema_name=schema_name).first()
        if tenant is None:
            raise TenantProvisioningError(f"no tenant with schema {schema_name!r}")
        Tenant.objects.filter(pk=tenant.pk).update(ready=False)
        _tenant_secrets_purge(schema_name)
        bots = _tenant_data_outside_postgres_purge(schema_name)
        with transaction.atomic():
            tenant.delete(force_drop=True)
        # Again, for what a task still running wrote meanwhile (an indexer committing its last vectors).
        _tenant_data_outside_postgres_purge(schema_name, bots=bots)
        _tenant_redis_purge(schema_name)
    connection.set_schema_to_public()
    logger.info("tenant deleted", extra={"tenant": schema_name})
