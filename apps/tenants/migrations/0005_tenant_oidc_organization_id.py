from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("tenants", "0004_tenant_llm_daily_tokens"),
    ]

    operations = [
        migrations.AddField(
            model_name="tenant",
            name="oidc_organization_id",
            field=models.CharField(
                blank=True, max_length=200, verbose_name="organisation at the platform sign-in provider",
                help_text="Zitadel organisation id (resource owner id) of this tenant at the platform's OIDC "
                          "provider (OIDC_ISSUER). Only users of this organisation, with roles it granted, may "
                          "sign in to the console through that provider; empty: nobody can. Unused when the "
                          "tenant has its own provider.",
            ),
        ),
    ]
