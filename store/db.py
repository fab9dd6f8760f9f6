"""Engines and sessions. One engine per database URL per process."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def get_engine(url: str) -> Engine:
    """The engine for ``url``, created once per process."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = _create_engine(url)
        return engine


def dispose_engines() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def _create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        database = sa.engine.make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=8,
            json_serializer=_json,
        )
        _make_sqlite_behave(engine)
        return engine
    return sa.create_engine(
        url, pool_size=10, max_overflow=10, pool_pre_ping=True, json_serializer=_json
    )


def _json(value: Any) -> str:
    # orjson: several times faster than json for the payloads and items stored per event.
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # integers beyond 64 bits (a random generator's state): json copes
        return json.dumps(value)


#: How long a SQLite writer waits for another's write lock before giving up.
BUSY_TIMEOUT_MS = 30_000


def _make_sqlite_behave(engine: Engine) -> None:
    """WAL, a busy timeout and ``BEGIN IMMEDIATE``.

    Several processes (API, workers) write the same file. A deferred transaction that reads
    and then writes can fail at once with "database is locked" when another writer got there
    first; taking the write lock at BEGIN makes writers queue on the busy timeout instead.
    """

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        # A read-only connection (see read_only()) must not queue for the write lock: it may
        # be opened while this very thread holds the lock on another connection.
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


READ_ONLY = "nudge_read_only"


class WriteLocked(Exception):
    """Another connection holds SQLite's write lock, and the caller chose not to wait."""


def read_only(engine: Engine) -> sa.Connection:
    """A connection for reads only (on SQLite: a deferred transaction, no write lock)."""
    return engine.connect().execution_options(**{READ_ONLY: True})


def insert(table: Any, dialect_name: str) -> Any:
    """A dialect ``INSERT`` that knows ``ON CONFLICT`` (SQLite and PostgreSQL spell it alike)."""
    if dialect_name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def session_scope(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session
