"""The report the dashboard, the CLI and the API share: summed in the database, equal to the
same statistics computed from every decision row.

The experiment is one the offline simulator played out with the production bandit, on SQLite
and on PostgreSQL.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from experiments.ope import arm_value_ips
from experiments.report import CONTROL, NOTHING, build, decision_t, load, outcome_t, report, tallies
from experiments.roi import roi_report
from experiments.stats import Outcomes, arm_summary, lift_vs_holdout, srm_check
from experiments.tallies import COLUMNS, Tallies
from settings import Settings
from store.db import get_engine
from tests.simulated import SimSeeded, seed_experiment


@pytest.fixture
def simulated(settings: Settings) -> SimSeeded:
    return seed_experiment(settings, carts=300, seed=5)


def plain(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return plain(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [plain(v) for v in x]
    return x


def same(a: Any, b: Any) -> None:
    """Equal, floats to 1e-9 relative (sums in another order round differently)."""
    a, b = plain(a), plain(b)
    if isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            same(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            same(x, y)
    elif isinstance(a, float) and isinstance(b, float) and np.isnan(a):
        assert np.isnan(b)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-9)
    else:
        assert a == b


def test_database_sums_equal_the_rows_sums(settings: Settings, simulated: SimSeeded) -> None:
    with get_engine(settings.sqlalchemy_url).connect() as conn:
        exp, outcomes = load(conn, store_id=simulated.store_id, name=simulated.experiment)
        assert outcomes is not None
        cells = tallies(conn, experiment=exp, unit="decision")
    # Every decision is in a cell, pending ones included; outcomes only where they are final
    assert cells.column("decisions").sum() == simulated.decisions
    assert cells.column("carts").sum() == len(outcomes) == simulated.resolved
    assert 0 < simulated.resolved < simulated.decisions  # the last week is still open
    rows = Tallies.from_outcomes(outcomes, margin_rate=0.4)
    db = cells.select(cells.column("carts") > 0)

    def keyed(t: Tallies) -> dict[tuple[int, str, str], np.ndarray]:
        return {
            (int(d), str(a), str(s)): t.values[i, : COLUMNS.index("decisions")]
            for i, (d, a, s) in enumerate(zip(t.day, t.arm, t.segment, strict=True))
        }

    mine, theirs = keyed(db), keyed(rows)
    assert set(mine) == set(theirs)
    for key, values in mine.items():
        np.testing.assert_allclose(values, theirs[key], rtol=1e-9, atol=1e-9)


def journeys_of(conn: sa.Connection, experiment_id: str) -> tuple[Outcomes, dict[str, int]]:
    """Row by row: every journey that entered at touch 1, its first touch's arm, its order
    once and all its costs; the final ones as Outcomes, and how many entered per group."""
    d, o = decision_t, outcome_t
    rows = conn.execute(
        sa.select(
            d,
            o.c.id.label("oid"),
            o.c.converted,
            o.c.revenue,
            o.c.discount_amount,
            o.c.message_sent,
            o.c.message_cost,
        )
        .select_from(d.outerjoin(o, o.c.decision_id == d.c.id))
        .where(d.c.experiment_id == experiment_id)
    ).all()
    by_journey: dict[tuple[int, int], list[Any]] = {}
    for r in rows:
        by_journey.setdefault((r.cart_id, r.journey), []).append(r)
    entered = {CONTROL: 0, "treated": 0}
    cols: dict[str, list[Any]] = {
        k: [] for k in ("arm", "conv", "rev", "disc", "cost", "sent", "seg", "day")
    }
    for touches in by_journey.values():
        first = min(touches, key=lambda r: r.touch)
        if first.touch != 1:
            continue
        label = (
            CONTROL
            if first.context.get("holdout")
            else NOTHING
            if first.arm_key == "holdout"
            else first.arm_key
        )
        entered[CONTROL if label == CONTROL else "treated"] += 1
        converted = any(bool(r.converted) for r in touches)
        if not converted and any(r.oid is None for r in touches):
            continue  # not final yet
        cols["arm"].append(label)
        cols["conv"].append(converted)
        cols["rev"].append(max((r.revenue for r in touches if r.converted), default=0.0))
        cols["disc"].append(sum(r.discount_amount or 0.0 for r in touches))
        cols["cost"].append(sum(r.message_cost or 0.0 for r in touches))
        cols["sent"].append(any(bool(r.message_sent) for r in touches))
        cols["seg"].append(str(first.context.get("device", "unknown")))
        cols["day"].append(min(r.decided_at for r in touches).date())
    return Outcomes.from_sequences(
        arm=cols["arm"],
        converted=cols["conv"],
        revenue=cols["rev"],
        discount_cost=cols["disc"],
        message_cost=cols["cost"],
        sent=cols["sent"],
        segment=cols["seg"],
        day=cols["day"],
        holdout=CONTROL,
    ), entered


def test_report_equals_the_row_by_row_statistics(settings: Settings, simulated: SimSeeded) -> None:
    with get_engine(settings.sqlalchemy_url).connect() as conn:
        exp, o = load(conn, store_id=simulated.store_id, name=simulated.experiment)
        assert o is not None
        journeys, entered = journeys_of(conn, exp.id)
        r = build(conn, store_id=simulated.store_id, name=simulated.experiment)
        as_json = report(conn, store_id=simulated.store_id, name=simulated.experiment)
    margin = 0.4
    # Per decision: the arms and the off-policy values
    same(r.arms, arm_summary(o, margin_rate=margin, rng=np.random.default_rng(0)))
    decided = o.select(o.arm != CONTROL)
    treated = sorted(set(o.arm.tolist()) - {CONTROL})
    same(r.off_policy, {a: arm_value_ips(decided, a, margin_rate=margin) for a in treated})
    # Per journey: the sample ratio (every journey that entered), lift and ROI (final ones)
    assert sum(entered.values()) == simulated.carts  # every cart's journey, once
    same(
        r.srm,
        srm_check(entered, {CONTROL: exp.holdout_share, "treated": 1 - exp.holdout_share}),
    )
    assert r.srm is not None and not r.srm.flagged  # the holdout is per customer, as asked
    treated_journeys = sorted(set(journeys.arm.tolist()) - {CONTROL})
    same(
        r.lift,
        lift_vs_holdout(journeys, treatment=treated_journeys, margin_rate=margin, holdout=CONTROL),
    )
    same(
        r.roi,
        [
            row
            for group in (None, "channel", "segment")
            for row in roi_report(journeys, margin_rate=margin, holdout=CONTROL, group_by=group)
        ],
    )
    # The last point of the incremental-profit path is the ROI row's estimate
    last, overall = r.incremental_profit[-1], r.roi[0].incremental_profit
    assert overall is not None and last.value == pytest.approx(overall.value, rel=1e-9)
    assert last.low == pytest.approx(overall.low, rel=1e-9)
    # and its confidence sequence is the lift's, per journey times the treated journeys
    assert r.lift is not None and r.lift.profit_per_cart is not None
    cs = r.lift.profit_per_cart.confidence_sequence
    assert last.cs_low == pytest.approx(cs.low * last.treated_carts, rel=1e-9)
    assert last.cs_high == pytest.approx(cs.high * last.treated_carts, rel=1e-9)
    # Traffic counts every decision, pending ones included
    assert sum(sum(v) for v in r.traffic.values()) == simulated.decisions
    assert as_json["arms"][0]["arm"] == r.arms[0].arm
    assert len(as_json["incremental_profit_path"]) == len(r.looks)


def test_ab_sample_ratio_counts_the_send_nothing_arm_it_was_given_a_weight() -> None:
    # Given an A/B test that splits 1:1 between an email and sending nothing
    from types import SimpleNamespace

    from experiments.report import summarize

    exp = SimpleNamespace(
        name="ab",
        mode="ab",
        status="running",
        holdout_share=0.1,
        winner=None,
        economics={"margin_rate": 0.3},
        weights={"email/60m/0%": 1.0, "holdout": 1.0},
        arms=["email/60m/0%", "holdout"],
    )
    arms = ["email/60m/0%"] * 450 + [NOTHING] * 450 + [CONTROL] * 100
    o = Outcomes.from_sequences(
        arm=arms,
        converted=[False] * len(arms),
        revenue=[0.0] * len(arms),
        day=[date(2026, 11, 2 + i % 7) for i in range(len(arms))],
        holdout=CONTROL,
    )
    # When it is summarised
    cells = Tallies.from_outcomes(o, margin_rate=0.3)
    r = summarize(exp, cells, cells)
    # Then the send-nothing decisions count for the "holdout" weight: an even split, no SRM
    assert r.srm_ab is not None and not r.srm_ab.flagged
    assert r.srm_ab.p_value == pytest.approx(1.0)
