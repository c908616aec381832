"""The fast template clone produces the same structure as the template, names included."""

import pytest
from django.db import connection
from django_tenants.utils import schema_context

from apps.tenants.services import tenant_create

pytestmark = pytest.mark.django_db

TEMPLATE = "tenant_template"


def _catalog(schema: str) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name, data_type, is_nullable, is_identity, column_default "
            "FROM information_schema.columns WHERE table_schema = %s ORDER BY 1, 2",
            [schema],
        )
        columns = cursor.fetchall()
        cursor.execute(f"SET LOCAL search_path TO {connection.ops.quote_name(schema)}")
        cursor.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE connamespace = %s::regnamespace AND contype <> 'n' ORDER BY 2",
            [schema],
        )
        constraints = cursor.fetchall()
        cursor.execute(
            "SELECT c.relname, replace(pg_get_indexdef(c.oid), %s, '') FROM pg_class c "
            "WHERE c.relnamespace = %s::regnamespace AND c.relkind = 'i' ORDER BY 1",
            [schema + ".", schema],
        )
        indexes = cursor.fetchall()
        cursor.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace AND relkind = 'S' ORDER BY 1",
            [schema],
        )
        sequences = cursor.fetchall()
    return {"columns": columns, "constraints": constraints, "indexes": indexes, "sequences": sequences}


def test_clone_matches_the_template_structure(canary_tenants):
    template, clone = _catalog(TEMPLATE), _catalog(canary_tenants.a.schema_name)
    assert template["columns"] and template["constraints"] and template["indexes"]
    for part in ("columns", "constraints", "indexes", "sequences"):
        assert clone[part] == template[part], part


def test_clone_has_its_own_identity_sequences_and_recorded_migrations(canary_tenants):
    tenant, _ = tenant_create(name="Seq", domain="seq.test.localhost", admin_username=None)
    from apps.bots.models import Bot

    with schema_context(tenant.schema_name):
        assert Bot.objects.create(name="first").pk == 1
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM django_migrations WHERE app = 'bots'")
            assert cursor.fetchone()[0] > 0
            cursor.execute("SELECT count(*) FROM auth_permission WHERE codename = 'add_bot'")
            assert cursor.fetchone()[0] == 1
        from django.contrib.contenttypes.models import ContentType

        # A new content type gets a fresh id past the copied ones instead of colliding with them.
        assert ContentType.objects.create(app_label="x", model="y").pk > ContentType.objects.get_for_model(Bot).pk
    with schema_context(TEMPLATE):
        assert not Bot.objects.exists()  # the template stays empty


def test_template_with_an_object_the_fast_clone_skips_falls_back_to_the_general_clone(canary_tenants):
    from apps.tenants.schema_clone import template_plan_forget

    with connection.cursor() as cursor:
        cursor.execute("CREATE VIEW tenant_template.bot_names AS SELECT name FROM tenant_template.bots_bot")
    template_plan_forget()  # a view is not a migration: tell the cloner the template changed
    tenant, _ = tenant_create(name="Viewful", domain="viewful.test.localhost", admin_username=None)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_views WHERE schemaname = %s AND viewname = 'bot_names'", [tenant.schema_name]
        )
        assert cursor.fetchone()[0] == 1
    template_plan_forget()  # the view goes away with this test's transaction


def test_migrate_on_a_cloned_tenant_finds_nothing_to_apply(canary_tenants, capsys):
    from django.core.management import call_command

    call_command("migrate_schemas", tenant=True, schema_name=canary_tenants.a.schema_name, verbosity=1)
    out = capsys.readouterr().out
    assert "No migrations to apply" in out and "Applying" not in out


def test_triggers_on_template_tables_are_cloned_and_fire_in_the_new_schema(canary_tenants):
    from django.db import DatabaseError, transaction

    from apps.tenants.schema_clone import template_plan_forget

    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION public.test_refuse_change() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'rows of % are read-only', TG_TABLE_NAME; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER bot_read_only BEFORE UPDATE OR DELETE ON tenant_template.bots_bot "
            "FOR EACH ROW EXECUTE FUNCTION public.test_refuse_change()"
        )
    template_plan_forget()
    from apps.tenants.schema_clone import _template_plan

    with connection.cursor() as cursor:
        assert _template_plan(cursor, TEMPLATE).triggers  # the fast path took it, no fallback needed
    tenant, _ = tenant_create(name="Triggered", domain="triggered.test.localhost", admin_username=None)
    from apps.bots.models import Bot

    with schema_context(tenant.schema_name):
        bot = Bot.objects.create(name="x")
        with pytest.raises(DatabaseError, match="read-only"), transaction.atomic():
            Bot.objects.filter(pk=bot.pk).update(name="y")
    template_plan_forget()  # the trigger goes away with this test's transaction
