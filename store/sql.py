"""SQL expressions that read the same on SQLite and PostgreSQL (JSON keys, UTC days, flags).

Reports in ``experiments`` and the dashboard's queries aggregate in the database with these,
so the two dialects group and sum the same rows the same way.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

_KEY = re.compile(r"^[a-z_][a-z0-9_]*$")


def json_text(column: Any, key: str, dialect: str) -> sa.ColumnElement[Any]:
    """``column ->> 'key'`` on PostgreSQL, ``json_extract(column, '$.key')`` on SQLite.

    ``key`` may be a dotted path into nested objects (``cart.id``). Its parts are written into
    the SQL as literals (an expression index on ``(context ->> 'device')`` only matches a
    literal), so each must be a plain identifier.

    Example:
        >>> from sqlalchemy.dialects import postgresql, sqlite
        >>> c = sa.column("context")
        >>> str(json_text(c, "device", "postgresql").compile(dialect=postgresql.dialect()))
        "context ->> 'device'"
        >>> str(json_text(c, "device", "sqlite").compile(dialect=sqlite.dialect()))
        "json_extract(context, '$.device')"
        >>> str(json_text(c, "cart.id", "postgresql").compile(dialect=postgresql.dialect()))
        "(context -> 'cart') ->> 'id'"
    """
    parts = key.split(".")
    if not all(_KEY.match(p) for p in parts):
        raise ValueError(f"key must be plain identifiers joined by dots, not {key!r}")
    if dialect == "postgresql":
        for part in parts[:-1]:
            column = column.op("->")(sa.literal_column(f"'{part}'"))
        extracted: sa.ColumnElement[Any] = column.op("->>", return_type=sa.String)(
            sa.literal_column(f"'{parts[-1]}'")
        )
        return extracted
    return sa.func.json_extract(column, sa.literal_column(f"'$.{key}'"), type_=sa.String)


def json_number(column: Any, key: str, dialect: str) -> sa.ColumnElement[Any]:
    """A numeric JSON value (``(context ->> 'key')::float`` on PostgreSQL)."""
    return sa.cast(json_text(column, key, dialect), sa.Float)


def json_true(column: Any, key: str, dialect: str) -> sa.ColumnElement[bool]:
    """Whether the JSON value at ``key`` is ``true`` (missing, null or false: not).

    Example:
        >>> from sqlalchemy.dialects import postgresql, sqlite
        >>> c = sa.column("context")
        >>> str(json_true(c, "holdout", "postgresql").compile(dialect=postgresql.dialect()))
        "(context ->> 'holdout') = 'true'"
        >>> str(json_true(c, "holdout", "sqlite").compile(dialect=sqlite.dialect()))
        "json_type(context, '$.holdout') = 'true'"
    """
    if dialect == "postgresql":
        return json_text(column, key, dialect) == sa.literal_column("'true'")
    if not _KEY.match(key):
        raise ValueError(f"key must be a plain identifier, not {key!r}")
    kind = sa.func.json_type(column, sa.literal_column(f"'$.{key}'"), type_=sa.String)
    return kind == sa.literal_column("'true'")


def day_of(column: Any, dialect: str) -> sa.ColumnElement[Any]:
    """The UTC calendar day of a timestamp column (SQLite keeps naive UTC text)."""
    if dialect == "postgresql":
        return sa.cast(sa.func.timezone("UTC", column), sa.Date)
    return sa.func.date(column)


def flag(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
    """1 where ``condition`` holds, else 0 (to sum)."""
    return sa.case((condition, 1), else_=0)
