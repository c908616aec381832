"""apps.core.locks: named advisory locks per tenant, distinct for distinct names."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections
from django_tenants.utils import schema_context

from apps.core.locks import tenant_lock_try

pytestmark = pytest.mark.django_db


def _names_sharing_a_32_bit_hash(schema: str) -> tuple[str, str]:
    """Two lock names of `schema` whose keys collide under PostgreSQL's 32-bit hashtext (a birthday search)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT array_agg(g ORDER BY g) FROM generate_series(1, 300000) AS g "
            "GROUP BY hashtext(%s || g::text) HAVING count(*) > 1 LIMIT 1", [f"{schema}:job-"])
        first, second = cursor.fetchone()[0][:2]
    return f"job-{first}", f"job-{second}"


def test_two_names_whose_32_bit_hashes_collide_are_two_locks(canary_tenants):
    schema = canary_tenants.a.schema_name
    one, other = _names_sharing_a_32_bit_hash(schema)
    got: list[bool] = []

    def other_process() -> None:
        try:
            with schema_context(schema), tenant_lock_try(other) as held:
                got.append(held)
        finally:
            connections.close_all()

    with schema_context(schema), tenant_lock_try(one) as held:
        assert held
        thread = threading.Thread(target=other_process)
        thread.start()
        thread.join(30)
    assert got == [True]  # with hashtext the second name was "busy" while the first was held
