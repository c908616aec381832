"""The audit log's retention: DELETE on it is allowed to the retention purge alone.

The function behind the append-only triggers (0001) now lets a DELETE through when the transaction set
`gbplatform.audit_purge` to `on` (SET LOCAL, only apps.compliance.retention does it, for events older than
AUDIT_LOG_KEEP_DAYS). UPDATE and TRUNCATE stay refused whatever is set. Same shared function and lock as 0001.
The trigger guards against the application deleting by accident, not against someone with SQL access (who
can set the same variable). Reversing this migration restores the shared function for every tenant.
"""

import importlib

from django.db import migrations

PURGE_ALLOWED = """
SELECT pg_advisory_xact_lock(7305512004611);
CREATE OR REPLACE FUNCTION public.audit_event_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('gbplatform.audit_purge', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'audit events are append-only: % on %.% refused', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
"""

# The reverse is 0001's append-only function itself.
APPEND_ONLY = importlib.import_module("apps.compliance.migrations.0001_initial").CREATE_FUNCTION


class Migration(migrations.Migration):
    dependencies = [("compliance", "0002_data_subject_rights")]

    operations = [migrations.RunSQL(sql=PURGE_ALLOWED, reverse_sql=APPEND_ONLY)]
