"""Drop the LIKE (varchar_pattern_ops) indexes Django adds beside unique and primary-key CharFields on
PostgreSQL, on the ledger, which every delivery writes (inbox 0010 does the same for its own table;
this migration once did both, reaching into a layer below): nothing searches notification ids by prefix, and
each such index costs every insert. (A later AlterField of these fields would add them back.)"""

from django.db import migrations

from core.migration_helpers import run_on_postgresql

DROP = """
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT indexname FROM pg_indexes
             WHERE tablename = 'delivery_delivery' AND right(indexname, 5) = '_like'
    LOOP
        EXECUTE 'DROP INDEX ' || quote_ident(r.indexname);
    END LOOP;
END $$;
"""


class Migration(migrations.Migration):
    dependencies = [("delivery", "0005_consumer_heartbeat")]
    operations = [run_on_postgresql(DROP)]
