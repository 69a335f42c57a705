"""On PostgreSQL, every statement that inserts outbox rows wakes the relay (LISTEN outbox_event).

SQLite has no NOTIFY: there the relay polls.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION delivery_outbox_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('outbox_event', '');
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER delivery_outbox_notify AFTER INSERT ON delivery_outboxevent
    FOR EACH STATEMENT EXECUTE FUNCTION delivery_outbox_notify();
"""
DROP = """
DROP TRIGGER IF EXISTS delivery_outbox_notify ON delivery_outboxevent;
DROP FUNCTION IF EXISTS delivery_outbox_notify();
"""


def _on_postgresql(sql):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("delivery", "0001_initial")]
    operations = [migrations.RunPython(_on_postgresql(CREATE), _on_postgresql(DROP))]
