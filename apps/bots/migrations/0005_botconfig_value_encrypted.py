"""Bot config values encrypted at rest (credentials live there when they are not vault: references).

Runs per schema, like 0004; reversible.
"""

from django.db import migrations

import apps.core.fields

# Rows read and rewritten per round trip; bounded memory on a large table.
CHUNK_ROWS = 500


def encrypt_existing(apps, schema_editor):
    BotConfig = apps.get_model("bots", "BotConfig")
    alias = schema_editor.connection.alias
    for row in BotConfig.objects.using(alias).only("pk", "value").iterator(chunk_size=CHUNK_ROWS):
        BotConfig.objects.using(alias).filter(pk=row.pk).update(value_sealed=row.value)


def decrypt_back(apps, schema_editor):
    BotConfig = apps.get_model("bots", "BotConfig")
    alias = schema_editor.connection.alias
    for row in BotConfig.objects.using(alias).only("pk", "value_sealed").iterator(chunk_size=CHUNK_ROWS):
        BotConfig.objects.using(alias).filter(pk=row.pk).update(value=row.value_sealed)


class Migration(migrations.Migration):

    dependencies = [
        ("bots", "0004_botmemory_value_encrypted"),
    ]

    operations = [
        migrations.AddField(
            model_name="botconfig",
            name="value_sealed",
            field=apps.core.fields.EncryptedTextField(blank=True, default=""),
            preserve_default=False,
        ),
        migrations.RunPython(encrypt_existing, decrypt_back, elidable=False),
        migrations.RemoveField(model_name="botconfig", name="value"),
        migrations.RenameField(model_name="botconfig", old_name="value_sealed", new_name="value"),
    ]
