"""Named PostgreSQL advisory locks scoped to the current tenant: "one at a time per tenant" for any process.

`tenant_lock_try`: a session-level lock, tried; it dies with the connection, so a worker killed mid-way never
leaves one behind. `tenant_xact_lock`: a transaction-level lock, waited for and held until the caller's
transaction ends (commit or rollback). The tenant's schema is part of the name, so tenants never wait for each
other. Names hash to 64 bits
(`hashtextextended`): with 32 (`hashtext`) two names collide among a few tens of thousands, and the holder of
one made the other's work skip as "busy" (a mail never sent, a scan skipped), across tenants too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import connection

from apps.core.memo import in_open_transaction


def _key(name: str) -> str:
    return f"{connection.schema_name}:{name}"


@contextlib.contextmanager
def tenant_lock_try(name: str) -> Iterator[bool]:
    """Yield True holding the lock `name` of the current tenant, or False at once if another holds it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [_key(name)])
        acquired = bool(cursor.fetchone()[0])
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [_key(name)])


def tenant_xact_lock(name: str, *, key_format: str = "{schema}:{name}") -> None:
    """Wait for the lock `name` of the current tenant, then hold it until the current transaction ends: the
    transactions that take it run one at a time per tenant. Must be called inside a transaction the caller
    opened (`transaction.atomic`), else RuntimeError: outside one the lock would be released at once (a test
    case's own wrapping transaction does not count: it would hide the mistake until production).

    `key_format` spells the key (`{schema}` and `{name}`, the schema required): for a lock whose key predates
    `<schema>:<name>`, whose text must stay as it was so that processes of the previous version, during a
    rolling deploy, still exclude these."""
    if not in_open_transaction():
        raise RuntimeError(f"tenant_xact_lock({name!r}) outside a transaction would release at once: "
                           "call it inside transaction.atomic")
    if "{schema}" not in key_format:
        raise ValueError(f"lock key format {key_format!r} does not name the tenant's schema")
    key = key_format.format(schema=connection.schema_name, name=name)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [key])
