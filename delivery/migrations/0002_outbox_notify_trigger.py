"""On PostgreSQL, every statement that inserts outbox rows wakes the relay (LISTEN outbox_event).

SQLite has no NOTIFY: there the relay polls.
"""

from django.db import migrations

from core.migration_helpers import notify_after_insert
from core.outbox import NOTIFY_CHANNEL


class Migration(migrations.Migration):
    dependencies = [("delivery", "0001_initial")]
    operations = [notify_after_insert(table="delivery_outboxevent", channel=NOTIFY_CHANNEL)]
