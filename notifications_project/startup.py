"""One line that says what to do, instead of a traceback, for what goes wrong before anything runs: a
database that does not exist or does not answer, a broker that cannot be reached. Used by manage.py."""

from __future__ import annotations

import re


def _database_url_parts() -> dict:
    from django.conf import settings

    db = settings.DATABASES["default"]
    return {"name": db.get("NAME"), "host": db.get("HOST") or "localhost", "port": db.get("PORT") or 5432,
            "user": db.get("USER") or "postgres"}


def explain(exc: BaseException) -> str | None:
    """The one-line message for an error a command can end in before doing anything, or None."""
    text = str(exc)
    kinds = {cls.__name__ for cls in type(exc).__mro__}
    if "OperationalError" in kinds:
        db = _database_url_parts()
        missing = re.search(r'database "([^"]+)" does not exist', text)
        if missing:
            return (f'Database "{missing.group(1)}" does not exist on {db["host"]}:{db["port"]}: create it '
                    f'(createdb -h {db["host"]} -p {db["port"]} -U {db["user"]} {missing.group(1)}) or change DATABASE_URL.')
        if "Connection refused" in text or "could not connect" in text or "connection failed" in text:
            first = text.strip().splitlines()[-1].strip() if text.strip() else "no answer"
            return (f"PostgreSQL does not answer at {db['host']}:{db['port']} ({first}): start it "
                    f"(scripts/test.sh starts the local one) or change DATABASE_URL.")
        if "unable to open database file" in text:
            return f"SQLite cannot open {db['name']}: check that its folder exists and is writable, or change DATABASE_URL."
    if "NoBrokersAvailable" in kinds or "KafkaConnectionError" in kinds or "KafkaTimeoutError" in kinds:
        from django.conf import settings

        servers = ",".join(settings.KAFKA_BOOTSTRAP_SERVERS)
        return (f"No Kafka broker answers at {servers}: start one (scripts/run-all.sh starts the development "
                f"broker; or: scripts/manage dev_broker) or change KAFKA_BOOTSTRAP_SERVERS.")
    return None
