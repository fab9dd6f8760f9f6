"""How fresh the dashboard's sums are: built the first time a store is shown, refreshed in the
background once they are old, and at once with the sidebar's button."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import redis
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from experiments import rollups
from senders.worker import RollupKeeper
from settings import Settings
from store.db import get_engine
from tests.ui.seed import Seeded
from tests.ui.test_pages import assert_clean, metrics
from ui import data


def forget_the_sums(settings: Settings, store_id: str, *, refreshed_at: datetime) -> None:
    """As if the sums were computed before any journey, at ``refreshed_at``."""
    with get_engine(settings.sqlalchemy_url).begin() as conn:
        conn.execute(
            sa.delete(rollups.journey_day_t).where(rollups.journey_day_t.c.store_id == store_id)
        )
        conn.execute(
            sa.update(rollups.state_t)
            .where(rollups.state_t.c.store_id == store_id)
            .values(refreshed_at=refreshed_at)
        )


def test_old_sums_are_refreshed_in_the_background_the_button_refreshes_now(
    settings: Settings, seeded: Seeded, app: Callable[[], AppTest]
) -> None:
    # The first view builds the store's sums
    at = app().run()
    assert_clean(at)
    assert metrics(at)["Carts reached"] == str(seeded.sent)
    url = settings.sqlalchemy_url

    # Sums an hour old: the view reads them as they are and a thread recomputes them
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    forget_the_sums(settings, seeded.store_id, refreshed_at=an_hour_ago)
    as_of = data.ensure_rollups(url, seeded.store_id, 7.0)
    assert abs(as_of - an_hour_ago) < timedelta(seconds=1)
    deadline = time.monotonic() + 60
    while True:
        with get_engine(url).connect() as conn:
            state = rollups.state(conn, seeded.store_id)
        if state.refreshed_at > an_hour_ago + timedelta(minutes=1):
            break
        assert time.monotonic() < deadline, "the background refresh did not run"
        time.sleep(0.2)
    with get_engine(url).connect() as conn:
        journeys = conn.execute(sa.select(sa.func.sum(rollups.journey_day_t.c.journeys))).scalar()
    assert journeys == seeded.carts

    # Fresh but wrong sums are shown as they are, until the refresh button recomputes them
    forget_the_sums(settings, seeded.store_id, refreshed_at=datetime.now(UTC))
    data.clear_caches()
    at = app().run()
    assert metrics(at)["Carts reached"] == "0"
    at.sidebar.button[0].click().run()
    assert_clean(at)
    assert metrics(at)["Carts reached"] == str(seeded.sent)


def test_the_worker_keeps_the_sums_fresh_before_anyone_looks(
    settings: Settings, seeded: Seeded, redis_url: str
) -> None:
    url = settings.sqlalchemy_url
    client = redis.Redis.from_url(redis_url)
    keeper = RollupKeeper(settings, SimpleNamespace(client=client))  # type: ignore[arg-type]
    other = RollupKeeper(settings, SimpleNamespace(client=client))  # type: ignore[arg-type]
    try:
        # Given a store with journeys whose sums were never built, nobody looking
        with get_engine(url).connect() as conn:
            assert rollups.state(conn, seeded.store_id) is None
        # When the worker's keeper runs, it builds them (and the other seeded store's); a
        # second worker leaves it to the first
        assert seeded.store_id in keeper.run_once()
        assert other.run_once() == []
        with get_engine(url).connect() as conn:
            built = rollups.state(conn, seeded.store_id)
            journeys = conn.execute(
                sa.select(sa.func.sum(rollups.journey_day_t.c.journeys)).where(
                    rollups.journey_day_t.c.store_id == seeded.store_id
                )
            ).scalar()
        assert journeys == seeded.carts
        # Then a page view finds them fresh and builds nothing
        assert data.ensure_rollups(url, seeded.store_id, 7.0) == built.refreshed_at
        # And once they are older than the limit, the next run refreshes them
        client.delete(f"{settings.redis_namespace}:rollup-lock")
        assert keeper.run_once() == []  # fresh still
        forget_the_sums(settings, seeded.store_id, refreshed_at=datetime.now(UTC) - keeper.max_age)
        client.delete(f"{settings.redis_namespace}:rollup-lock")
        assert keeper.run_once() == [seeded.store_id]
        with get_engine(url).connect() as conn:
            journeys = conn.execute(
                sa.select(sa.func.sum(rollups.journey_day_t.c.journeys)).where(
                    rollups.journey_day_t.c.store_id == seeded.store_id
                )
            ).scalar()
        assert journeys == seeded.carts
    finally:
        client.delete(f"{settings.redis_namespace}:rollup-lock")
        client.close()
