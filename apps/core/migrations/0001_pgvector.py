"""Install pgvector where the server has it: knowledge-base vectors live in each tenant's schema.

The extension is created once in `public`, which is on every tenant's search_path. A server without the
package (Debian's PostgreSQL 15, say) still migrates; /api/health then reports the vector store degraded.
"""

from django.db import migrations

SQL = """
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') THEN
        CREATE EXTENSION IF NOT EXISTS vector SCHEMA public;
    END IF;
END
$$;
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.schema_name == "public":
        schema_editor.execute(SQL)


class Migration(migrations.Migration):
    dependencies = []
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
