from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('mail', '0004_outgoing_queued_at'),
    ]

    operations = [
        migrations.AddField(
            model_name='outgoingmail',
            name='recipient_status',
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
