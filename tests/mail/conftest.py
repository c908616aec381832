"""Mail fixtures: a real SMTP server (aiosmtpd), a real IMAP server (dovecot), a Celery worker on `mail`.

End-to-end tests need committed data (the worker thread sees only committed rows, and mail is queued on
commit), while the `django_db` mark wraps a test in a transaction on the main thread's connection. A test
that asks for `committed_db` therefore runs its body in a thread of its own, with its own connection in
autocommit, in a tenant of the module's own (dropped when the module ends). Each test makes its own bot,
so tests never see each other's rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from celery.contrib.testing.worker import start_worker

from apps.core import secrets as secrets_module
from tests.support.dovecot import SKIP_REASON, DovecotServer, dovecot_binary, dovecot_start
from tests.support.smtp_server import SmtpServer
from tests.support.vault_fake import FakeVault

_bot_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture
def smtp(smtp_server: SmtpServer) -> SmtpServer:
    """The shared SMTP server, emptied for this test."""
    smtp_server.reset()
    return smtp_server


@pytest.fixture
def smtp_auth() -> Iterator[SmtpServer]:
    """An SMTP server of this test's own that requires AUTH (user `shop`, password `s3cret-from-vault`)."""
    with SmtpServer(users={"shop": "s3cret-from-vault"}) as server:
        yield server


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    if dovecot_binary() is None:
        pytest.skip(SKIP_REASON)
    server = dovecot_start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def mail_settings(settings, tmp_path):
    """Bots may name loopback mail servers here (off in production); retries come quickly; a local drive."""
    settings.MAIL_ALLOW_PRIVATE_HOSTS = True
    settings.MAIL_RETRY_BASE_S = 0.2
    settings.MAIL_DEFAULT_FROM = ""
    settings.SMTP_HOST = ""
    settings.MEDIA_ROOT, settings.S3_ACCESS_KEY, settings.QDRANT_URL = tmp_path / "media", "", ""
    return settings


@pytest.fixture(scope="module")
def mail_tenant(canary_tenants, django_db_blocker):
    """A committed tenant of this module's own."""
    from apps.tenants.services import tenant_create, tenant_delete

    with django_db_blocker.unblock():
        tenant, _ = tenant_create(name="Mail Tests", domain="mail-tests.test.localhost", admin_username=None)
    yield tenant
    with django_db_blocker.unblock():
        tenant_delete(schema_name=tenant.schema_name)


@pytest.fixture(scope="module")
def other_mail_tenant(mail_tenant, django_db_blocker):
    """A second committed tenant, for isolation between tenants that both read mail."""
    from apps.tenants.services import tenant_create, tenant_delete

    with django_db_blocker.unblock():
        tenant, _ = tenant_create(name="Mail Tests B", domain="mail-tests-b.test.localhost", admin_username=None)
    yield tenant
    with django_db_blocker.unblock():
        tenant_delete(schema_name=tenant.schema_name)


@pytest.fixture
def chat_turns():
    """The chat core's channel_turn (apps.sessions), which answers incoming mail. Imported, never skipped: a
    renamed or missing channel_turn fails the tests that need it."""
    from apps.sessions.services import channel_turn

    return channel_turn


@pytest.fixture
def committed_db(django_db_blocker) -> Iterator[None]:
    """Marks a test whose body runs in its own thread and connection (see pytest_pyfunc_call below):
    writes commit, on_commit callbacks run, the worker sees the rows."""
    with django_db_blocker.unblock():
        yield


def _run_closing_connections(function, kwargs):
    from django.db import connections

    try:
        return function(**kwargs)
    finally:
        connections.close_all()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if "committed_db" not in pyfuncitem.fixturenames:
        return None
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    with ThreadPoolExecutor(max_workers=1) as executor:
        executor.submit(_run_closing_connections, pyfuncitem.obj, kwargs).result()
    return True


@pytest.fixture(scope="module")
def mail_worker(django_db_blocker):
    from gbplatform.celery import app

    with django_db_blocker.unblock(), start_worker(
        app, pool="solo", perform_ping_check=False, queues=["mail"], shutdown_timeout=10
    ) as worker:
        yield worker


def bot_name_new(prefix: str = "mailbot") -> str:
    return f"{prefix}-{next(_bot_numbers)}"


@pytest.fixture
def vault(settings) -> Iterator[FakeVault]:
    secrets_module.secrets_reset()
    with FakeVault() as fake:
        fake.seed_encryption_keys()  # bot config values are encrypted: their keys come from Vault now
        settings.VAULT_ADDR = fake.url
        settings.VAULT_TOKEN = fake.create_token(0)
        yield fake
    secrets_module.secrets_reset()
