"""Encrypted model fields: the database only ever holds envelopes bound to the tenant, reads give the value
back, content lookups are refused, and BotMemory (migrated from a JSON column) keeps its JSON semantics."""

from __future__ import annotations

import base64
import json

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, models, transaction
from django.db.migrations.executor import MigrationExecutor
from django_tenants.utils import schema_context

from apps.bots.models import Bot, BotMemory
from apps.core import crypto
from apps.core.fields import EncryptedJSONField, EncryptedLookupError, EncryptedTextField, UndecryptableValue
from tests.core.test_crypto import key_file  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db


class SealedNote(models.Model):
    """A test-only table (created inside the test's transaction) for the text field."""

    title = models.CharField(max_length=50)
    body = EncryptedTextField(blank=True)
    extra = EncryptedTextField(null=True)

    class Meta:
        app_label = "bots"
        managed = False  # never migrated, and skipped by the re-encryption walk

    def __str__(self) -> str:
        return self.title


@pytest.fixture
def notes_table(canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        with connection.schema_editor() as editor:
            editor.create_model(SealedNote)
        yield SealedNote


# Plaintexts this long cannot appear in a ciphertext's base64 by chance (4 characters do, about 1 in 100 runs).
PLAINTEXT_VISIBLE_MIN_CHARS = 8


def _raw(table: str, column: str, pk: int) -> str | None:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [pk])  # noqa: S608
        return cursor.fetchone()[0]


@pytest.mark.parametrize(
    "value",
    [{"name": "canary-memory-e41a", "items": [1, 2.5, None, True]}, ["a", "b"], "canary-memory-e41a", 42, 0.5,
     True, "", {}],
)
def test_memory_values_round_trip_and_the_column_holds_only_an_envelope(canary_tenants, key_file, value):  # noqa: F811
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.get(pk=canary_tenants.a.bot_pk)
        row = BotMemory.objects.create(bot=bot, key="k", value=value)
        stored = _raw("bots_botmemory", "value", row.pk)
        assert crypto.token_key_id(stored) == "k1"
        # Short plaintexts ("42", "{}") turn up in random base64 by chance: only a long one proves anything here
        # (the decryption below shows the rest is sealed).
        plaintext = json.dumps(value)
        assert len(plaintext) < PLAINTEXT_VISIBLE_MIN_CHARS or plaintext not in stored
        assert "canary-memory-e41a" not in base64.b64decode(stored).decode("latin-1")
        assert BotMemory.objects.get(pk=row.pk).value == value
        assert crypto.decrypt_text(stored, context=canary_tenants.a.schema_name) == json.dumps(value)


def test_none_is_sql_null_as_with_a_json_field(canary_tenants, key_file):  # noqa: F811
    with schema_context(canary_tenants.a.schema_name):
        row = BotMemory.objects.create(bot_id=canary_tenants.a.bot_pk, key="empty", value=None)
        assert _raw("bots_botmemory", "value", row.pk) is None
        assert BotMemory.objects.get(pk=row.pk).value is None
        assert BotMemory.objects.filter(value__isnull=True, pk=row.pk).exists()


def test_updates_and_bulk_updates_are_encrypted_too(canary_tenants, key_file):  # noqa: F811
    with schema_context(canary_tenants.a.schema_name):
        rows = [BotMemory.objects.create(bot_id=canary_tenants.a.bot_pk, key=f"k{i}", value=i) for i in range(3)]
        BotMemory.objects.filter(pk=rows[0].pk).update(value={"secret": "canary-update-77"})
        for row in rows[1:]:
            row.value = "canary-bulk-88"
        BotMemory.objects.bulk_update(rows[1:], ["value"])
        raws = [_raw("bots_botmemory", "value", row.pk) for row in rows]
        assert all("canary" not in raw and crypto.token_key_id(raw) == "k1" for raw in raws)
        assert [r.value for r in BotMemory.objects.filter(pk__in=[r.pk for r in rows]).order_by("key")] == [
            {"secret": "canary-update-77"}, "canary-bulk-88", "canary-bulk-88"]


