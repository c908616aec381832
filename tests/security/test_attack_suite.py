"""Tenant-isolation attack suite (test plan §3.1, I1-I13): attacks from tenant A on tenant B's data.

Both tenants hold the same objects under the same ids (sessions, users, documents, rooms, cache keys, drive
keys), each marked with a canary unique to the run and the tenant (tests/security/probes.py). An attack
succeeds when any of B's canaries reaches A: a response body or header, a WebSocket frame, a task result,
a cache read, a drive read, a vector hit. Each probe reports such leaks; tests/security/test_mutations.py
removes one guard at a time and shows the same probe then finds a leak, so a pass here means something.

I10 (console sign-in) runs real code flows at the real OpenID providers of tests/accounts, as B's users and
users without a role for A; I12 exports and erases a user whose ids, address, sessions, mail, documents and
earlier export all collide with a user of B; I13 bursts on A's rate limits and then asks B from the same
address (each tenant's quota is its own, and the platform-wide per-IP bucket counts both). On the platform
default OIDC provider, each tenant is bound to its own organisation there (B's admin is refused on A).

Already covered elsewhere and not repeated: unknown, malformed and public hosts and X-Forwarded-Host on
anonymous requests (tests/tenants/test_http_isolation.py), header-less and public-schema Celery messages
refused (tests/tenants/test_celery_isolation.py), interleaved probe-consumer schemas and foreign WebSocket
origins (tests/tenants/test_ws_isolation.py), per-tenant vector-store conformance (tests/kb/test_vectorstores.py).
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils import timezone
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


def _caches_pages(view) -> bool:
    """Whether a view (through every decorator) runs Django's cache middleware, as cache_page wraps it."""
    from django.middleware.cache import CacheMiddleware, UpdateCacheMiddleware

    def holds_cache(function, depth: int) -> bool:  # the middleware sits in closures of the wrapper's helpers
        for cell in getattr(function, "__closure__", None) or ():
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if isinstance(contents, (CacheMiddleware, UpdateCacheMiddleware)):
                return True
            if depth and callable(contents) and holds_cache(contents, depth - 1):
                return True
        return False

    while view is not None:
        if holds_cache(view, 2):
            return True
        view = getattr(view, "__wrapped__", None)
    return False


def test_i4_no_view_caches_whole_pages(canary_tenants):
    """cache_page keys ignore the tenant (django-tenants#599): no tenant view may use it."""
    from django.http import HttpResponse
    from django.urls import get_resolver
    from django.views.decorators.cache import cache_page
    from django.views.decorators.http import require_GET

    def page(request):
        return HttpResponse("x")

    # The check sees cache_page under other decorators (else this test could not fail).
    assert _caches_pages(require_GET(cache_page(60)(page))) and not _caches_pages(require_GET(page))
    cached, seen = [], 0

    def walk(patterns):
        nonlocal seen
        for entry in patterns:
            if hasattr(entry, "url_patterns"):
                walk(entry.url_patterns)
            else:
                seen += 1
                if _caches_pages(entry.callback):
                    cached.append(str(entry.pattern))

    walk(get_resolver(settings.ROOT_URLCONF).url_patterns)
    assert seen > 50 and cached == []


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

    # Refused: closed with 4403 and nothing sent before (the test communicator may report the handshake as
    # open when the close follows it at once; a browser sees no message either way).
    assert asyncio.run(_ui_socket_frames(world, token(world.b.schema))) == ["<close 4403>"]
    assert "<close 4403>" not in asyncio.run(_ui_socket_frames(world, token(world.a.schema)))


async def _ui_socket_frames(world, token: str) -> list[str]:
    """What A's HTMX chat socket sends for the colliding session with `token` ("<close N>" when refused)."""
    communicator = probes._ws(world.a.host, f"/ws/{world.a.bot_name}/ui?session_id={COLLIDING_SESSION}"
                                            f"&token={token}")
    connected, code = await communicator.connect()
    frames = await probes._frames(communicator, wait=0.3) if connected else [f"<close {code}>"]
    await probes._close(communicator)
    return frames


