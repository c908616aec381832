from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("mail", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="mailboxstate",
            name="baseline_uid",
            field=models.BigIntegerField(default=0),
        ),
        # Positions saved before the baseline existed start over at the next poll (a UIDVALIDITY is never 0):
        # their mailboxes get a baseline, and what is unread there is answered, as a first poll does.
        migrations.RunSQL("UPDATE mail_mailboxstate SET uidvalidity = 0", migrations.RunSQL.noop),
    ]
