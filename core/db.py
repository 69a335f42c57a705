"""Bulk inserts for the hot path (the worker's batch), faster than bulk_create on PostgreSQL.

Django's psycopg backend binds parameters on the client: a 2,000-row INSERT means splitting and
quoting 20,000 placeholders, which costs more than the insert itself. On PostgreSQL we send one
array per column instead (INSERT ... SELECT FROM unnest(...)), bound by the server: one statement,
as many parameters as columns. Elsewhere (SQLite, development) a multi-row VALUES does the same job.
"""

from __future__ import annotations

import re
import select
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson
import psycopg
from django.db import connection, connections, models

_VALUES_CHUNK = 500


def _json(value) -> str:
    return orjson.dumps(value).decode()


def _array_type(field: models.Field) -> str:
    """The array type to bind a column's values as: the column's type without its length, because an
    explicit cast to varchar(n) truncates silently; the insert's own assignment then refuses a value
    that is too long (an error for that record) instead of storing or matching a shortened one."""
    return re.sub(r"^(varchar|character varying)\(\d+\)$", r"\1", field.db_type(connection)) + "[]"


def bulk_insert(
    *,
    model: type[models.Model],
    columns: Sequence[str],
    rows: Sequence[tuple],
    ignore_conflicts_on: str | Sequence[str] | None = None,
    returning: str | Sequence[str] | None = None,
    same: Mapping[str, object] | None = None,
) -> list[tuple]:
    """Insert rows (tuples in `columns` order, by field name); optionally skip rows whose
    `ignore_conflicts_on` column (or columns: a unique constraint's) conflicts, and return the `returning` column(s) of inserted rows
    (in no promised order: match them by value, not by position). `same` gives columns whose value
    is the same in every row: bound once, not once per row (a campaign's content in its inbox rows).

    Values go to the database as they are: JSON fields take Python objects, foreign keys their ids.
    """
    if not rows:
        return []
    same = dict(same or {})
    if same and connection.vendor != "postgresql":  # the VALUES path below: spelled out in each row
        columns, rows, same = (*columns, *same), [(*row, *same.values()) for row in rows], {}
    fields = [model._meta.get_field(name) for name in columns]
    same_fields = [model._meta.get_field(name) for name in same]
    table = connection.ops.quote_name(model._meta.db_table)
    column_sql = ", ".join(connection.ops.quote_name(f.column) for f in [*fields, *same_fields])
    suffix = ""
    if ignore_conflicts_on:
        names = [ignore_conflicts_on] if isinstance(ignore_conflicts_on, str) else list(ignore_conflicts_on)
        target = ", ".join(connection.ops.quote_name(model._meta.get_field(n).column) for n in names)
        suffix += f" ON CONFLICT ({target}) DO NOTHING"
    if returning:
        names = [returning] if isinstance(returning, str) else list(returning)
        suffix += " RETURNING " + ", ".join(connection.ops.quote_name(model._meta.get_field(n).column) for n in names)

    if connection.vendor == "postgresql":
        json_columns = {i for i, f in enumerate(fields) if isinstance(f, models.JSONField)}
        if json_columns:
            rows = [tuple(_json(v) if i in json_columns else v for i, v in enumerate(row)) for row in rows]
        arrays = ", ".join(f"%b::{_array_type(f)}" for f in fields)  # binary: no text escaping
        scalars = "".join(f", %s::{_array_type(f)[:-2]}" for f in same_fields)
        sql = f"INSERT INTO {table} ({column_sql}) SELECT u.*{scalars} FROM unnest({arrays}) AS u{suffix}"
        # The statement's order: the same values (in the SELECT list) first, then the arrays.
        params = [_json(v) if isinstance(f, models.JSONField) else v for f, v in zip(same_fields, same.values())]
        params += [list(column) for column in zip(*rows)]
        connection.ensure_connection()
        with psycopg.Cursor(connection.connection) as cursor:  # server-side binding
            cursor.execute(sql, params)
            return cursor.fetchall() if returning else []

    placeholders = "(" + ", ".join(["%s"] * len(fields)) + ")"
    inserted: list[tuple] = []
    with connection.cursor() as cursor:
        for start in range(0, len(rows), _VALUES_CHUNK):
            chunk = rows[start : start + _VALUES_CHUNK]
            params = [f.get_db_prep_save(value, connection) for row in chunk for f, value in zip(fields, row)]
            cursor.execute(
                f"INSERT INTO {table} ({column_sql}) VALUES {', '.join([placeholders] * len(chunk))}{suffix}", params
            )
            if returning:
                inserted.extend(cursor.fetchall())
    return inserted