def test_i5_an_expired_htmx_chat_token_opens_nothing_and_tells_the_page_to_reload(world, monkeypatch):
    """A token leaked from a socket URL (a proxy's log) opens the conversation for a day, not for ever; the
    close code (4401) tells a page left open that long to reload for a fresh one."""
    import time

    from django.core import signing

    from apps.sessions.views_web import CHAT_WS_TOKEN_MAX_AGE_S, chat_ws_token

    with monkeypatch.context() as patched:
        patched.setattr(signing.TimestampSigner, "timestamp",
                        lambda self: signing.b62_encode(int(time.time()) - CHAT_WS_TOKEN_MAX_AGE_S - 60))
        expired = chat_ws_token(tenant_schema=world.a.schema, bot_name=world.a.bot_name,
                                session_id=str(COLLIDING_SESSION))

    assert asyncio.run(_ui_socket_frames(world, expired)) == ["<close 4401>"]


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


def test_i7_beat_cron_of_alpha_fires_zero_times_for_beta(canary_tenants, worker):  # noqa: F811
    """The tick claims A's due schedule and the real worker runs its job off the real broker, in A. B holds a
    schedule with the same id (not due): a job that ran in B's schema would run B's script there."""
    import time

    from tests.automation.conftest import (
        deploy,
        outside_test_transaction,
        runs,
        schedule_of,
        schedules_align_ids,
        wait_for,
    )

    @outside_test_transaction
    def body(canary_tenants):
        from apps.automation.models import JobRun
        from apps.automation.services import schedules_tick
        from apps.bots.models import BotSchedule
        from apps.tenants.models import ScheduleIndex

        a, b = canary_tenants.a, canary_tenants.b
        schedules_align_ids(a.schema_name, b.schema_name)
        source = 'SET SCHEDULE "every minute"\nTALK "I am " + BOT.name\n'
        in_a = schedule_of(a.schema_name, deploy(a.schema_name, "at-isolation", source))
        in_b = schedule_of(b.schema_name, deploy(b.schema_name, "at-isolation", source))
        assert in_a.pk == in_b.pk  # only the tenant tells them apart
        not_due = in_a.next_run_at + timedelta(days=365)
        with schema_context(b.schema_name):
            BotSchedule.objects.filter(pk=in_b.pk).update(next_run_at=not_due)
        with schema_context("public"):
            assert ScheduleIndex.objects.filter(tenant__schema_name=b.schema_name, schedule_id=in_b.pk).update(
                next_run_at=not_due) == 1
        report = schedules_tick(now=in_a.next_run_at + timedelta(seconds=2))
        assert (a.schema_name, in_a.pk) in report.fired
        assert [fired for fired in report.fired if fired[0] == b.schema_name] == []
        assert wait_for(lambda: runs(a.schema_name, script_name="at-isolation", status=JobRun.Status.OK),
                        timeout=RESULT_TIMEOUT_S), (runs(a.schema_name, script_name="at-isolation"),
                                                    runs(b.schema_name, script_name="at-isolation"))
        time.sleep(1)  # a job also run in B (or twice) would show now
        [run_a] = runs(a.schema_name, script_name="at-isolation")
        assert run_a.output == f"I am {a.canary}"
        assert runs(b.schema_name, script_name="at-isolation") == []

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


# --- I10: admin console sign-in through OIDC -------------------------------------------------------


def _console_accounts(schema: str) -> tuple[int, int]:
    """(user rows, console profiles) of a tenant: what a sign-in would auto-create."""
    from django.contrib.auth import get_user_model

    from apps.accounts.models import ConsoleProfile

    with schema_context(schema):
        return get_user_model().objects.count(), ConsoleProfile.objects.count()


def _query(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).query


