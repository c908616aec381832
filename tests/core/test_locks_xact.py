"""apps.core.locks.tenant_xact_lock: one transaction at a time per tenant and name, never across tenants, and
only inside a transaction.

The holders run in threads, each on its own connection: the test's connection sits in the test case's wrapping
transaction, which never commits, so a lock it took would be held until the test ends."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date

import pytest
from django.db import connection, connections, transaction
from django_tenants.utils import schema_context

from apps.analytics.services import _recompute_chunk
from apps.bots.models import Bot
from apps.bots.services import _schedules_lock, bot_table_lock
from apps.core.locks import tenant_xact_lock

pytestmark = pytest.mark.django_db

WAIT_S = 30


def _key_free(schema: str, key: str) -> bool:
    """Whether another connection could take the transaction lock of `key` now (taken and released at once)."""
    free: list[bool] = []

    def probe() -> None:
        try:
            with schema_context(schema), transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", [key])
                free.append(bool(cursor.fetchone()[0]))
        finally:
            connections.close_all()

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join(WAIT_S)
    assert len(free) == 1, "the probe did not answer"
    return free[0]


class _Holder:
    """A thread that takes a lock in its own transaction and holds it until `release()`, then commits."""

    def __init__(self, schema: str, take: Callable[[], None]) -> None:
        self.held, self._release, self.errors = threading.Event(), threading.Event(), []
        self._thread = threading.Thread(target=self._run, args=(schema, take))

    def _run(self, schema: str, take: Callable[[], None]) -> None:
        try:
            with schema_context(schema), transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL lock_timeout = %s", [f"{WAIT_S}s"])  # a failing test never hangs
                take()
                self.held.set()
                self._release.wait(WAIT_S)
        except Exception as exc:
            self.errors.append(exc)
        finally:
            connections.close_all()

    def __enter__(self) -> _Holder:
        self._thread.start()
        return self

    def release(self) -> None:
        self._release.set()
        self._thread.join(WAIT_S)

    def __exit__(self, *exc_info: object) -> None:
        self.release()
        assert not self.errors


def test_a_second_transaction_of_the_tenant_waits_for_the_first(canary_tenants):
    schema = canary_tenants.a.schema_name
    with _Holder(schema, lambda: tenant_xact_lock("job")) as first:
        assert first.held.wait(WAIT_S)
        assert not _key_free(schema, f"{schema}:job")  # the key is `<schema>:<name>`, as tenant_lock_try's
        with _Holder(schema, lambda: tenant_xact_lock("job")) as second:
            assert not second.held.wait(1)  # blocked while the first transaction is open
            first.release()  # its transaction commits: the lock goes with it
            assert second.held.wait(WAIT_S)
        assert not first.errors
    assert _key_free(schema, f"{schema}:job")  # both transactions ended: nothing left behind


def test_two_tenants_do_not_wait_for_each_other(canary_tenants):
    a, b = canary_tenants.a.schema_name, canary_tenants.b.schema_name
    with _Holder(a, lambda: tenant_xact_lock("job")) as first:
        assert first.held.wait(WAIT_S)
        with _Holder(b, lambda: tenant_xact_lock("job")) as other_tenant:
            assert other_tenant.held.wait(WAIT_S)  # while tenant A's is still held
            assert not _key_free(b, f"{b}:job")


def test_outside_a_transaction_it_refuses(canary_tenants):
    """The test case's wrapping transaction is open here, yet the call is refused: in production the same code
    would run in autocommit and the lock would be gone at once."""
    with schema_context(canary_tenants.a.schema_name):
        with pytest.raises(RuntimeError, match="outside a transaction"):
            tenant_xact_lock("job-outside")
        with transaction.atomic():
            tenant_xact_lock("job-inside")  # held until the test's own transaction ends: a name of this test only


@pytest.mark.parametrize(("take", "key"), [
    (lambda bot_pk: _schedules_lock(), "bots.schedules:{schema}"),
    (lambda bot_pk: bot_table_lock(Bot(pk=bot_pk), "orders.csv"), "bot-table:{schema}:{bot_pk}:orders.csv"),
    # A recompute of a day long before any message: it replaces nothing, inside the holder's transaction.
    (lambda bot_pk: _recompute_chunk(date(2000, 1, 1), date(2000, 1, 1)), "analytics:{schema}"),
], ids=["schedules", "bot-table", "analytics"])
def test_the_older_locks_keep_their_key_text(canary_tenants, take, key):
    """A process of the previous version, during a rolling deploy, takes these keys as it always spelled them."""
    schema, bot_pk = canary_tenants.a.schema_name, canary_tenants.a.bot_pk
    with _Holder(schema, lambda: take(bot_pk)) as holder:
        assert holder.held.wait(WAIT_S)
        assert not _key_free(schema, key.format(schema=schema, bot_pk=bot_pk))


def test_a_key_format_without_the_schema_is_refused(canary_tenants):
    with (schema_context(canary_tenants.a.schema_name), transaction.atomic(),
          pytest.raises(ValueError, match="schema")):
        tenant_xact_lock("analytics", key_format="{name}")
