from datetime import timedelta

from django.db import migrations
from django.db.models import F
from django.utils import timezone

# The longest WAIT (apps.basic.limits.MAX_WAIT_SECONDS, the spec's cap), as of this migration.
MAX_WAIT = timedelta(seconds=300)
# Dialogs at a WAIT whose session was active this recently get a due time, so the lost-wait sweep resumes them if
# their resume was lost. Older ones are left as they were: a WAIT lost before the sweep existed stayed stuck for
# good, and resuming a conversation of months ago would append bot messages to it and bring it to the top of the
# console's list as if it had just happened.
RECENT = timedelta(days=1)


def recent_waiting_dialogs_due(apps, schema_editor):
    """Recent dialogs already at a WAIT when this runs: their WAIT ended at the latest the longest WAIT after the turn
    that reached it (its last activity), so the sweep never resumes one before its WAIT is over. One statement
    through the last-activity index (chat_session_activity_idx) over the recent sessions only, not a scan of every
    row's state."""
    ChatSession = apps.get_model("chat", "ChatSession")
    ChatSession.objects.filter(last_activity__gte=timezone.now() - RECENT, state__dialog__kind="wait",
                               wait_due_at__isnull=True).update(wait_due_at=F("last_activity") + MAX_WAIT)


class Migration(migrations.Migration):

    dependencies = [
        ('chat', '0005_chatsession_wait_due_idx'),
    ]

    operations = [
        migrations.RunPython(recent_waiting_dialogs_due, migrations.RunPython.noop),
    ]
