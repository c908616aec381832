"""Mutation check: remove one tenant guard at a time and the attack suite's own probe finds the leak.

Each case below disables a real guard the way a plausible bug or misconfiguration would, plants the
canaries again under the mutation and runs the same probe that tests/security/test_attack_suite.py runs
with the guard in place (and that finds 0 leaks there). A probe that stays silent here could not catch
that class of leak, and this test fails.
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import pytest

from tests.security import probes
from tests.security.probes import committed_world

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _local_storage(local_storage):
    return local_storage


def _cache_key_without_tenant(monkeypatch, settings):
    """I4: the cache's KEY_FUNCTION (django_tenants.cache.make_key) removed from settings.CACHES."""
    caches = copy.deepcopy(settings.CACHES)
    caches["default"].pop("KEY_FUNCTION")
    caches["default"].pop("REVERSE_KEY_FUNCTION", None)
    settings.CACHES = caches  # Django rebuilds its cache handlers in every thread on this change


def _drive_prefix_without_tenant(monkeypatch, settings):
    """I9: the drive root built without the tenant's schema (one folder shared by every tenant)."""
    from apps.drive import storage
    from apps.drive.backends import LocalDrive

    monkeypatch.setattr(storage, "tenant_drive",
                        lambda schema_name=None: LocalDrive(Path(settings.MEDIA_ROOT) / "tenants"))


def _s3_prefix_without_tenant(monkeypatch, settings):
    """I9 on S3: the tenant's key prefix reduced to the shared `tenants/` folder."""
    from apps.drive import storage
    from apps.drive.backends import S3Drive

    monkeypatch.setattr(storage, "tenant_drive", lambda schema_name=None: S3Drive(
        bucket=settings.S3_BUCKET, prefix=settings.S3_TENANT_PREFIX, endpoint_url=settings.S3_ENDPOINT_URL,
        access_key=settings.S3_ACCESS_KEY, secret_key=settings.S3_SECRET_KEY, region=settings.S3_REGION))


def _group_name_without_tenant(monkeypatch, settings):
    """I5: the chat session's channel-layer group named by the session id only."""
    from apps.sessions import events

    monkeypatch.setattr(events, "session_group", lambda schema, session_id: f"chat.{session_id}".replace("-", ""))


def _qdrant_filter_without_tenant(monkeypatch, settings):
    """I8: the one Qdrant scope filter losing its tenant condition."""
    from apps.kb import vectorstores

    original = vectorstores._scope_filter

    def without_tenant(**kwargs):
        scope = original(**kwargs)
        scope.must = [condition for condition in scope.must if getattr(condition, "key", "") != "tenant"]
        return scope

    monkeypatch.setattr(vectorstores, "_scope_filter", without_tenant)


def _forwarded_host_trusted(monkeypatch, settings):
    """I2: X-Forwarded-Host trusted without a proxy in front (USE_X_FORWARDED_HOST on)."""
    settings.USE_X_FORWARDED_HOST = True


def _chat_run_without_schema(monkeypatch, settings):
    """I6: the chat consumers' database calls run without switching to the socket's tenant schema."""
    from asgiref.sync import sync_to_async

    from apps.sessions import consumers

    async def chat_run(schema, fn, *args, **kwargs):
        return await sync_to_async(lambda: fn(*args, **kwargs), thread_sensitive=False,
                                   executor=consumers._executor)()

    monkeypatch.setattr(consumers, "chat_run", chat_run)


MUTATIONS = {
    "cache-key-function": (_cache_key_without_tenant, probes.cache_probe),
    "drive-tenant-prefix": (_drive_prefix_without_tenant, probes.drive_probe),
    "s3-tenant-prefix": (_s3_prefix_without_tenant, probes.drive_probe),
    "chat-group-name": (_group_name_without_tenant, lambda world: asyncio.run(probes.ws_probe(world)).leaks),
    "qdrant-tenant-filter": (_qdrant_filter_without_tenant, probes.vector_probe),
    "forwarded-host": (_forwarded_host_trusted, probes.host_probe),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_the_probe_finds_a_leak_once_the_guard_is_removed(canary_tenants, monkeypatch, settings, name, request):
    mutate, probe = MUTATIONS[name]
    if name.startswith("s3-"):
        request.getfixturevalue("s3_settings")
    mutate(monkeypatch, settings)
    with committed_world(canary_tenants) as world:
        leaks = probe(world)
    assert leaks, f"guard {name!r} removed, yet the probe found no foreign canary"
    assert all(world.b.canary in leak for leak in leaks)


@pytest.mark.parametrize("store", ["PgVectorStore", "QdrantStore"])
def test_the_vector_probe_says_it_is_broken_when_its_searches_find_nothing(canary_tenants, monkeypatch, store):
    """A vector search that returns nothing shows no foreign canary whatever the guards do: the probe must
    notice that it did not even find A's own passage."""
    from apps.kb import vectorstores

    monkeypatch.setattr(getattr(vectorstores, store), "search", lambda self, **kwargs: [])
    with committed_world(canary_tenants) as world:
        leaks = probes.vector_probe(world)
    backend = "pgvector" if store == "PgVectorStore" else "qdrant"
    assert f"{backend} probe did not find A's own passage: the probe is broken" in leaks


def test_interleaved_sockets_show_mismatches_once_consumers_skip_the_schema_switch(canary_tenants, monkeypatch,
                                                                                   settings):
    """I6 detects by mismatch rather than by canary: without the switch a turn reads whatever schema its
    database thread was left in (public here: the socket fails instead of answering from its tenant)."""
    _chat_run_without_schema(monkeypatch, settings)
    with committed_world(canary_tenants) as world:
        assert asyncio.run(probes.ws_interleaved_mismatches(world, rounds=2)) > 0
