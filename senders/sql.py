"""Set-based SQL for the send path: one statement text for any number of values."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


def among(conn: sa.Connection, column: sa.ColumnElement[Any], values: Iterable[Any]) -> Any:
    """``column IN (values)``; on PostgreSQL written ``column = ANY(%s)`` with one array.

    SQLAlchemy renders ``IN`` with one parameter per value, so every batch size is a new
    statement for psycopg to parse (measured: about a tenth of a batch's CPU); with one array
    parameter the statement text never changes.
    """
    values = list(values)
    if conn.dialect.name == "postgresql":
        array = sa.bindparam(None, values, type_=postgresql.ARRAY(column.type))
        return column == sa.any_(array)
    return column.in_(values)