def test_i10_b_users_and_users_without_a_role_for_a_complete_an_oidc_login_on_a_and_are_denied(
        canary_tenants, provider, other_provider, vault_server, vault_settings, oidc_fresh):
    """Tenant A signs in through its provider, for its organisation only; tenant B through its own issuer.
    Each attack completes a real code flow at a real provider and ends on A's callback; each must be refused
    by the guard named with it (not by an accident of the test), and leave no user row in A."""
    import html

    from tests.accounts.conftest import (
        ACCOUNTS,
        CLIENT_ID,
        CLIENT_SECRET,
        ORG_CLAIM,
        authorization_params,
        oidc_configure,
        sign_in_start,
    )
    from tests.support.oidc import ProviderBrowser

    a, b = canary_tenants.a, canary_tenants.b
    oidc_configure(a, issuer=provider.issuer, vault_server=vault_server, organization_id="org-acme")
    oidc_configure(b, issuer=other_provider.issuer, vault_server=vault_server)
    provider.account_set("nora-norole", {**ACCOUNTS["nora-norole"], ORG_CLAIM: "org-acme"})  # A's org, no role
    callback = f"http://{a.host}/accounts/oidc/callback/"
    before = _console_accounts(a.schema_name)
    attempts: dict[str, tuple[Client, object, tuple[str, ...]]] = {}

    # An admin of organisation B at A's own provider (a real admin role, the wrong organisation).
    client = Client(HTTP_HOST=a.host)
    back = ProviderBrowser(provider).authorize(sign_in_start(client), sub="otto-otherorg")
    attempts["org B admin at A's provider"] = client, client.get(back), ("belongs to another organisation",)
    # A member of A's organisation whose provider roles map to no console role of A.
    client = Client(HTTP_HOST=a.host)
    back = ProviderBrowser(provider).authorize(sign_in_start(client), sub="nora-norole")
    attempts["no role for A"] = client, client.get(back), ("no console role for this tenant",)
    # B's admin completes a sign-in on B's host; the callback (code, state) is replayed on A's host by a
    # browser with a sign-in of its own pending on A, then with B's session cookie copied over as well.
    b_client = Client(HTTP_HOST=b.host)
    b_back = ProviderBrowser(other_provider).authorize(sign_in_start(b_client), sub="otto-otherorg")
    not_started = ("not started in this browser",)
    client = Client(HTTP_HOST=a.host)
    sign_in_start(client)
    attempts["B's callback on A"] = client, client.get("/accounts/oidc/callback/?" + _query(b_back)), not_started
    client = Client(HTTP_HOST=a.host)
    client.cookies[settings.SESSION_COOKIE_NAME] = b_client.cookies[settings.SESSION_COOKIE_NAME].value
    attempts["B's callback and cookie on A"] = (client, client.get("/accounts/oidc/callback/?" + _query(b_back)),
                                                not_started)
    # Mix-up: A's authorization request (A's state, nonce and PKCE) completed at B's issuer as B's admin.
    client = Client(HTTP_HOST=a.host)
    start = sign_in_start(client)
    back = ProviderBrowser(other_provider).authorize(f"{other_provider.issuer}/auth?{_query(start)}",
                                                     sub="otto-otherorg")
    attempts["A's request completed at B's issuer"] = (client, client.get(back),
                                                       ("another provider than this sign-in's (iss)", "invalid_grant"))
    # B's ID token (B's issuer and key, B's admin, A's nonce) handed out by A's token endpoint.
    client = Client(HTTP_HOST=a.host)
    start = sign_in_start(client)
    provider.id_token_override(ProviderBrowser(other_provider).id_token_for(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_uri=callback,
        nonce=authorization_params(start)["nonce"], sub="otto-otherorg"))
    back = ProviderBrowser(provider).authorize(start, sub="alice-admin")
    attempts["B's ID token in A's token response"] = (client, client.get(back),
                                                      ("not in the issuer's key set",))

    admitted, unexplained = [], []
    for name, (client, response, reasons) in attempts.items():
        if response.status_code not in (400, 403) or client.get("/console/").status_code != 302:
            admitted.append(f"{name}: {response.status_code}")
        elif not any(reason in html.unescape(response.content.decode()) for reason in reasons):
            unexplained.append(f"{name}: {html.unescape(response.content.decode())[-600:]}")
    created = tuple(after - was for after, was in zip(_console_accounts(a.schema_name), before, strict=True))
    print(f"I10: {len(attempts)} OIDC sign-ins on A by B's users or users without a role for A, "
          f"{len(admitted)} admitted, {created[0]} user rows and {created[1]} console profiles created in A")
    assert admitted == []
    assert created == (0, 0)
    assert unexplained == [], "refused, but not by the guard the attack aims at"
    # The flow itself works: A's own admin signs in, and that creates exactly one user.
    client = Client(HTTP_HOST=a.host)
    back = ProviderBrowser(provider).authorize(sign_in_start(client), sub="alice-admin")
    assert client.get(back).status_code == 302 and client.get("/console/").status_code == 200
    assert _console_accounts(a.schema_name) == (before[0] + 1, before[1] + 1)


