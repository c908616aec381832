from django.db import migrations, models


class Migration(migrations.Migration):
    """Existing documents get NULL (their vectors' place is not known: looked for everywhere once); new ones
    start with "" (no vectors anywhere)."""

    dependencies = [
        ("kb", "0005_document_index_generation"),
    ]

    operations = [
        migrations.AddField(
            model_name="document",
            name="vectors_in",
            field=models.CharField(blank=True, max_length=220, null=True),
        ),
        migrations.AlterField(
            model_name="document",
            name="vectors_in",
            field=models.CharField(blank=True, default="", max_length=220, null=True),
        ),
    ]
