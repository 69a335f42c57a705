"""On PostgreSQL, every statement that writes inbox rows wakes the live streams (LISTEN inbox_notification).

SQLite has no NOTIFY: there the streams poll.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION inbox_notification_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('inbox_notification', '');
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER inbox_notification_notify AFTER INSERT ON inbox_notification
    FOR EACH STATEMENT EXECUTE FUNCTION inbox_notification_notify();
"""
DROP = """
DROP TRIGGER IF EXISTS inbox_notification_notify ON inbox_notification;
DROP FUNCTION IF EXISTS inbox_notification_notify();
"""


def _on_postgresql(sql):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("inbox", "0005_preferences")]
    operations = [migrations.RunPython(_on_postgresql(CREATE), _on_postgresql(DROP))]