def test_i10_on_the_platform_default_provider_b_organisations_admin_is_denied_on_a(
        canary_tenants, provider, settings, oidc_fresh):
    """The platform default provider (settings OIDC_*) is shared by A and B, each bound to its own organisation
    there: B's admin completes a real code flow on A's console and is refused by the organisation check,
    creating nothing in A; a tenant bound to no organisation refuses even A's admin."""
    from tests.accounts.conftest import (
        CLIENT_ID,
        CLIENT_SECRET,
        ORG_ACME,
        ORG_OTHER,
        sign_in_start,
        tenant_organization_bind,
    )
    from tests.support.oidc import ProviderBrowser

    a, b = canary_tenants.a, canary_tenants.b
    settings.OIDC_ISSUER, settings.OIDC_CLIENT_ID, settings.OIDC_CLIENT_SECRET = provider.issuer, CLIENT_ID, \
        CLIENT_SECRET
    tenant_organization_bind(a.schema_name, ORG_ACME)
    tenant_organization_bind(b.schema_name, ORG_OTHER)
    before = _console_accounts(a.schema_name)
    client = Client(HTTP_HOST=a.host)
    # otto is an admin of organisation "org-other" (B's) and of nothing in A's.
    response = client.get(ProviderBrowser(provider).authorize(sign_in_start(client), sub="otto-otherorg"))
    assert response.status_code == 403
    assert "belongs to another organisation" in response.content.decode()
    assert client.get("/console/").status_code == 302
    assert _console_accounts(a.schema_name) == before
    # The same admin is B's: admitted on B (the refusal on A is the organisation, not the account).
    client = Client(HTTP_HOST=b.host)
    assert client.get(ProviderBrowser(provider).authorize(sign_in_start(client), sub="otto-otherorg")).status_code \
        == 302
    assert client.get("/console/").status_code == 200
    # A tenant bound to no organisation admits nobody through the shared provider, its own admin included.
    tenant_organization_bind(a.schema_name, "")
    client = Client(HTTP_HOST=a.host)
    assert client.get("/accounts/oidc/authenticate/").status_code == 403
    assert client.get("/console/").status_code == 302
    assert _console_accounts(a.schema_name) == before


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


# --- I12: data-subject export and erasure ----------------------------------------------------------

# User U exists in both tenants under every identifier a request can name: the same chat user id, e-mail
# address and phone number, the same session ids, a bot of the same name and primary key, mail with the
# same id (so its attachment has the same drive key), the same document id, bot memory key, consent
# subject, and an earlier export request with the same id (and the same subject digest).
GDPR_ADDRESS = "u.subject@example.com"
GDPR_PHONE = "+55 11 98765-4321"
GDPR_BOT_PK, GDPR_BOT = 4343, "gdpr-shared"
GDPR_MAIL_PK, GDPR_DOCUMENT = 4444, 4545
GDPR_VECTOR = [0.0, 0.6, 0.8]


