"""Fixtures: real PostgreSQL, Redis, SQLite and SMTP; settings through NUDGE_* variables."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from settings import Settings, get_settings
from store.db import dispose_engines, get_engine
from tests import services


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    try:
        with services.postgres_server() as url:
            yield url
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def pg_database(pg_server: str) -> Iterator[str]:
    """One migrated PostgreSQL database for the session; tests empty it between them."""
    from nudge.migrate import upgrade

    with services.postgres_database(pg_server) as url:
        upgrade(Settings(database_url=url).sqlalchemy_url)
        yield url
        dispose_engines()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    try:
        with services.redis_server() as url:
            yield url
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


def _truncate(url: str) -> None:
    engine = get_engine(Settings(database_url=url).sqlalchemy_url)
    tables = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Settings]:
    """Set NUDGE_* variables (for this process and the processes it starts) and return the
    settings they make. ``env(time_scale=100)`` sets NUDGE_TIME_SCALE=100."""
    for key in list(os.environ):
        if key.startswith("NUDGE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("NUDGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NUDGE_REDIS_NAMESPACE", f"nudge-test-{os.getpid()}-{id(tmp_path)}")

    def _set(**values: Any) -> Settings:
        for key, value in values.items():
            if value is None:
                monkeypatch.delenv(f"NUDGE_{key.upper()}", raising=False)
            else:
                monkeypatch.setenv(f"NUDGE_{key.upper()}", str(value))
        get_settings.cache_clear()
        return get_settings()

    yield _set  # type: ignore[misc]
    get_settings.cache_clear()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database URL: a fresh SQLite file, or the session's PostgreSQL."""
    from nudge.migrate import upgrade

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'nudge.db'}"
        upgrade(url)
        yield url
        dispose_engines()
    else:
        url = request.getfixturevalue("pg_database")
        _truncate(url)
        yield url


@pytest.fixture
def settings(env: Callable[..., Settings], database: str) -> Settings:
    return env(database_url=database)


@pytest.fixture
def store_key(settings: Settings) -> tuple[str, str]:
    from store.stores import create_store

    with get_engine(settings.sqlalchemy_url).begin() as conn:
        return create_store(conn, name="Acme Outdoor")


@pytest.fixture
def broker(settings: Settings) -> Any:
    """A stub broker the actors are bound to (what the API and the applier queue lands here)."""
    from senders.broker import setup_broker

    return setup_broker(settings, stub=True)


@pytest.fixture
def client(settings: Settings, broker: Any) -> Iterator[Any]:
    """The API in process (``fastapi.testclient.TestClient``), queueing on ``broker``."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(settings, broker=broker)) as c:
        yield c
