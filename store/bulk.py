"""Many-row writes at driver speed, for the ingest hot path.

SQLAlchemy's multi-row ``INSERT … VALUES`` costs tens of microseconds per row (on PostgreSQL,
psycopg re-parses the whole giant statement every time). Here each write is one small
statement: on PostgreSQL, arrays unpacked with ``unnest`` (one round trip, any number of
rows, ``RETURNING`` works); on SQLite, the driver's ``executemany`` of one prepared statement.
Arrays go in PostgreSQL's binary format (``%b``): the text format escapes every element with
a regular expression, which was the slowest part of a bulk write.
Values are converted exactly as :mod:`store.types` stores them, so rows written here and rows
written through SQLAlchemy compare and sort alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC
from typing import Any

import orjson
import sqlalchemy as sa

from store.types import UTCDateTime


def _pg_type(column: sa.Column[Any]) -> str:
    t = column.type
    if isinstance(t, UTCDateTime):
        return "timestamptz"
    if isinstance(t, sa.JSON):
        return "jsonb"
    if isinstance(t, sa.Boolean):
        return "bool"
    if isinstance(t, sa.Integer):
        return "int8"
    if isinstance(t, sa.Float):
        return "float8"
    return "text"


_last_datetime: tuple[Any, str] = (None, "")


def _sqlite_datetime(value: Any) -> Any:
    # SQLAlchemy's SQLite DATETIME format, naive UTC (see store.types.UTCDateTime):
    # "%Y-%m-%d %H:%M:%S.%f", which isoformat writes faster than strftime. The last value is
    # remembered: rows written together often share one (the time they were received).
    global _last_datetime
    if value is None:
        return None
    last = _last_datetime
    if value is last[0]:
        return last[1]
    if value.utcoffset():
        value = value.astimezone(UTC)
    text = value.replace(tzinfo=None).isoformat(" ", "microseconds")
    _last_datetime = (value, text)
    return text


def _json_text(value: Any) -> Any:
    return None if value is None else orjson.dumps(value).decode()


def _sqlite_bool(value: Any) -> Any:
    return None if value is None else int(value)


def _as_is(value: Any) -> Any:
    return value


def _sqlite_converter(column: sa.Column[Any]) -> Callable[[Any], Any]:
    """How one column's Python values become SQLite parameters (chosen once per column)."""
    t = column.type
    if isinstance(t, UTCDateTime):
        return _sqlite_datetime
    if isinstance(t, sa.JSON):
        return _json_text
    if isinstance(t, sa.Boolean):
        return _sqlite_bool
    return _as_is


def _pg_converter(column: sa.Column[Any]) -> Callable[[Any], Any]:
    return _json_text if isinstance(column.type, sa.JSON) else _as_is


def _sqlite_rows(
    columns: Sequence[sa.Column[Any]], rows: Sequence[dict[str, Any]], *extra: str
) -> list[tuple[Any, ...]]:
    convert = [(c.name, _sqlite_converter(c)) for c in columns]
    return [(*(f(r[name]) for name, f in convert), *(r[e] for e in extra)) for r in rows]


def _pg_arrays(columns: Sequence[sa.Column[Any]], rows: Sequence[dict[str, Any]]) -> list[Any]:
    return [[f(r[c.name]) for r in rows] for c in columns for f in (_pg_converter(c),)]