def _gdpr_plant(schema: str, canary: str, store) -> list[str]:
    """U's data in every store of `schema`, each piece carrying `canary`; returns the drive keys written."""
    import uuid

    from apps.bots.models import Bot, BotMemory, BotTableRow
    from apps.compliance.consent import consent_record
    from apps.compliance.gdpr import export_archive_key, export_archive_store, subject_digest, subject_parse
    from apps.compliance.models import DataSubjectRequest
    from apps.drive.storage import tenant_drive
    from apps.kb.models import Document, KnowledgeBase
    from apps.kb.vectorstores import ChunkRecord, PgVectorStore
    from apps.mail.models import IncomingMail, OutgoingMail
    from apps.mail.services import bot_drive_root
    from apps.sessions.models import ChatSession, ChatUser, Message, Role

    with schema_context(schema):
        bot = Bot.objects.create(id=GDPR_BOT_PK, name=GDPR_BOT)
        user = ChatUser.objects.create(id=probes.COLLIDING_USER, username=f"{canary} user",
                                       email=GDPR_ADDRESS.upper(), external_id=GDPR_PHONE, is_anonymous=False,
                                       memory={"nickname": {"value": f"{canary} memory"}})
        for session_id in (probes.COLLIDING_SESSION, uuid.uuid4()):
            session = ChatSession.objects.create(id=session_id, user=user, bot=bot, title=f"{canary} chat")
            Message.objects.create(session=session, index=0, role=Role.USER, content=f"{canary} asks")
            Message.objects.create(session=session, index=1, role=Role.ASSISTANT, content=f"{canary} answer")
        BotMemory.objects.create(bot=bot, key=f"{GDPR_ADDRESS}:plan", value={"plan": f"{canary} plan"})
        BotTableRow.objects.create(bot=bot, table="customers", data={"email": GDPR_ADDRESS, "note": f"{canary} row"})
        key = f"{bot_drive_root(bot)}mail/inbox/{GDPR_MAIL_PK}/invoice.txt"
        tenant_drive().write(key, f"invoice of {canary}".encode())
        IncomingMail.objects.create(id=GDPR_MAIL_PK, bot=bot, message_id="<gdpr-in@x>", thread_key="t",
                                    from_address=GDPR_ADDRESS, subject=f"{canary} question",
                                    attachments=[{"name": "invoice.txt", "size": 20,
                                                  "path": f"mail/inbox/{GDPR_MAIL_PK}/invoice.txt"}])
        OutgoingMail.objects.create(bot=bot, to=GDPR_ADDRESS, subject=f"re: {canary}", message_id="<gdpr-out@x>",
                                    body_text=f"dear {canary}", status=OutgoingMail.Status.SENT)
        kb = KnowledgeBase.objects.create(bot=bot, name="inbox")
        Document.objects.create(id=GDPR_DOCUMENT, kb=kb, path=key, etag="e", size=20)
        record = ChunkRecord(document_id=GDPR_DOCUMENT, document_path=key, kb="inbox", index=0,
                             text=f"invoice of {canary}", start_char=0, end_char=20, page=None, heading="",
                             vector=GDPR_VECTOR)
        for vectors in (PgVectorStore(), store):
            vectors.replace_document(tenant=schema, bot=GDPR_BOT, bot_id=GDPR_BOT_PK, kb_id=kb.pk,
                                     document_id=GDPR_DOCUMENT, model="test", records=[record])
        consent_record(subject=GDPR_ADDRESS, purpose="marketing", granted=True, source=f"chat {canary}")
        from apps.analytics.models import DailyQuestion

        DailyQuestion.objects.create(day=timezone.now().date(), bot=bot, text=f"is {GDPR_ADDRESS} in {canary}",
                                     asked=1)
        DataSubjectRequest.objects.create(id=probes.COLLIDING_REQUEST, kind="export", subject_kind="email",
                                          subject=GDPR_ADDRESS,
                                          subject_digest=subject_digest(subject_parse(GDPR_ADDRESS)),
                                          status="done", requested_by="dpo")
        export_archive_store(request_id=probes.COLLIDING_REQUEST, archive=f"earlier export {canary}".encode())
    return [key, export_archive_key(probes.COLLIDING_REQUEST)]


