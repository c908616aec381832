from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('mail', '0005_outgoing_recipient_status'),
    ]

    operations = [
        migrations.AlterField(
            model_name='outgoingmail',
            name='in_reply_to',
            field=models.CharField(blank=True, max_length=998),
        ),
    ]
