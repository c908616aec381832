"""The audit log table, and the database refusing UPDATE, DELETE and TRUNCATE on it.

The trigger function lives in the public schema, created idempotently by each tenant schema's run of this
migration (a tenant app cannot ship a shared migration): one function for every tenant, and no function
inside the template schema for the schema cloner to trip over. The triggers are on each tenant's table.
Statement-level triggers fire even when no row matches, so `DELETE ... WHERE false` is refused too.
"""

import django.utils.timezone
from django.db import migrations, models

# The advisory lock (key 7305512004611, fixed and unique to this function) serialises the CREATE OR REPLACE
# when several schemas are migrated in parallel: concurrent replacements of one function fail with "tuple
# concurrently updated".
CREATE_FUNCTION = """
SELECT pg_advisory_xact_lock(7305512004611);
CREATE OR REPLACE FUNCTION public.audit_event_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only: % on %.% refused', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
"""

CREATE_TRIGGERS = """
CREATE TRIGGER audit_event_no_update_delete BEFORE UPDATE OR DELETE ON compliance_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION public.audit_event_immutable();
CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON compliance_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION public.audit_event_immutable();
"""

DROP_TRIGGERS = """
DROP TRIGGER IF EXISTS audit_event_no_update_delete ON compliance_auditevent;
DROP TRIGGER IF EXISTS audit_event_no_truncate ON compliance_auditevent;
"""

# Other tenants' triggers still use the function: drop it only with the last of them.
DROP_FUNCTION = """
SELECT pg_advisory_xact_lock(7305512004611);
DO $$
BEGIN
    IF to_regprocedure('public.audit_event_immutable()') IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM pg_trigger WHERE tgfoid = 'public.audit_event_immutable()'::regprocedure
    ) THEN
        DROP FUNCTION public.audit_event_immutable();
    END IF;
END
$$;
"""


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="AuditEvent",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("at", models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                ("actor", models.CharField(max_length=150)),
                ("actor_id", models.BigIntegerField(blank=True, null=True)),
                ("action", models.CharField(db_index=True, max_length=64)),
                ("object_type", models.CharField(blank=True, max_length=64)),
                ("object_id", models.CharField(blank=True, max_length=255)),
                ("summary", models.TextField(blank=True)),
                ("ip", models.GenericIPAddressField(blank=True, null=True)),
                ("request_id", models.CharField(blank=True, max_length=64)),
            ],
            options={
                "ordering": ["-at", "-id"],
                "indexes": [models.Index(fields=["object_type", "object_id"], name="audit_object_idx")],
            },
        ),
        migrations.RunSQL(sql=CREATE_FUNCTION, reverse_sql=DROP_FUNCTION),
        migrations.RunSQL(sql=CREATE_TRIGGERS, reverse_sql=DROP_TRIGGERS),
    ]