def _qdrant_points(store, schema: str) -> list[str]:
    hits = store.search(tenant=schema, bot=GDPR_BOT, kbs=["inbox"], vector=GDPR_VECTOR, limit=50)
    return sorted(hit.text for hit in hits)


def _dsr_run(client: Client, schema: str, kind: str, subject: str, capture):
    """A's admin records the request in the console; its job runs as a tenant task of A (the job the
    commit would queue, run in this process so it sees the test's transaction)."""
    from apps.compliance.models import DataSubjectRequest
    from apps.compliance.tasks import subject_request_run_task

    with capture(execute=False) as queued:
        response = client.post("/console/compliance/requests/create/",
                               {"kind": kind, "subject": subject, "confirmed": "yes"})
    assert response.status_code == 302 and len(queued) == 1, response.content[:500]
    with schema_context(schema):
        row = DataSubjectRequest.objects.exclude(pk=probes.COLLIDING_REQUEST).order_by("-requested_at").first()
    result = subject_request_run_task.apply(args=[str(row.pk)], headers={"_schema_name": schema}).get()
    assert result["status"] == "done", result
    return row.pk, result["report"]


@pytest.fixture(params=["local", "s3"])
def gdpr_drive(request):
    """The tenants' drives: local folders, or prefixes of one bucket on the real S3 server (production)."""
    if request.param == "s3":
        request.getfixturevalue("s3_settings")
    return request.param


