"""Helpers for migrations that run SQL on PostgreSQL only (SQLite, the development default, skips them)."""

from django.db import migrations


def run_on_postgresql(forward_sql: str, backward_sql: str = "") -> migrations.RunPython:
    def run(sql):
        def apply(apps, schema_editor):
            if sql and schema_editor.connection.vendor == "postgresql":
                schema_editor.execute(sql)

        return apply

    return migrations.RunPython(run(forward_sql), run(backward_sql))


def notify_after_insert(*, table: str, channel: str) -> migrations.RunPython:
    """A statement trigger that NOTIFYs `channel` (empty payload) after every INSERT into `table`."""
    function = f"{table}_notify"
    return run_on_postgresql(
        f"""
        CREATE OR REPLACE FUNCTION {function}() RETURNS trigger AS $$
        BEGIN
            PERFORM pg_notify('{channel}', '');
            RETURN NULL;
        END
        $$ LANGUAGE plpgsql;
        CREATE TRIGGER {function} AFTER INSERT ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {function}();
        """,
        f"DROP TRIGGER IF EXISTS {function} ON {table}; DROP FUNCTION IF EXISTS {function}();",
    )