def test_a_value_copied_into_another_tenants_row_does_not_decrypt(canary_tenants, key_file, caplog):  # noqa: F811
    a, b = canary_tenants.a, canary_tenants.b
    with schema_context(a.schema_name):
        stolen = _raw("bots_botmemory", "value",
                      BotMemory.objects.create(bot_id=a.bot_pk, key="pin", value=a.canary).pk)
    with schema_context(b.schema_name):
        row = BotMemory.objects.create(bot_id=b.bot_pk, key="pin", value="bravo's own")
        with connection.cursor() as cursor:
            cursor.execute("UPDATE bots_botmemory SET value = %s WHERE id = %s", [stolen, row.pk])
        read = BotMemory.objects.get(pk=row.pk)
        assert isinstance(read.value, UndecryptableValue) and read.value == ""
        assert "authentication failed" in read.value.reason and a.canary not in repr(read.value)
        read.key = "pin-renamed"
        read.save()  # saving the row keeps the stored ciphertext as it was: nothing is lost
        assert _raw("bots_botmemory", "value", row.pk) == stolen
        Bot.objects.filter(pk=b.bot_pk).delete()  # deletes load the rows (a listener on every delete)
        assert not BotMemory.objects.filter(pk=row.pk).exists()
    assert a.canary not in caplog.text
    assert any("cannot be decrypted in " + b.schema_name in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("query", "name"),
    [({"value": "x"}, "exact"), ({"value__contains": "x"}, "contains"), ({"value__in": ["x"]}, "in"),
     ({"value__name": "x"}, "name"), ({"value__icontains": "x"}, "icontains")],
)
def test_content_lookups_are_refused_with_a_clear_error(canary_tenants, key_file, query, name):  # noqa: F811
    with schema_context(canary_tenants.a.schema_name), pytest.raises(
        EncryptedLookupError, match=rf"BotMemory.value is encrypted.*'{name}'.*isnull"
    ):
        list(BotMemory.objects.filter(**query))


def test_encrypted_fields_refuse_unique_and_indexes():
    for option in ("unique", "db_index", "primary_key"):
        with pytest.raises(ImproperlyConfigured, match=option):
            EncryptedTextField(**{option: True})
        with pytest.raises(ImproperlyConfigured, match=option):
            EncryptedJSONField(**{option: True})


def test_text_field_encrypts_empty_strings_and_keeps_null(notes_table, key_file):  # noqa: F811
    note = notes_table.objects.create(title="t", body="", extra=None)
    other = notes_table.objects.create(title="u", body="canary-note-19f2 ünïcode", extra="x")
    assert crypto.token_key_id(_raw("bots_sealednote", "body", note.pk)) == "k1"
    assert _raw("bots_sealednote", "extra", note.pk) is None
    assert "canary-note" not in _raw("bots_sealednote", "body", other.pk)
    fresh = notes_table.objects.get(pk=other.pk)
    assert (fresh.body, fresh.extra) == ("canary-note-19f2 ünïcode", "x")
    assert notes_table.objects.get(pk=note.pk).body == ""
    assert list(notes_table.objects.filter(extra__isnull=True).values_list("title", flat=True)) == ["t"]


class _RollBack(Exception):
    pass


def test_the_migration_encrypts_existing_memory_and_reverses(canary_tenants, key_file):  # noqa: F811
    schema = canary_tenants.a.schema_name
    with schema_context(schema), pytest.raises(_RollBack), transaction.atomic():
        executor = MigrationExecutor(connection)
        executor.migrate([("bots", "0003_botschedule")])
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO bots_botmemory (bot_id, key, value, updated_at) VALUES "
                "(%s, 'a', %s::jsonb, now()), (%s, 'b', 'null'::jsonb, now()), (%s, 'c', NULL, now())",
                [canary_tenants.a.bot_pk, json.dumps({"pin": canary_tenants.a.canary}), canary_tenants.a.bot_pk,
                 canary_tenants.a.bot_pk],
            )
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no pending FK checks before the ALTER TABLEs
        MigrationExecutor(connection).migrate([("bots", "0004_botmemory_value_encrypted")])
        with connection.cursor() as cursor:
            cursor.execute("SELECT key, value FROM bots_botmemory WHERE key IN ('a', 'b', 'c') ORDER BY key")
            raw = dict(cursor.fetchall())
        assert crypto.token_key_id(raw["a"]) == "k1" and canary_tenants.a.canary not in raw["a"]
        assert raw["b"] is None and raw["c"] is None
        values = dict(BotMemory.objects.filter(key__in=["a", "b", "c"]).values_list("key", "value"))
        assert values == {"a": {"pin": canary_tenants.a.canary}, "b": None, "c": None}
        MigrationExecutor(connection).migrate([("bots", "0003_botschedule")])
        with connection.cursor() as cursor:
            cursor.execute("SELECT value FROM bots_botmemory WHERE key = 'a'")
            assert json.loads(cursor.fetchone()[0]) == {"pin": canary_tenants.a.canary}
        raise _RollBack
