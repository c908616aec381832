"""Read-side queries about tenants: which tenant a host name belongs to."""

from __future__ import annotations

from dataclasses import dataclass

from django_tenants.utils import get_public_schema_name, schema_context

from apps.tenants.models import Domain, Tenant

# RFC 1035: a host name is at most 253 characters; anything longer is not a host we serve.
MAX_HOSTNAME_LENGTH = 253


@dataclass(frozen=True)
class TenantRef:
    """What a WebSocket scope or a log line needs of a tenant: small, immutable, safe across threads."""

    id: int
    schema_name: str
    name: str


def hostname_normalize(host: str) -> str:
    """The canonical form of a Host header: no port, lower-case, no trailing root dot.

    `Demo.Localhost.:8000` and `demo.localhost` name the same host; matching them to the same tenant (and
    nothing else) is what DNS does, and it keeps the Domain table free of near-duplicates.
    """
    host = host.strip()
    if host.startswith("["):  # IPv6 literal: "[::1]:8000"
        host = host.split("]", 1)[0] + "]"
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    # Exactly one root dot is the fully qualified form; anything more is malformed and matches nothing.
    return (host[:-1] if host.endswith(".") else host).lower()


def tenant_for_host(host: str) -> Tenant | None:
    """The tenant serving `host` (public included), or None. Always queried in the public schema."""
    hostname = hostname_normalize(host)
    if not hostname or len(hostname) > MAX_HOSTNAME_LENGTH:
        return None
    with schema_context(get_public_schema_name()):
        domain = Domain.objects.select_related("tenant").filter(domain=hostname).first()
    return domain.tenant if domain else None


def tenant_ref(tenant: Tenant) -> TenantRef:
    return TenantRef(id=tenant.pk, schema_name=tenant.schema_name, name=tenant.name)


def tenant_list_ready() -> list[Tenant]:
    """Tenants that serve traffic and run jobs: ready, and not the public or template schema."""
    from django.conf import settings

    with schema_context(get_public_schema_name()):
        return list(
            Tenant.objects.filter(ready=True)
            .exclude(schema_name__in=[get_public_schema_name(), settings.TENANT_BASE_SCHEMA])
            .order_by("schema_name")
        )


# How long a process trusts what it read of a tenant's own settings (support staff's changes show within it).
TENANT_SETTINGS_TTL_S = 30.0
_tenant_settings: dict[str, tuple[float, dict]] = {}


def tenant_settings(schema: str) -> dict:
    """`{"llm_daily_tokens": int | None, "encrypt_messages": bool, "ready": bool}` of the tenant using `schema`,
    cached."""
    import time

    now = time.monotonic()
    cached = _tenant_settings.get(schema)
    if cached and now - cached[0] < TENANT_SETTINGS_TTL_S:
        return cached[1]
    # No schema switch: the tenants table is in `public`, on every tenant's search path, and this runs while
    # a query is being prepared (the sealed message field) where switching schemas would redirect that query.
    row = (Tenant.objects.filter(schema_name=schema).values("llm_daily_tokens", "encrypt_messages", "ready").first()
           or {"llm_daily_tokens": None, "encrypt_messages": False, "ready": False})
    _tenant_settings[schema] = (now, row)
    return row


def tenant_settings_forget(schema: str | None = None) -> None:
    if schema is None:
        _tenant_settings.clear()
    else:
        _tenant_settings.pop(schema, None)


def tenant_is_ready(schema: str) -> bool:
    """Whether the tenant serves and runs jobs. A cached "no" is read again before it is believed: a tenant
    just created or resumed must not wait out the cache."""
    if tenant_settings(schema).get("ready"):
        return True
    tenant_settings_forget(schema)
    return bool(tenant_settings(schema).get("ready"))
