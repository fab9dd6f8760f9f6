"""The dashboard's daily rollups: a refresh of the recent days gives what a rebuild of every
day gives (nothing counted twice, late changes picked up), and the stored experiment cells are
the report's own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from experiments import rollups
from experiments.lifecycle import experiment_t
from experiments.report import UNITS, tallies
from experiments.tallies import Tallies
from settings import Settings
from store.db import get_engine
from tests.simulated import SimSeeded, decision_t, outcome_t, seed_experiment

TABLES = [
    rollups.cart_day_t,
    rollups.journey_day_t,
    rollups.decision_day_t,
    rollups.message_day_t,
    rollups.experiment_cell_t,
]


def _digits(value: float) -> float:
    """``value`` to 10 significant digits. Sums of the same floats in another order (decision
    ids are random, so rows are scanned and grouped in another order on every run) differ in
    the last bits, and the off-policy sums (``w2r2``: squared profits over squared
    propensities) reach 1e6 here, where six decimals are the 13th digit: a sum landing near a
    rounding boundary then rounds one way in a refresh and the other in a rebuild."""
    return float(f"{value:.10g}")


def snapshot(conn: sa.Connection) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for t in TABLES:
        columns = [c for c in t.c if c.name != "id"]
        rows = conn.execute(sa.select(*columns)).all()
        out[t.name] = sorted(
            (tuple(_digits(v) if isinstance(v, float) else v for v in r) for r in rows), key=repr
        )
    return out


def test_refreshing_recent_days_equals_rebuilding_every_day(settings: Settings) -> None:
    sim: SimSeeded = seed_experiment(settings, carts=300, seed=3)
    engine = get_engine(settings.sqlalchemy_url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        first = rollups.refresh(conn, store_id=sim.store_id, now=now)
    assert first.since is None  # never built: every day
    # When pending journeys get their outcomes (one of them an order) ...
    with engine.begin() as conn:
        pending = conn.execute(
            sa.select(decision_t.c.id, decision_t.c.decided_at)
            .select_from(
                decision_t.outerjoin(outcome_t, outcome_t.c.decision_id == decision_t.c.id)
            )
            .where(outcome_t.c.id.is_(None))
            .order_by(decision_t.c.decided_at)
            .limit(5)
        ).all()
        assert pending
        for i, d in enumerate(pending):
            conn.execute(
                sa.insert(outcome_t).values(
                    decision_id=d.id,
                    store_id=sim.store_id,
                    converted=i == 0,
                    revenue=80.0 if i == 0 else 0.0,
                    message_sent=False,
                    resolved_at=now,
                )
            )
    # ... a refresh of the recent days picks them up
    with engine.begin() as conn:
        recent = rollups.refresh(conn, store_id=sim.store_id, now=now + timedelta(minutes=10))
        assert recent.since is not None
        assert min(d.decided_at for d in pending).date() >= recent.since
        refreshed = snapshot(conn)
    # and equals a rebuild of every day: nothing counted twice, nothing missed
    with engine.begin() as conn:
        rollups.refresh(conn, store_id=sim.store_id, now=now + timedelta(minutes=20), full=True)
        rebuilt = snapshot(conn)
        journeys = conn.execute(sa.select(sa.func.sum(rollups.journey_day_t.c.journeys))).scalar()
    assert refreshed == rebuilt
    assert journeys == sim.carts


def test_stored_experiment_cells_are_the_reports_cells(settings: Settings) -> None:
    sim = seed_experiment(settings, carts=200, seed=4)
    engine = get_engine(settings.sqlalchemy_url)
    with engine.begin() as conn:
        rollups.refresh(conn, store_id=sim.store_id, now=datetime.now(UTC))
    with engine.connect() as conn:
        exp = conn.execute(sa.select(experiment_t)).one()
        for unit in UNITS:
            stored = Tallies.from_rows(
                rollups.experiment_cells(conn, experiment_id=exp.id, unit=unit)
            )
            live = tallies(conn, experiment=exp, unit=unit)

            def keyed(t: Tallies) -> dict[tuple[int, str, str], list[float]]:
                return {
                    (int(d), str(a), str(s)): [_digits(v) for v in t.values[i]]
                    for i, (d, a, s) in enumerate(zip(t.day, t.arm, t.segment, strict=True))
                }

            assert keyed(stored) == keyed(live)
            assert len(live) > 0
