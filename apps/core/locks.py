"""Named PostgreSQL advisory locks scoped to the current tenant: "one at a time per tenant" for any process.

Session-level locks: they die with the connection, so a worker killed mid-way never leaves one behind.
The tenant's schema is part of the name, so tenants never wait for each other. Names hash to 64 bits
(`hashtextextended`): with 32 (`hashtext`) two names collide among a few tens of thousands, and the holder of
one made the other's work skip as "busy" (a mail never sent, a scan skipped), across tenants too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import connection


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