def test_i12_export_and_erasure_of_u_in_a_read_and_touch_nothing_of_b(canary_tenants, gdpr_drive, qdrant_platform,
                                                                      django_capture_on_commit_callbacks):
    import io
    import uuid
    import zipfile

    from apps.drive.storage import tenant_drive
    from apps.kb.vectorstores import QdrantStore, vector_store_for_settings
    from tests.security.canary_scan import db_rows_containing, db_snapshot, drive_files_containing, drive_snapshot

    a, b = canary_tenants.a, canary_tenants.b
    canary = {side.schema_name: f"CANARY-GDPR-{side.schema_name}-{uuid.uuid4().hex[:8]}" for side in (a, b)}
    # Our Qdrant server on loopback (QDRANT_URL): one collection shared by all tenants, as in production.
    store = vector_store_for_settings()
    assert isinstance(store, QdrantStore)
    written = {side.schema_name: _gdpr_plant(side.schema_name, canary[side.schema_name], store)
               for side in (a, b)}
    try:
        b_rows, b_files = db_snapshot(b.schema_name), drive_snapshot(b.schema_name)
        b_points = _qdrant_points(store, b.schema_name)
        assert len(b_points) == 1 and canary[b.schema_name] in b_points[0]
        admin = Client(HTTP_HOST=a.host)
        assert admin.post("/accounts/login/", {"username": "admin", "password": a.admin_password}).status_code == 302

        leaks, counts, own_files = [], [], []
        for subject in (GDPR_ADDRESS, str(probes.COLLIDING_USER), GDPR_PHONE):
            pk, report = _dsr_run(admin, a.schema_name, "export", subject, django_capture_on_commit_callbacks)
            response = admin.get(f"/console/compliance/requests/{pk}/export.zip")
            assert response.status_code == 200
            with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
                files = {name: archive.read(name) for name in archive.namelist()}
            leaks += [f"export by {subject}: {name}" for name, content in files.items()
                      if canary[b.schema_name].encode() in content]
            counts.append(report["counts"])
            own_files.append(files.get(f"files/{written[a.schema_name][0]}"))

        before_erasure = len(qdrant_platform.requests)
        pk, report = _dsr_run(admin, a.schema_name, "erasure", GDPR_ADDRESS, django_capture_on_commit_callbacks)
        # What the erasure asked of Qdrant: deletes, each scoped to A (seen on the wire, not in our own code).
        erasure_deletes = [r for r in qdrant_platform.requests[before_erasure:] if r.path.endswith("/points/delete")]
        assert erasure_deletes and all(r.status == 200 for r in erasure_deletes)
        assert all({"key": "tenant", "match": {"value": a.schema_name}} in r.body["filter"]["must"]
                   for r in erasure_deletes)
        b_rows_after, b_files_after = db_snapshot(b.schema_name), drive_snapshot(b.schema_name)
        b_points_after = _qdrant_points(store, b.schema_name)
        touched = ([f"row {k}" for k in b_rows.keys() | b_rows_after.keys() if b_rows.get(k) != b_rows_after.get(k)]
                   + [f"file {k}" for k in b_files.keys() | b_files_after.keys()
                      if b_files.get(k) != b_files_after.get(k)]
                   + [f"vector point {p}" for p in set(b_points) ^ set(b_points_after)])
        print(f"I12: {len(counts)} exports of U in A ({len(leaks)} foreign canaries in them) and 1 erasure: "
              f"{report['counts']['chat_users']} user, {report['counts']['messages']} messages, "
              f"{report['counts']['files']} files, {report['counts']['documents']} documents erased in A; "
              f"{len(touched)} of B's rows, files and vector points changed (B holds {len(b_rows)} rows, "
              f"{len(b_files)} files, {len(b_points)} points; {gdpr_drive} drive)")
        assert leaks == []
        assert touched == []
        # Each export is U's whole record in A, found by address, by id and by phone: a leak had somewhere to
        # show. And the erasure did its job in A (so "nothing touched in B" is not an erasure that did nothing).
        assert counts == 3 * [{"chat_users": 1, "user_memory_keys": 1, "sessions": 2, "messages": 4, "bot_memory": 1,
                               "mail_incoming": 1, "mail_outgoing": 1, "bot_table_rows": 1, "consents": 1,
                               "files": 1, "mail_outgoing_mentions": 0, "job_runs": 0, "meeting_rooms": 0}]
        assert own_files == 3 * [f"invoice of {canary[a.schema_name]}".encode()]
        assert report["counts"]["chat_users"] == 1 and report["counts"]["documents"] == 1
        assert report["counts"]["exports"] == 4  # the three exports just made and the earlier one
        assert db_rows_containing(a.schema_name, canary[a.schema_name]) == []
        assert drive_files_containing(a.schema_name, canary[a.schema_name]) == []
        assert _qdrant_points(store, a.schema_name) == []
    finally:
        if gdpr_drive == "s3":  # the bucket outlives the test's transaction
            for schema in (a.schema_name, b.schema_name):
                drive = tenant_drive(schema)
                drive.delete_prefix(f"{GDPR_BOT}.gbai")
                drive.delete_prefix("_compliance/exports")


# --- I13: rate-limit buckets -------------------------------------------------------------------------

RATE_BURST_CAP = 30  # requests sent at most per bucket: far above the small limits the test sets


def _search_key(tenant) -> str:
    """An API key of the tenant's admin for the kb search API (its limit counts requests past the key check)."""
    from django.contrib.auth import get_user_model

    from apps.accounts.services import api_key_create

    with schema_context(tenant.schema_name):
        admin = get_user_model().objects.get(username="admin")
        return api_key_create(name="i13", scopes=["kb:search"], created_by=admin).secret


def _rate_attacks(canary_tenants, ip: str) -> dict:
    """Per limited endpoint: a function sending one request to a tenant's host from `ip`."""
    def client(tenant) -> Client:
        return Client(HTTP_HOST=tenant.host, REMOTE_ADDR=ip)

    keys = {tenant.host: _search_key(tenant) for tenant in (canary_tenants.a, canary_tenants.b)}
    return {
        "auth (sign-in POST)": lambda tenant: client(tenant).post(
            "/accounts/login/", {"username": "admin", "password": "not-the-password"}),
        "api (kb search)": lambda tenant: client(tenant).post("/api/kb/search", "{}", content_type="application/json",
                                                              HTTP_AUTHORIZATION=f"Bearer {keys[tenant.host]}"),
        "chat (new session, per IP)": lambda tenant: client(tenant).post(
            "/api/sessions", json.dumps({"bot_name": tenant.canary}), content_type="application/json"),
        "chat (messages of the colliding session id)": lambda tenant: client(tenant).post(
            f"/api/sessions/{COLLIDING_SESSION}/messages", json.dumps({"content": "hello"}),
            content_type="application/json"),
    }


