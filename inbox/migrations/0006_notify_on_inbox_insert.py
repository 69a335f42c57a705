"""On PostgreSQL, every statement that writes inbox rows wakes the live streams (LISTEN inbox_notification).

SQLite has no NOTIFY: there the streams poll.
"""

from django.db import migrations

from core.migration_helpers import notify_after_insert
from inbox.models import NEW_NOTIFICATION_CHANNEL


class Migration(migrations.Migration):
    dependencies = [("inbox", "0005_preferences")]
    operations = [notify_after_insert(table="inbox_notification", channel=NEW_NOTIFICATION_CHANNEL)]
