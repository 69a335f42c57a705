"""On PostgreSQL, every statement that inserts outbox rows wakes the relay (LISTEN outbox_event).

SQLite has no NOTIFY: there the relay polls.
"""

from django.db import migrations

from notifications_project.migration_helpers import notify_after_insert


class Migration(migrations.Migration):
    dependencies = [("delivery", "0001_initial")]
    operations = [notify_after_insert(table="delivery_outboxevent", channel="outbox_event")]