def _let_through(send, tenant) -> tuple[int, int]:
    """(requests let through before the first 429, the status of the last one let through)."""
    status = 0
    for sent in range(RATE_BURST_CAP):
        response = send(tenant)
        if response.status_code == 429:
            assert int(response["Retry-After"]) >= 1
            return sent, status
        status = response.status_code
    return RATE_BURST_CAP, status


def _limited_settings(settings) -> dict[str, int]:
    """Small limits per hour, no burst: the allowance of each endpoint above, per tenant and client (an hour,
    so no request is let through again while the test runs, however slow the machine)."""
    settings.RATE_LIMIT_API_AUTH, settings.RATE_LIMIT_REQUESTS, settings.RATE_LIMIT_API_CHAT = 3, 4, 5
    settings.RATE_LIMIT_BURST, settings.RATE_LIMIT_WINDOW_S = 0, 3600
    return {"auth (sign-in POST)": 3, "api (kb search)": 4, "chat (new session, per IP)": 5,
            "chat (messages of the colliding session id)": 5}


def _fresh_ip() -> str:
    import uuid

    return f"198.51.100.{uuid.uuid4().int % 250 + 1}"


def test_i13_a_burst_on_a_uses_up_a_quota_and_leaves_b_quota_whole(canary_tenants, settings):
    probes.plant(canary_tenants)  # both tenants hold a chat session with the same id (in the test's transaction)
    allowance = _limited_settings(settings)
    ip = _fresh_ip()
    a, b = canary_tenants.a, canary_tenants.b
    results = {}
    for name, send in _rate_attacks(canary_tenants, ip).items():
        through_a, status_a = _let_through(send, a)  # A's burst: until A refuses
        through_b, status_b = _let_through(send, b)  # then B, from the same address, at once
        still_refused = send(a).status_code == 429
        results[name] = (through_a, through_b, still_refused, status_a, status_b)
    print("I13: bursts on A until refused, then B from the same IP: "
          + "; ".join(f"{name} A {r[0]} / B {r[1]} let through" for name, r in results.items()))
    for name, (through_a, through_b, still_refused, status_a, status_b) in results.items():
        assert through_a == allowance[name], f"{name}: A's limit is not the one set ({through_a})"
        assert through_b == allowance[name], f"{name}: A's burst used up {allowance[name] - through_b} of B's quota"
        assert still_refused, f"{name}: B's requests reset A's bucket"
        assert status_a != 500 and status_b != 500, name  # requests were served, not errors counted


def test_i13_the_global_per_ip_limit_still_counts_requests_to_every_tenant(canary_tenants, settings):
    """Requests of one address to A and to B are also counted in one platform-wide bucket of that address
    (a `per_tenant=False` bucket, `rl:platform:...`), whatever the endpoint."""
    from django_redis import get_redis_connection

    probes.plant(canary_tenants)
    _limited_settings(settings)
    redis = get_redis_connection("default")

    def platform_buckets() -> dict[bytes, bytes]:
        return {key: redis.get(key) for key in redis.scan_iter(match="rl:platform:*", count=1000)}

    for name, send in _rate_attacks(canary_tenants, _fresh_ip()).items():
        send(canary_tenants.a)
        after_a = platform_buckets()
        send(canary_tenants.b)
        after_b = platform_buckets()
        counted_for_both = [key for key in after_a if after_b.get(key) not in (None, after_a[key])]
        assert counted_for_both, f"{name}: no platform-wide bucket counted the address's requests to A and B"
