"""Editing an experiment (the dashboard's editor): everything while it is a draft, only its
guardrails once it has started, nothing once it is stopped; the same validation as create."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from experiments import lifecycle
from settings import Settings
from store.db import get_engine

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


def test_a_draft_changes_entirely_and_its_prior_follows_its_arms(
    settings: Settings, store_key: tuple[str, str]
) -> None:
    store_id, _ = store_key
    engine = get_engine(settings.sqlalchemy_url)
    spec = lifecycle.Spec("q4", ["email/60m/0%", "sms/30m/0%"], seed=3)
    with engine.begin() as conn:
        lifecycle.create(conn, store_id=store_id, spec=spec, now=NOW)
        # When the draft gets another arm, a bigger holdout and a new name
        edited = replace(
            spec, name="q4-timing", arms=[*spec.arms, "push/120m/0%"], holdout_share=0.2
        )
        lifecycle.update(conn, store_id=store_id, name="q4", spec=edited, now=NOW)
        row = conn.execute(sa.select(lifecycle.experiment_t)).one()
        state = conn.execute(sa.select(lifecycle.state_t)).one()
    # Then the row and the bandit's prior have them
    assert row.name == "q4-timing" and row.holdout_share == 0.2
    assert set(row.arms) == {"email/60m/0%", "sms/30m/0%", "push/120m/0%", "holdout"}
    assert state.experiment_id == row.id and state.version == 0
    assert lifecycle.spec_of(row) == replace(edited, seed=3)


def test_a_started_experiment_changes_only_its_guardrails(
    settings: Settings, store_key: tuple[str, str]
) -> None:
    store_id, _ = store_key
    engine = get_engine(settings.sqlalchemy_url)
    spec = lifecycle.Spec("q4", ["email/60m/0%", "sms/30m/10%"], max_touches=3)
    with engine.begin() as conn:
        lifecycle.create(conn, store_id=store_id, spec=spec, now=NOW)
        lifecycle.transition(conn, store_id=store_id, name="q4", action="start", now=NOW)
        row = conn.execute(sa.select(lifecycle.experiment_t)).one()
        current = lifecycle.spec_of(row)
        # Guardrails may change while it runs
        lifecycle.update(
            conn,
            store_id=store_id,
            name="q4",
            spec=replace(current, max_touches=2, daily_sms_budget=100),
            now=NOW,
        )
        guardrails = conn.execute(sa.select(lifecycle.experiment_t.c.guardrails)).scalar_one()
        assert guardrails["max_touches"] == 2 and guardrails["daily_sms_budget"] == 100
        # but not what is being measured
        with pytest.raises(lifecycle.ExperimentConflict, match="only its guardrails.*holdout"):
            lifecycle.update(
                conn,
                store_id=store_id,
                name="q4",
                spec=replace(current, holdout_share=0.3),
                now=NOW,
            )
        # and a guardrail the arms break is refused, as at creation
        with pytest.raises(lifecycle.ExperimentError, match="more than the 5% discount"):
            lifecycle.update(
                conn,
                store_id=store_id,
                name="q4",
                spec=replace(current, max_discount_pct=5.0),
                now=NOW,
            )
        lifecycle.transition(conn, store_id=store_id, name="q4", action="stop", now=NOW)
        with pytest.raises(lifecycle.ExperimentConflict, match="stopped"):
            lifecycle.update(conn, store_id=store_id, name="q4", spec=current, now=NOW)