def values_for_keys(*, model: type[models.Model], key: str, keys: Sequence, columns: Sequence[str]) -> list[tuple]:
    """SELECT columns FROM model WHERE key IN keys, with the keys as one server-bound array on PostgreSQL."""
    if not keys:
        return []
    if connection.vendor != "postgresql":
        return list(model.objects.filter(**{f"{key}__in": list(keys)}).values_list(*columns))
    field = model._meta.get_field(key)
    fields = [model._meta.get_field(c) for c in columns]
    column_sql = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    sql = (
        f"SELECT {column_sql} FROM {connection.ops.quote_name(model._meta.db_table)} "
        f"WHERE {connection.ops.quote_name(field.column)} = ANY(%b::{_array_type(field)})"
    )
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, [list(keys)])
        rows = cursor.fetchall()
    # Django's connection loads jsonb as text (its fields decode it): decode JSON columns here too.
    json_columns = [i for i, f in enumerate(fields) if isinstance(f, models.JSONField)]
    if json_columns:
        rows = [tuple(orjson.loads(v) if i in json_columns and isinstance(v, str) else v for i, v in enumerate(row))
                for row in rows]
    return rows


def fetch_bound(sql: str, params: Sequence) -> list[tuple]:
    """Run one statement with its parameters bound by the server (`%s`, or `%b` for binary arrays), and
    return its rows: for the hot path's hand-written statements (PostgreSQL only)."""
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def bulk_copy(*, model: type[models.Model], columns: Sequence[str], rows: Sequence[tuple]) -> None:
    """Insert rows that cannot conflict, by COPY on PostgreSQL (the fastest way in), else bulk_insert."""
    if connection.vendor != "postgresql":
        bulk_insert(model=model, columns=columns, rows=rows)
        return
    if not rows:
        return
    fields = [model._meta.get_field(name) for name in columns]
    json_columns = {i for i, f in enumerate(fields) if isinstance(f, models.JSONField)}
    column_sql = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor, cursor.copy(
        f"COPY {connection.ops.quote_name(model._meta.db_table)} ({column_sql}) FROM STDIN"
    ) as copy:
        for row in rows:
            copy.write_row([_json(v) if i in json_columns else v for i, v in enumerate(row)] if json_columns else row)


def delete_batch(queryset: models.QuerySet, *, limit: int) -> int:
    """Delete at most `limit` rows of `queryset` in one short statement, and return how many:
    `DELETE FROM t WHERE id IN (SELECT id FROM t WHERE ... LIMIT n)`. Each call is its own transaction
    (in autocommit), so a purge of millions of rows never holds its locks for long. The model must have
    no relations pointing at it and no delete signals (none are sent)."""
    model = queryset.model
    inner = queryset.order_by().values("pk")[:limit]
    inner_sql, params = inner.query.get_compiler(using=queryset.db).as_sql()
    table = connection.ops.quote_name(model._meta.db_table)
    pk = connection.ops.quote_name(model._meta.pk.column)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE {pk} IN ({inner_sql})", params)
        return cursor.rowcount


@dataclass(frozen=True)
class Condition:
    """An SQL boolean expression and its parameters, that a write may carry in its own statement
    (`INSERT ... SELECT ... WHERE <sql>`): the write happens only while the condition holds."""

    sql: str
    params: list

    @classmethod
    def all(cls, *conditions: Condition | None) -> Condition | None:
        """All of the conditions given (None ones left out); None when there are none."""
        given = [c for c in conditions if c is not None]
        if len(given) <= 1:
            return given[0] if given else None
        return cls(sql=" AND ".join(f"({c.sql})" for c in given), params=[p for c in given for p in c.params])

    def holds(self) -> bool:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {self.sql}", self.params)
            return bool(cursor.fetchone()[0])


def connections_trust_idle(**kwargs) -> None:
    """At the start of a request (`request_started`, after Django's own handler): a persistent
    PostgreSQL connection whose socket has nothing to read is taken as healthy, without the `SELECT 1`
    round trip that CONN_HEALTH_CHECKS costs on every request. A server that closed the connection
    (restart, pg_terminate_backend) leaves an error message or the end of the stream on the socket: then
    Django's own check runs, finds it broken, and reconnects, as before."""
    for conn in connections.all(initialized_only=True):
        raw = conn.connection
        if raw is None or conn.vendor != "postgresql" or not conn.health_check_enabled or conn.health_check_done:
            continue
        try:
            readable, _, _ = select.select([raw.fileno()], [], [], 0)
        except (OSError, ValueError):  # closed underneath: leave it to Django's check
            continue
        if not readable and not raw.closed:
            conn.health_check_done = True
