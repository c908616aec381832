from django.db import migrations, models

INDEX = "chat_session_wait_due_idx"


def _concurrently(schema_editor) -> str:
    # Outside a transaction (this migration is not atomic) the index is built CONCURRENTLY; inside one (a test
    # migrating back and forth in its own transaction, which PostgreSQL refuses CONCURRENTLY in) it is not.
    return "" if schema_editor.connection.in_atomic_block else "CONCURRENTLY "


def index_create(apps, schema_editor):
    table = schema_editor.quote_name(apps.get_model("chat", "ChatSession")._meta.db_table)
    schema_editor.execute(f"CREATE INDEX {_concurrently(schema_editor)}IF NOT EXISTS {INDEX} ON {table} "
                          "(wait_due_at) WHERE wait_due_at IS NOT NULL")


def index_drop(apps, schema_editor):
    schema_editor.execute(f"DROP INDEX {_concurrently(schema_editor)}IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    """The lost-wait sweep's partial index, built CONCURRENTLY (outside a transaction): chat turns go on reading
    and writing sessions while it is built. IF NOT EXISTS: a development database that applied this migration's
    first form (the index made with the column) already has it."""

    atomic = False

    dependencies = [
        ('chat', '0004_chatsession_wait_due_at'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(index_create, index_drop)],
            state_operations=[
                migrations.AddIndex(
                    model_name='chatsession',
                    index=models.Index(condition=models.Q(('wait_due_at__isnull', False)), fields=['wait_due_at'],
                                       name=INDEX),
                ),
            ],
        ),
    ]
