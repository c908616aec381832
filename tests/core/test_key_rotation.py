"""Key rotation end to end: values written under key k1 in two tenants, a new active key k2, the platform
task fans core.reencrypt out per tenant to a real Celery worker (real broker), every value ends under k2 and
still decrypts, and k1 can then be removed. Also: batches resume after a deadline, a corrupt value is
skipped without stopping the walk, and the `encryption_rotate` command guards key removal.

Everything here is committed (the worker thread has its own connection), in tenants of this module that are
deleted at the end, so these tests do not run inside a test transaction (no `django_db` mark); the key file
is the test's own."""

from __future__ import annotations

import logging
import time

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django_tenants.utils import schema_context

from apps.bots.models import Bot, BotMemory
from apps.core import crypto
from apps.core.fields import schema_key_counts, schema_reencrypt
from apps.core.tasks import reencrypt, reencrypt_dispatch
from apps.sessions import services as chat_services
from apps.sessions.fields import SEALED_MARK, tenant_flag_forget
from apps.sessions.models import Message, Role
from apps.tenants.models import Tenant
from apps.tenants.services import tenant_create, tenant_delete
from gbplatform.celery import app

MEMORY = "bots.BotMemory.value"
MESSAGES = "chat.Message.content"
ROWS_A, ROWS_B = 1100, 40  # A spans three batches of REENCRYPT_BATCH_ROWS
WAIT_S = 60


@pytest.fixture(scope="module")
def rotation_tenants(canary_tenants, django_db_blocker):
    with django_db_blocker.unblock():
        created = [tenant_create(name=f"Rotation {n}", domain=f"rotation-{n}.test.localhost", admin_username=None)[0]
                   for n in ("a", "b")]
        yield [tenant.schema_name for tenant in created]
        for tenant in created:
            tenant_delete(schema_name=tenant.schema_name)


@pytest.fixture
def keys(settings, tmp_path):
    settings.ENCRYPTION_KEY_FILE = tmp_path / "keys" / "encryption.json"
    settings.ENCRYPTION_KEY_FILE_CREATE = True
    settings.VAULT_ADDR = ""
    crypto.keyring_reset()
    yield settings.ENCRYPTION_KEY_FILE
    crypto.keyring_reset()


@pytest.fixture
def memories(rotation_tenants, keys, django_db_blocker):
    """ROWS_A and ROWS_B memory values under k1, each naming its tenant and index; removed afterwards."""
    counts = dict(zip(rotation_tenants, (ROWS_A, ROWS_B), strict=True))
    with django_db_blocker.unblock():
        for schema, rows in counts.items():
            with schema_context(schema):
                bot = Bot.objects.create(name="keeper")
                BotMemory.objects.bulk_create(
                    BotMemory(bot=bot, key=f"m{i}", value={"tenant": schema, "i": i}) for i in range(rows)
                )
        yield counts
        for schema in counts:
            with schema_context(schema):
                Bot.objects.filter(name="keeper").delete()


def _counts(schema: str) -> dict[str, int]:
    with schema_context(schema):
        return schema_key_counts().get(MEMORY, {})


def _values(schema: str) -> list:
    with schema_context(schema):
        return sorted((row["i"], row["tenant"]) for row in BotMemory.objects.values_list("value", flat=True))


@pytest.fixture
def jobs_worker(django_db_blocker):
    with django_db_blocker.unblock(), start_worker(
        app, pool="solo", perform_ping_check=False, queues=["jobs"], shutdown_timeout=10
    ) as worker:
        yield worker


@pytest.mark.django_db  # (also what makes pytest-django set up the test database for this module alone)
def test_a_tenant_without_encrypted_values_has_nothing_to_reencrypt(canary_tenants, keys):
    with schema_context(canary_tenants.b.schema_name):
        crypto.keyring_add_key()
        assert schema_key_counts() == {}
        report = schema_reencrypt()
        assert (report.rewritten, report.failed, report.done) == (0, 0, True)


