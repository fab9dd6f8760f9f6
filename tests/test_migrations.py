"""The migrations are the schema: they apply, match the models, and roll back, on both
databases."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import store.models  # noqa: F401  (registers the tables)
from nudge.migrate import downgrade, upgrade
from settings import Settings
from store.db import dispose_engines, get_engine
from tests import services


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
    else:
        server = request.getfixturevalue("pg_server")
        with services.postgres_database(server) as url:
            yield Settings(database_url=url).sqlalchemy_url
            dispose_engines()


def test_upgrade_matches_models_and_downgrade_removes_everything(empty_database: str) -> None:
    # Given an empty database, when migrated to head
    upgrade(empty_database)
    engine = get_engine(empty_database)

    # Then the schema is exactly what the models describe
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata
        )
    assert diff == [], f"models and migrations disagree: {diff}"
    tables = set(sa.inspect(engine).get_table_names())
    assert set(SQLModel.metadata.tables) <= tables

    # And downgrading to base leaves only Alembic's own bookkeeping
    downgrade(empty_database, "base")
    engine.dispose()
    assert set(sa.inspect(get_engine(empty_database)).get_table_names()) <= {"alembic_version"}

    # And upgrading again works (migrations are re-runnable from scratch)
    upgrade(empty_database)
    assert set(SQLModel.metadata.tables) <= set(sa.inspect(engine).get_table_names())
