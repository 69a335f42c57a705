"""Drop the LIKE (varchar_pattern_ops) index Django adds beside the unique notification id on
PostgreSQL: nothing searches notification ids by prefix, and the index costs every insert. (Done by
delivery 0006 until the layers were made one-way; on databases where it ran, this finds nothing.)"""

from django.db import migrations

from core.migration_helpers import run_on_postgresql

DROP = """
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT indexname FROM pg_indexes WHERE tablename = 'inbox_notification' AND right(indexname, 5) = '_like'
    LOOP
        EXECUTE 'DROP INDEX ' || quote_ident(r.indexname);
    END LOOP;
END $$;
"""


class Migration(migrations.Migration):
    dependencies = [("inbox", "0009_push_endpoint_secret")]
    operations = [run_on_postgresql(DROP)]