def test_rotation_reencrypts_every_tenant_on_a_worker_and_the_old_key_can_go(memories, jobs_worker,
                                                                            django_db_blocker):
    schemas = list(memories)
    with django_db_blocker.unblock():
        assert all(_counts(s) == {"k1": memories[s]} for s in schemas)
        before = {s: _values(s) for s in schemas}
        assert crypto.keyring_add_key() == "k2"
        assert reencrypt_dispatch.apply().get() >= 2  # the dispatcher runs here; the tenants' tasks on the worker
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and any(_counts(s) != {"k2": memories[s]} for s in schemas):
            time.sleep(0.2)
        assert {s: _counts(s) for s in schemas} == {s: {"k2": memories[s]} for s in schemas}
        crypto.keyring_remove_key("k1")
        crypto.keyring_reset()
        assert "k1" not in crypto.keyring_current().keys
        assert {s: _values(s) for s in schemas} == before
        assert all(v[1] == s for s in schemas for v in before[s]), "each tenant reads its own values"
        with schema_context(schemas[0]):  # a second run finds nothing to do
            assert reencrypt.apply().get()["rewritten"] == 0
        _drain_jobs_queue()


def _drain_jobs_queue() -> None:
    """Let the worker finish the other tenants' runs, so no task of this test outlives its worker."""
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    deadline = time.monotonic() + WAIT_S
    while broker.llen("jobs") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert broker.llen("jobs") == 0


def test_a_pass_stopped_at_its_deadline_resumes_where_it_stopped(memories, django_db_blocker):
    schema = next(iter(memories))
    with django_db_blocker.unblock(), schema_context(schema):
        crypto.keyring_add_key()
        first = schema_reencrypt(deadline=time.monotonic(), batch_rows=300)  # stops after one batch
        assert not first.done and first.rewritten == 300 and first.resume_at[0] == MEMORY
        assert schema_key_counts()[MEMORY] == {"k1": ROWS_A - 300, "k2": 300}
        rest = schema_reencrypt(resume_at=first.resume_at, batch_rows=300)
        assert rest.done and rest.rewritten == ROWS_A - 300
        assert schema_key_counts()[MEMORY] == {"k2": ROWS_A}


def test_a_value_that_cannot_be_decrypted_is_skipped_and_reported_without_content(memories, django_db_blocker,
                                                                                  caplog):
    schema = list(memories)[1]
    with django_db_blocker.unblock(), schema_context(schema):
        victim = BotMemory.objects.order_by("pk").values_list("pk", flat=True)[5]
        foreign = crypto.encrypt('{"tenant": "elsewhere-canary-0c7e"}', context="t_other")
        with connection.cursor() as cursor:
            cursor.execute("UPDATE bots_botmemory SET value = %s WHERE id = %s", [foreign, victim])
        crypto.keyring_add_key()
        report = schema_reencrypt(batch_rows=7)
        assert (report.rewritten, report.failed, report.done) == (ROWS_B - 1, 1, True)
        assert schema_key_counts()[MEMORY] == {"k1": 1, "k2": ROWS_B - 1}
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 1 and f"pk={victim}" in failures[0].getMessage()
    assert "elsewhere-canary" not in caplog.text


def test_the_command_adds_a_key_reencrypts_and_refuses_to_retire_a_key_in_use(memories, django_db_blocker,
                                                                              capsys):
    schemas = list(memories)
    with django_db_blocker.unblock():
        call_command("encryption_rotate", "--reencrypt", "--inline")  # no new key: nothing to do
        assert crypto.keyring_current().active_key_id == "k1"
        with pytest.raises(CommandError, match=r"key k1 still encrypts \d+ values"):
            call_command("encryption_rotate", "--retire", "k1")
        call_command("encryption_rotate", "--key-id", "2026-q4", "--inline")
        assert all(_counts(s) == {"2026-q4": memories[s]} for s in schemas)
        call_command("encryption_rotate", "--status")
        assert f"{schemas[0]} {MEMORY} 2026-q4: {ROWS_A}" in capsys.readouterr().out
        call_command("encryption_rotate", "--retire", "k1")
        assert set(crypto.keyring_current(fresh=True).keys) == {"2026-q4"}
        assert _values(schemas[1])[0] == (0, schemas[1])


def _sealing(schema: str, on: bool) -> None:
    Tenant.objects.filter(schema_name=schema).update(encrypt_messages=on)
    tenant_flag_forget()


