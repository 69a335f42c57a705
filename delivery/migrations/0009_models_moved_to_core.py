"""The outbox, dead letters and consumer heartbeats moved to the bottom layer (`core`), which every
app writes through: their rows are copied into core's tables, then the old tables are dropped."""

from django.db import migrations

from core.migration_helpers import run_on_postgresql

MOVED = {
    "outboxevent": "id, topic, key, payload, headers, created_at, published_at, published_partition, published_offset",
    "deadletter": ("id, reason, error, notification_id, channel, recipient_external_id, campaign_id, attempts, "
                   "original_topic, original_partition, original_offset, payload, status, created_at, resolved_at"),
    "consumerheartbeat": "process, \"group\", last_poll_at, records_total, lag",
}
SERIAL = ("outboxevent", "deadletter")


def copy_rows(apps, schema_editor):
    for table, columns in MOVED.items():
        schema_editor.execute(f"INSERT INTO core_{table} ({columns}) SELECT {columns} FROM delivery_{table}")
    if schema_editor.connection.vendor == "postgresql":  # SQLite's AUTOINCREMENT follows inserted ids itself
        for table in SERIAL:
            schema_editor.execute(
                f"SELECT setval(pg_get_serial_sequence('core_{table}', 'id'), "
                f"COALESCE((SELECT MAX(id) FROM core_{table}), 0) + 1, false)"
            )


class Migration(migrations.Migration):
    dependencies = [("delivery", "0008_outbox_retention"), ("core", "0001_initial")]
    operations = [
        migrations.RunPython(copy_rows, migrations.RunPython.noop),
        run_on_postgresql("DROP TRIGGER IF EXISTS delivery_outboxevent_notify ON delivery_outboxevent; "
                          "DROP FUNCTION IF EXISTS delivery_outboxevent_notify();"),
        migrations.DeleteModel(name="ConsumerHeartbeat"),
        migrations.DeleteModel(name="DeadLetter"),
        migrations.DeleteModel(name="OutboxEvent"),
    ]
