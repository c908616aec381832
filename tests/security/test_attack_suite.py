"""Tenant-isolation attack suite (test plan §3.1, I1-I9 and I11): attacks from tenant A on tenant B's data.

Both tenants hold the same objects under the same ids (sessions, users, documents, rooms, cache keys, drive
keys), each marked with a canary unique to the run and the tenant (tests/security/probes.py). An attack
succeeds when any of B's canaries reaches A: a response body or header, a WebSocket frame, a task result,
a cache read, a drive read, a vector hit. Each probe reports such leaks; tests/security/test_mutations.py
removes one guard at a time and shows the same probe then finds a leak, so a pass here means something.

Already covered elsewhere and not repeated: unknown, malformed and public hosts and X-Forwarded-Host on
anonymous requests (tests/tenants/test_http_isolation.py), header-less and public-schema Celery messages
refused (tests/tenants/test_celery_isolation.py), interleaved probe-consumer schemas and foreign WebSocket
origins (tests/tenants/test_ws_isolation.py), per-tenant vector-store conformance (tests/kb/test_vectorstores.py).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django_tenants.utils import schema_context

from tests.security import probes
from tests.security.probes import COLLIDING_SESSION, committed_world
from tests.tenants.test_celery_isolation import RESULT_TIMEOUT_S, worker  # noqa: F401 - the shared worker

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _local_storage(local_storage):
    return local_storage


@pytest.fixture
def world(canary_tenants):
    with committed_world(canary_tenants) as planted:
        yield planted


# --- I1: colliding primary keys, every URL pattern with an object id --------------------------------


def test_tenant_urlconf_is_enumerated_with_every_object_route(canary_tenants):
    routes, others = probes.tenant_routes()
    names = {route.name for route in routes}
    assert {"chat-messages", "chat-history", "chat-stream", "chat-page", "chat-embed", "meet-room-api",
            "meet-room-token-api", "meet-room"} <= names
    assert others == [], "a regex URL pattern needs its own attack values in probes._values"


def test_i1_b_objects_requested_from_a_through_every_object_url_leak_nothing(world, caplog):
    with caplog.at_level("INFO"):
        report = probes.http_probe(world)
    assert world.b.canary not in caplog.text  # nor in any log line written while serving A
    routes, _ = probes.tenant_routes()
    print(f"I1: {report.requests} attack requests over {len(routes)} object routes, {len(report.leaks)} "
          f"foreign canaries found, {report.own_canary_seen} responses served A's own colliding objects")
    assert report.leaks == []
    # The URLs reach real objects: A's colliding session, room and bot are served from A's schema.
    assert report.own_canary_seen >= 4
    assert report.requests >= 100
    assert report.server_errors == []


# --- I2: host header spoofing with a signed-in cookie ---------------------------------------------


def test_i2_a_signed_in_cookie_with_b_host_spellings_or_proxy_headers_reaches_nothing_of_b(world):
    assert probes.host_probe(world) == []


# --- I3: session cookie scope --------------------------------------------------------------------


def test_i3_session_cookie_is_host_only_and_a_logged_out_cookie_is_dead_on_both_tenants(canary_tenants):
    a, b = canary_tenants.a, canary_tenants.b
    client = Client(HTTP_HOST=a.host)
    response = client.post("/accounts/login/", {"username": "admin", "password": a.admin_password})
    cookie = response.cookies[settings.SESSION_COOKIE_NAME]
    assert cookie["domain"] == "" and cookie["httponly"]  # host-only: the browser never sends it to B
    stolen = cookie.value
    assert client.get("/console/").status_code == 200
    client.post("/accounts/logout/")
    for host in (a.host, b.host):
        replay = Client(HTTP_HOST=host)
        replay.cookies[settings.SESSION_COOKIE_NAME] = stolen
        response = replay.get("/console/")
        assert response.status_code == 302 and "/accounts/login/" in response["Location"], host


# --- I4: cache -------------------------------------------------------------------------------------


def test_i4_the_same_cache_key_in_both_tenants_is_two_entries(world):
    assert probes.cache_probe(world) == []
    with schema_context(world.a.schema):
        from django.core.cache import cache

        assert cache.get(probes.CACHE_KEY) == world.a.canary


def test_i4_no_view_caches_whole_pages(canary_tenants):
    """cache_page keys ignore the tenant (django-tenants#599): no tenant view may use it."""
    from django.urls import get_resolver

    cached = []

    def walk(patterns):
        for entry in patterns:
            if hasattr(entry, "url_patterns"):
                walk(entry.url_patterns)
            elif "cache_page" in repr(getattr(entry.callback, "__wrapped__", None)) or hasattr(
                    entry.callback, "cache_timeout"):
                cached.append(str(entry.pattern))

    walk(get_resolver(settings.ROOT_URLCONF).url_patterns)
    assert cached == []


# --- I5 / I6: WebSockets ----------------------------------------------------------------------------


def test_i5_b_sessions_and_b_group_events_never_reach_a_websocket(world):
    report = asyncio.run(probes.ws_probe(world))
    assert report.leaks == []
    assert report.own_canary_seen >= 2  # the colliding session replays A's own messages


def test_i5_a_chat_token_minted_by_b_opens_no_htmx_chat_socket_on_a(world):
    """The HTMX chat's socket token is bound to tenant, bot and session: B's token for the colliding session
    (even for a bot of the same name as A's) is refused on A's host, A's own token is accepted."""
    from apps.sessions.views_web import chat_ws_token

    def token(schema: str) -> str:
        return chat_ws_token(tenant_schema=schema, bot_name=world.a.bot_name, session_id=str(COLLIDING_SESSION))

    async def attempt(token_value: str) -> tuple[bool, str]:
        communicator = probes._ws(world.a.host, f"/ws/{world.a.bot_name}/ui?session_id={COLLIDING_SESSION}"
                                                f"&token={token_value}")
        connected, _code = await communicator.connect()
        frames = await probes._frames(communicator, wait=0.3) if connected else [f"<close {_code}>"]
        await probes._close(communicator)
        return frames

    # Refused: closed with 4403 and nothing sent before (the test communicator may report the handshake as
    # open when the close follows it at once; a browser sees no message either way).
    assert asyncio.run(attempt(token(world.b.schema))) == ["<close 4403>"]
    assert "<close 4403>" not in asyncio.run(attempt(token(world.a.schema)))


def test_i6_interleaved_chat_sockets_of_both_tenants_each_replay_their_own_schema(world):
    assert asyncio.run(probes.ws_interleaved_mismatches(world)) == 0


# --- I7: Celery ------------------------------------------------------------------------------------


def test_i7_tasks_alpha_beta_alpha_in_one_worker_each_run_in_their_own_schema(canary_tenants, worker):  # noqa: F811
    from tests.tenants.celery_probe import read_canary_bot

    a, b = canary_tenants.a, canary_tenants.b
    results = []
    for tenant in (a, b, a, b, a):
        with schema_context(tenant.schema_name):
            results.append((tenant, read_canary_bot.delay()))
    for tenant, result in results:
        assert result.get(timeout=RESULT_TIMEOUT_S) == {"bot": tenant.canary, "schema": tenant.schema_name}


def test_i7_beat_cron_of_alpha_fires_zero_times_for_beta(canary_tenants, monkeypatch):
    from tests.automation.conftest import deploy, outside_test_transaction, schedule_of

    @outside_test_transaction
    def body(canary_tenants):
        from apps.automation import tasks
        from apps.automation.services import schedules_tick

        queued = []
        monkeypatch.setattr(tasks.schedule_run_task, "apply_async",
                            lambda kwargs, **options: queued.append((connection.schema_name, kwargs["schedule_id"])))
        a, b = canary_tenants.a.schema_name, canary_tenants.b.schema_name
        schedule = schedule_of(a, deploy(a, "at-isolation", 'SET SCHEDULE "every minute"\nTALK "x"\n'))
        report = schedules_tick(now=schedule.next_run_at + timedelta(seconds=2))
        assert (a, schedule.pk) in report.fired
        assert [fired for fired in report.fired if fired[0] == b] == []
        assert queued == [(a, schedule.pk)]

    body(canary_tenants=canary_tenants)


# --- I8: vector store ----------------------------------------------------------------------------


def test_i8_vector_searches_from_a_return_no_b_passage(world):
    assert probes.vector_probe(world) == []


# --- I9: drive keys ----------------------------------------------------------------------------------


def test_i9_drive_keys_naming_b_are_refused_or_resolved_inside_a(world):
    from apps.drive.backends import DriveKeyError
    from apps.drive.storage import tenant_drive

    assert probes.drive_probe(world) == []
    with schema_context(world.a.schema):
        drive = tenant_drive()
        refused = 0
        for key in probes.drive_attack_keys(world):
            try:
                drive.read(key)
            except DriveKeyError:
                refused += 1
            except FileNotFoundError:
                pass  # a valid key, looked up under A's own root
        assert drive.read(probes.DRIVE_KEY) == world.a.canary.encode()
    assert refused >= 8


def test_i9_on_s3_drive_keys_naming_b_read_nothing_of_b(canary_tenants, s3_settings):
    with committed_world(canary_tenants) as planted:
        assert probes.drive_probe(planted) == []
        from apps.drive.storage import tenant_drive

        with schema_context(planted.a.schema):
            assert tenant_drive().read(probes.DRIVE_KEY) == planted.a.canary.encode()


# --- I11: public schema hygiene ------------------------------------------------------------------


def test_i11_public_schema_holds_no_tenant_only_table_and_unknown_hosts_never_fall_back_to_it(canary_tenants):
    from django.apps import apps

    tenant_only = [config for config in apps.get_app_configs()
                   if config.name in settings.TENANT_APPS and config.name not in settings.SHARED_APPS]
    tables = {model._meta.db_table for config in tenant_only for model in config.get_models()}
    assert len(tables) > 20
    with connection.cursor() as cursor:
        cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        public = {row[0] for row in cursor.fetchall()}
    assert tables & public == set()
    assert not getattr(settings, "SHOW_PUBLIC_IF_NO_TENANT_FOUND", False)
    assert not getattr(settings, "DEFAULT_NOT_FOUND_TENANT_VIEW", None)