def test_sealed_message_content_is_reencrypted_counted_and_keeps_its_key_from_retiring(rotation_tenants, keys,
                                                                                      django_db_blocker):
    """Message content is sealed only while the tenant enables it (apps.sessions.fields): its sealed rows are
    counted and re-encrypted like every encrypted column, its plaintext rows are left alone, and a key that
    still seals a message cannot be retired (retiring it would make those messages unreadable)."""
    schema = rotation_tenants[0]
    with django_db_blocker.unblock(), schema_context(schema):
        _sealing(schema, True)
        try:
            Bot.objects.create(name="sealer")
            session = chat_services.session_bootstrap(bot_name="sealer")
            for i in range(3):
                Message.objects.create(session=session, index=i, role=Role.USER, content=f"secret {i}")
            _sealing(schema, False)
            plain = Message.objects.create(session=session, index=3, role=Role.USER, content="said in the clear")
            assert schema_key_counts()[MESSAGES] == {"k1": 3}  # the plaintext row uses no key
            assert crypto.keyring_add_key() == "k2"
            with pytest.raises(CommandError, match=r"key k1 still encrypts \d+ values"):
                call_command("encryption_rotate", "--retire", "k1")
            report = schema_reencrypt()
            assert report.fields[MESSAGES] == 3 and report.failed == 0
            assert schema_key_counts()[MESSAGES] == {"k2": 3}
            with connection.cursor() as cursor:
                cursor.execute("SELECT index, content FROM chat_message WHERE session_id = %s ORDER BY index",
                               [session.pk])
                raw = cursor.fetchall()
            assert all(value.startswith(SEALED_MARK) and "secret" not in value for _, value in raw[:3])
            assert raw[3] == (3, "said in the clear")
            assert schema_reencrypt().rewritten == 0  # nothing left under another key
            crypto.keyring_remove_key("k1")
            crypto.keyring_reset()
            contents = list(Message.objects.filter(session=session).order_by("index").values_list("content", flat=True))
            assert contents == ["secret 0", "secret 1", "secret 2", plain.content]
        finally:
            _sealing(schema, False)
            Bot.objects.filter(name="sealer").delete()


def test_a_key_that_still_seals_data_export_archives_is_not_retired(rotation_tenants, keys, local_storage,
                                                                    django_db_blocker, capsys):
    """Export archives are sealed on the tenant's drive with the key active when they were made and kept a
    month; --retire counted database columns only, so retiring that key made recent exports unreadable."""
    import uuid

    from apps.compliance.gdpr import export_archive_key, export_archive_store, subject_export_read
    from apps.compliance.models import DataSubjectRequest
    from apps.drive.storage import tenant_drive

    schema = rotation_tenants[1]
    with django_db_blocker.unblock(), schema_context(schema):
        request = DataSubjectRequest.objects.create(id=uuid.uuid4(), kind=DataSubjectRequest.Kind.EXPORT,
                                                    subject_kind="email", subject_digest="0" * 64,
                                                    subject="someone@example.com", requested_by="dpo",
                                                    status=DataSubjectRequest.Status.DONE)
        try:
            old = export_archive_store(request_id=request.pk, archive=b"an archive under k1")
            assert crypto.keyring_add_key() == "k2"
            export_archive_store(request_id=uuid.uuid4(), archive=b"an archive under k2")
            call_command("encryption_rotate", "--status")
            assert f"{schema} data-export archives k1: 1, k2: 1" in capsys.readouterr().out
            with pytest.raises(CommandError) as refused:
                call_command("encryption_rotate", "--retire", "k1")
            assert str(refused.value) == (
                f"key k1 still seals 1 data-export archive(s) ({schema}:{old}); retire it once they have expired "
                "or been downloaded and deleted")
            assert set(crypto.keyring_current(fresh=True).keys) == {"k1", "k2"}
            assert subject_export_read(request_id=str(request.pk)) == b"an archive under k1"  # still opens
            tenant_drive().delete(export_archive_key(request.pk))
            call_command("encryption_rotate", "--retire", "k1")
            assert set(crypto.keyring_current(fresh=True).keys) == {"k2"}
        finally:
            tenant_drive().delete_prefix("_compliance")
            DataSubjectRequest.objects.filter(pk=request.pk).delete()
