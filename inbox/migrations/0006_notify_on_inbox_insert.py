"""On PostgreSQL, every statement that writes inbox rows wakes the live streams (LISTEN inbox_notification).

SQLite has no NOTIFY: there the streams poll.
"""

from django.db import migrations

from notifications_project.migration_helpers import notify_after_insert


class Migration(migrations.Migration):
    dependencies = [("inbox", "0005_preferences")]
    operations = [notify_after_insert(table="inbox_notification", channel="inbox_notification")]
