"""Bot memory values encrypted at rest: existing rows are sealed under the active key of the tenant.

Runs per schema (migrate_schemas sets the connection's schema, which the encrypted field binds each value
to). Reversible: going back decrypts into a plain JSON column again.
"""

from django.db import migrations

import apps.core.fields

# Rows read and rewritten per round trip; bounded memory on a large table.
CHUNK_ROWS = 500


def encrypt_existing(apps, schema_editor):
    BotMemory = apps.get_model("bots", "BotMemory")
    alias = schema_editor.connection.alias
    rows = BotMemory.objects.using(alias).exclude(value__isnull=True).only("pk", "value")
    for row in rows.iterator(chunk_size=CHUNK_ROWS):
        BotMemory.objects.using(alias).filter(pk=row.pk).update(value_sealed=row.value)


def decrypt_back(apps, schema_editor):
    BotMemory = apps.get_model("bots", "BotMemory")
    alias = schema_editor.connection.alias
    rows = BotMemory.objects.using(alias).exclude(value_sealed__isnull=True).only("pk", "value_sealed")
    for row in rows.iterator(chunk_size=CHUNK_ROWS):
        BotMemory.objects.using(alias).filter(pk=row.pk).update(value=row.value_sealed)


class Migration(migrations.Migration):

    dependencies = [
        ('bots', '0003_botschedule'),
    ]

    operations = [
        migrations.AddField(
            model_name='botmemory',
            name='value_sealed',
            field=apps.core.fields.EncryptedJSONField(null=True),
        ),
        migrations.RunPython(encrypt_existing, decrypt_back, elidable=False),
        migrations.RemoveField(
            model_name='botmemory',
            name='value',
        ),
        migrations.RenameField(
            model_name='botmemory',
            old_name='value_sealed',
            new_name='value',
        ),
    ]
