from django.db import migrations, models

INDEX = "chat_session_wait_due_idx"


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
            database_operations=[
                migrations.RunSQL(
                    f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON chat_chatsession (wait_due_at) "
                    "WHERE wait_due_at IS NOT NULL",
                    reverse_sql=f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}",
                ),
            ],
            state_operations=[
                migrations.AddIndex(
                    model_name='chatsession',
                    index=models.Index(condition=models.Q(('wait_due_at__isnull', False)), fields=['wait_due_at'],
                                       name=INDEX),
                ),
            ],
        ),
    ]
