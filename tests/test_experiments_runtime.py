"""Experiments in production: lifecycle, persistent holdout, the bandit deciding touches, and
the posterior shared through the database (two workers folding at once lose nothing)."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from experiments import lifecycle
from experiments.runtime import StorePolicies, fold, in_holdout
from optimizer import ThompsonPolicy
from senders import journey
from settings import Settings
from store.db import get_engine
from store.events import apply_events
from store.schemas import EventIn
from tests.factories import cart_event

ARMS = ["email/60m/0%", "email/240m/10%", "sms/30m/0%"]
NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


def rows(engine: Any, table: str) -> list[Any]:
    t = SQLModel.metadata.tables[table]
    with engine.connect() as conn:
        return list(conn.execute(sa.select(t)))


def test_holdout_assignment_is_stable_and_has_the_asked_share() -> None:
    keys = [f"customer-{i}" for i in range(20_000)]
    share = np.mean([in_holdout("exp-1", k, 0.1) for k in keys])
    # Binomial sd at n=20,000, p=0.1 is 0.0021; 4 sd keeps a false alarm below 1e-4.
    assert abs(share - 0.1) < 4 * math.sqrt(0.1 * 0.9 / len(keys))
    assert all(in_holdout("exp-1", k, 0.1) == in_holdout("exp-1", k, 0.1) for k in keys[:100])
    # Another experiment draws its own holdout
    other = np.mean([in_holdout("exp-2", k, 0.1) for k in keys[:2000]])
    both = np.mean([in_holdout("exp-1", k, 0.1) and in_holdout("exp-2", k, 0.1) for k in keys])
    assert abs(other - 0.1) < 0.03 and both < 0.02


def test_lifecycle_and_its_guardrails(settings: Settings, store_key: tuple[str, str]) -> None:
    store_id, _ = store_key
    engine = get_engine(settings.sqlalchemy_url)
    with engine.begin() as conn:
        with pytest.raises(lifecycle.ExperimentError, match="not an arm key"):
            lifecycle.create(
                conn, store_id=store_id, spec=lifecycle.Spec("x", ["fax/1m/0%"]), now=NOW
            )
        with pytest.raises(lifecycle.ExperimentError, match="5% discount guardrail"):
            lifecycle.create(
                conn,
                store_id=store_id,
                spec=lifecycle.Spec("x", ARMS, max_discount_pct=5),
                now=NOW,
            )
        created = lifecycle.create(
            conn, store_id=store_id, spec=lifecycle.Spec("spring", ARMS, touch=1), now=NOW
        )
        assert created["status"] == "draft" and "holdout" in created["arms"]
        lifecycle.create(
            conn, store_id=store_id, spec=lifecycle.Spec("rival", ARMS, touch=1), now=NOW
        )
    with engine.begin() as conn:
        assert (
            lifecycle.transition(conn, store_id=store_id, name="spring", action="start", now=NOW)[
                "status"
            ]
            == "running"
        )
    with engine.begin() as conn, pytest.raises(lifecycle.ExperimentError, match="already"):
        lifecycle.transition(conn, store_id=store_id, name="rival", action="start", now=NOW)
    with engine.begin() as conn:
        lifecycle.transition(conn, store_id=store_id, name="spring", action="pause", now=NOW)
        with pytest.raises(lifecycle.ExperimentError, match="it is paused"):
            lifecycle.transition(conn, store_id=store_id, name="spring", action="pause", now=NOW)
        lifecycle.promote(conn, store_id=store_id, name="spring", arm_key="sms/30m/0%", now=NOW)
    (spring,) = [e for e in rows(engine, "experiment") if e.name == "spring"]
    assert (spring.status, spring.winner) == ("stopped", "sms/30m/0%")
    (shop,) = rows(engine, "store")
    assert shop.default_arm == "sms/30m/0%"


def _journeys(settings: Settings, store_id: str, n: int) -> journey.Runtime:
    engine = get_engine(settings.sqlalchemy_url)
    policies = StorePolicies(engine, refresh_seconds=0.0)
    rt = journey.Runtime(
        settings=settings, engine=engine, policy_for=policies.policy_for, clock=lambda: NOW
    )
    events = []
    for i in range(n):
        e = cart_event(
            f"c-{i}",
            customer_id=f"u-{i}",
            email=f"u{i}@example.com",
            occurred_at=NOW - timedelta(hours=1),
        )
        e["customer"]["phone"] = f"+1415555{i:04d}"
        e["customer"]["consents"]["sms"] = True
        events.append(EventIn.model_validate(e))
    with engine.begin() as conn:
        applied = apply_events(conn, store_id=store_id, events=events, now=NOW)
    for cart_id in applied.checks:
        journey.check_cart(rt, cart_id)
    return rt


def test_a_running_bandit_decides_with_a_persistent_holdout(
    settings: Settings, store_key: tuple[str, str]
) -> None:
    store_id, _ = store_key
    engine = get_engine(settings.sqlalchemy_url)
    with engine.begin() as conn:
        exp = lifecycle.create(
            conn,
            store_id=store_id,
            spec=lifecycle.Spec("bandit", ARMS, holdout_share=0.2, touch=1, seed=3),
            now=NOW,
        )
        lifecycle.transition(conn, store_id=store_id, name="bandit", action="start", now=NOW)
    _journeys(settings, store_id, 120)
    decisions = rows(engine, "decision")
    assert len(decisions) == 120 and {d.experiment_id for d in decisions} == {exp["id"]}
    held = [d for d in decisions if d.context["holdout"]]
    treated = [d for d in decisions if not d.context["holdout"]]
    # The holdout gets nothing, with certainty; the others one of the experiment's arms
    assert all(d.arm_key == "holdout" and d.propensity == 1.0 for d in held)
    assert all(d.state == "skipped" and d.policy == "holdout" for d in held)
    assert {d.arm_key for d in treated} <= set(exp["arms"])
    assert all(0 < d.propensity <= 1 for d in treated)
    # 20% of 120: sd 4.4; the stable hash puts each customer in exactly one group
    assert abs(len(held) - 24) < 4 * math.sqrt(120 * 0.2 * 0.8)
    assert {d.context["customer_key"] for d in held}.isdisjoint(
        {d.context["customer_key"] for d in treated}
    )


def test_two_workers_folding_at_once_lose_nothing(
    settings: Settings, store_key: tuple[str, str]
) -> None:
    store_id, _ = store_key
    engine = get_engine(settings.sqlalchemy_url)
    with engine.begin() as conn:
        exp = lifecycle.create(
            conn,
            store_id=store_id,
            spec=lifecycle.Spec("learn", ARMS, holdout_share=0.0, seed=5),
            now=NOW,
        )
        lifecycle.transition(conn, store_id=store_id, name="learn", action="start", now=NOW)
        state_t = SQLModel.metadata.tables["policystate"]
        initial = conn.execute(sa.select(state_t.c.state)).scalar_one()
    rt = _journeys(settings, store_id, 60)
    # Every decision gets its outcome: a third convert, the rest close their window
    decisions = sorted(rows(engine, "decision"), key=lambda d: d.id)
    outcome_t = SQLModel.metadata.tables["outcome"]
    with engine.begin() as conn:
        for i, d in enumerate(decisions):
            conn.execute(
                outcome_t.insert().values(
                    decision_id=d.id,
                    store_id=store_id,
                    converted=i % 3 == 0,
                    revenue=100.0 if i % 3 == 0 else 0.0,
                    message_sent=False,
                    resolved_at=NOW + timedelta(hours=2),
                )
            )
    assert rt is not None

    # When two workers fold at the same moment
    folded: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def worker() -> None:
        try:
            barrier.wait()
            folded.append(fold(engine, exp["id"]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors

    # Then every outcome was folded exactly once, in one of the two folds
    assert sorted(folded) == [0, 60]
    (state_row,) = rows(engine, "policystate")
    assert state_row.version == 1
    with engine.connect() as conn:
        last = conn.execute(sa.text("SELECT max(id) FROM outcome")).scalar_one()
    assert state_row.last_outcome_id == last
    # and the shared posterior is exactly what one worker folding alone would have learned
    alone = ThompsonPolicy.from_state(initial)
    from experiments.runtime import features
    from optimizer import Arm, Decision

    with engine.connect() as conn:
        joined = conn.execute(
            sa.text(
                "SELECT o.converted, o.revenue, d.id, d.arm_key, d.propensity, d.context,"
                " d.decided_at FROM outcome o JOIN decision d ON d.id = o.decision_id"
                " ORDER BY o.id"
            )
        ).all()
    decision_t = SQLModel.metadata.tables["decision"]
    with engine.connect() as conn:
        typed = {r.id: r for r in conn.execute(sa.select(decision_t))}
    for o in joined:
        d = typed[o.id]
        alone.record(
            Decision(
                Arm.from_key(d.arm_key), d.propensity, features(d.context), d.decided_at, d.id
            ),
            converted=bool(o.converted),
            order_value=float(o.revenue),
            message_sent=False,
            at=NOW + timedelta(hours=2),
        )
    alone.update()
    shared = ThompsonPolicy.from_state(state_row.state)
    np.testing.assert_allclose(shared.mean, alone.mean, rtol=1e-9, atol=1e-12)
    assert not np.allclose(shared.mean, ThompsonPolicy.from_state(initial).mean)


def test_decisions_use_the_experiments_attribution_window(
    settings: Settings, store_key: tuple[str, str]
) -> None:
    store_id, _ = store_key
    engine = get_engine(settings.sqlalchemy_url)
    with engine.begin() as conn:
        lifecycle.create(
            conn,
            store_id=store_id,
            spec=lifecycle.Spec("short", ARMS, attribution_window_days=2.0, seed=2),
            now=NOW,
        )
        lifecycle.transition(conn, store_id=store_id, name="short", action="start", now=NOW)
    _journeys(settings, store_id, 5)
    assert {d.window_ends_at - d.decided_at for d in rows(engine, "decision")} == {
        timedelta(days=2)
    }


def test_ab_mode_splits_by_weight_and_reports_its_sample_ratio(
    settings: Settings, store_key: tuple[str, str]
) -> None:
    from experiments.report import report

    store_id, _ = store_key
    engine = get_engine(settings.sqlalchemy_url)
    weights = {"email/60m/0%": 3.0, "sms/30m/0%": 1.0}
    with engine.begin() as conn:
        lifecycle.create(
            conn,
            store_id=store_id,
            spec=lifecycle.Spec(
                "split", list(weights), mode="ab", weights=weights, holdout_share=0.1, seed=4
            ),
            now=NOW,
        )
        lifecycle.transition(conn, store_id=store_id, name="split", action="start", now=NOW)
    _journeys(settings, store_id, 200)
    decisions = [d for d in rows(engine, "decision") if not d.context["holdout"]]
    email = [d for d in decisions if d.arm_key == "email/60m/0%"]
    # Every shopper reaches both channels, so the split is the weights': 3:1
    assert {d.propensity for d in email} == {0.75}
    share = len(email) / len(decisions)
    assert abs(share - 0.75) < 4 * math.sqrt(0.75 * 0.25 / len(decisions))

    outcome_t = SQLModel.metadata.tables["outcome"]
    every = rows(engine, "decision")
    with engine.begin() as conn:
        for d in every:
            conn.execute(
                outcome_t.insert().values(
                    decision_id=d.id,
                    store_id=store_id,
                    converted=False,
                    revenue=0.0,
                    message_sent=False,
                    resolved_at=NOW + timedelta(days=8),
                )
            )
        data = report(conn, store_id=store_id, name="split")
    assert data["srm_ab"] is not None and not data["srm_ab"]["flagged"]
    assert data["srm"] is not None and not data["srm"]["flagged"]
    groups = {r["group"] for r in data["roi"]}
    assert {"all", "email", "sms"} <= groups