def insert_rows(
    conn: sa.Connection,
    table: sa.Table,
    rows: Sequence[dict[str, Any]],
    *,
    conflict: str = "",
    returning: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """Insert ``rows`` (dicts with the same keys) in one statement.

    Args:
        conflict: an ``ON CONFLICT …`` clause, written for both dialects (they agree on it).
        returning: columns to return. On PostgreSQL for the rows inserted or updated; SQLite's
            executemany returns nothing, so callers read back what they need there.
    """
    raw = conn.connection.driver_connection
    assert raw is not None
    return insert_rows_raw(
        raw, conn.dialect.name, table, rows, conflict=conflict, returning=returning
    )


def insert_rows_raw(
    raw: Any,
    dialect: str,
    table: sa.Table,
    rows: Sequence[dict[str, Any]],
    *,
    conflict: str = "",
    returning: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """:func:`insert_rows` on a driver connection (psycopg or sqlite3) of ``dialect``."""
    if not rows:
        return []
    names = list(rows[0])
    columns = [table.c[n] for n in names]
    quoted = ", ".join(f'"{n}"' for n in names)
    if dialect == "postgresql":
        arrays = _pg_arrays(columns, rows)
        unnest = ", ".join(
            f"%b::text[]::{_pg_type(c)}[]" if _pg_type(c) == "jsonb" else f"%b::{_pg_type(c)}[]"
            for c in columns
        )
        back = f" RETURNING {', '.join(returning)}" if returning else ""
        sql = (
            f'INSERT INTO "{table.name}" ({quoted}) SELECT * FROM unnest({unnest}) {conflict}{back}'
        )
        with raw.cursor() as cursor:
            cursor.execute(sql, arrays)
            return list(cursor.fetchall()) if returning else []
    cursor = raw.cursor()
    try:
        cursor.executemany(_sqlite_insert(table, names, conflict), _sqlite_rows(columns, rows))
    finally:
        cursor.close()
    return []


def insert_each_sqlite(
    raw: Any, table: sa.Table, rows: Sequence[dict[str, Any]], *, conflict: str
) -> list[bool]:
    """Insert ``rows`` one statement each on a sqlite3 connection; whether each was inserted
    (``False``: ``conflict`` skipped it). As cheap per row as executemany, and exact."""
    if not rows:
        return []
    names = list(rows[0])
    sql = _sqlite_insert(table, names, conflict)
    execute = raw.execute
    return [
        execute(sql, values).rowcount == 1
        for values in _sqlite_rows([table.c[n] for n in names], rows)
    ]


def _sqlite_insert(table: sa.Table, names: Sequence[str], conflict: str) -> str:
    quoted = ", ".join(f'"{n}"' for n in names)
    placeholders = ", ".join("?" for _ in names)
    return f'INSERT INTO "{table.name}" ({quoted}) VALUES ({placeholders}) {conflict}'


def update_rows(
    conn: sa.Connection,
    table: sa.Table,
    key: str,
    rows: Sequence[dict[str, Any]],
    *,
    where: str = "",
) -> None:
    """``UPDATE table SET … WHERE key = …`` for each row (dicts with the same keys).

    ``where``: a further condition, in SQL both dialects read alike, naming the table's
    columns as ``"table".column`` (on PostgreSQL the rows' values share their names)."""
    if not rows:
        return
    names = [n for n in rows[0] if n != key]
    columns = [table.c[n] for n in names]
    raw = conn.connection.driver_connection
    assert raw is not None
    if conn.dialect.name == "postgresql":
        arrays = [[r[key] for r in rows], *_pg_arrays(columns, rows)]
        casts = ", ".join(
            f"%b::text[]::{_pg_type(c)}[]" if _pg_type(c) == "jsonb" else f"%b::{_pg_type(c)}[]"
            for c in [table.c[key], *columns]
        )
        sets = ", ".join(f'"{n}" = u."{n}"' for n in names)
        alias = ", ".join(f'"{n}"' for n in [key, *names])
        sql = (
            f'UPDATE "{table.name}" SET {sets} FROM unnest({casts}) AS u({alias}) '
            f'WHERE "{table.name}"."{key}" = u."{key}"'
        )
        if where:
            sql += f" AND {where}"
        with raw.cursor() as cursor:
            cursor.execute(sql, arrays)
        return
    sets = ", ".join(f'"{n}" = ?' for n in names)
    sql = f'UPDATE "{table.name}" SET {sets} WHERE "{key}" = ?' + (f" AND {where}" if where else "")
    cursor = raw.cursor()
    try:
        cursor.executemany(sql, _sqlite_rows(columns, rows, key))
    finally:
        cursor.close()
