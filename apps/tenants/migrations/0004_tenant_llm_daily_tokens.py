from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("tenants", "0003_tenant_encrypt_messages"),
    ]

    operations = [
        migrations.AddField(
            model_name="tenant",
            name="llm_daily_tokens",
            field=models.PositiveBigIntegerField(blank=True, null=True),
        ),
    ]
