"""Idempotency keys moved to the bottom layer (`core`): rows copied, old table dropped."""

from django.db import migrations

COLUMNS = "id, scoped_key, user_id, request_fingerprint, response_status, response_body, created_at"


def copy_rows(apps, schema_editor):
    schema_editor.execute(f"INSERT INTO core_idempotencykey ({COLUMNS}) "
                          f"SELECT {COLUMNS} FROM notifications_project_idempotencykey")
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("SELECT setval(pg_get_serial_sequence('core_idempotencykey', 'id'), "
                              "COALESCE((SELECT MAX(id) FROM core_idempotencykey), 0) + 1, false)")


class Migration(migrations.Migration):
    dependencies = [("notifications_project", "0001_idempotency_keys"), ("core", "0001_initial")]
    operations = [
        migrations.RunPython(copy_rows, migrations.RunPython.noop),
        migrations.DeleteModel(name="IdempotencyKey"),
    ]
