"""`nudge experiment …` from create to promote, on a database with real journeys and outcomes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import SQLModel
from typer.testing import CliRunner

from nudge.cli import app
from settings import Settings
from store.db import get_engine
from tests.test_experiments_runtime import _journeys

runner = CliRunner()
NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


def nudge(*args: str) -> Any:
    return runner.invoke(app, list(args))


def test_experiment_commands(settings: Settings, store_key: tuple[str, str]) -> None:
    store_id, _ = store_key
    arms = ["--arm", "email/60m/0%", "--arm", "sms/30m/0%"]
    # Bad input is refused with a reason
    bad = nudge("experiment", "create", "x", "--store", "Acme Outdoor", "--arm", "fax/1m/0%")
    assert bad.exit_code == 1 and "not an arm key" in bad.output
    missing = nudge("experiment", "start", "nope", "--store", "Acme Outdoor")
    assert missing.exit_code == 1 and "no experiment named 'nope'" in missing.output
    # Given a running bandit with a 30% holdout
    r = nudge("experiment", "create", "q4", "--store", "Acme Outdoor", *arms, "--holdout", "0.3")
    assert r.exit_code == 0, r.output
    assert nudge("experiment", "start", "q4", "--store", "Acme Outdoor").exit_code == 0
    clash = nudge("experiment", "create", "q4b", "--store", "Acme Outdoor", *arms)
    assert clash.exit_code == 0
    again = nudge("experiment", "start", "q4b", "--store", "Acme Outdoor")
    assert again.exit_code == 1 and "already running" in again.output

    # When carts are decided and their outcomes are in
    engine = get_engine(settings.sqlalchemy_url)
    _journeys(settings, store_id, 80)
    decision_t = SQLModel.metadata.tables["decision"]
    outcome_t = SQLModel.metadata.tables["outcome"]
    with engine.begin() as conn:
        decisions = conn.execute(sa.select(decision_t)).all()
        for i, d in enumerate(decisions):
            conn.execute(
                outcome_t.insert().values(
                    decision_id=d.id,
                    store_id=store_id,
                    converted=i % 4 == 0,
                    revenue=120.0 if i % 4 == 0 else 0.0,
                    message_sent=d.arm_key != "holdout",
                    message_cost=0.0,
                    resolved_at=NOW + timedelta(days=1),
                )
            )

    # Then the report has every arm, the holdout, the SRM check and ROI, as JSON
    r = nudge("experiment", "report", "q4", "--store", "Acme Outdoor", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert sum(a["carts"] for a in data["arms"]) == 80
    assert "holdout" in {a["arm"] for a in data["arms"]}
    assert sum(a["conversions"] for a in data["arms"]) == 20
    assert data["srm"]["flagged"] in (True, False) and 0 <= data["srm"]["p_value"] <= 1
    assert data["roi"][0]["group"] == "all"
    off = data["off_policy_profit_per_cart"]
    assert set(off) == {a["arm"] for a in data["arms"]} - {"holdout"}
    for estimate in off.values():
        assert estimate["low"] <= estimate["value"] <= estimate["high"]
    text = nudge("experiment", "report", "q4", "--store", "Acme Outdoor")
    assert text.exit_code == 0 and "profit/cart" in text.output

    # And promoting ends it and sets the store's default arm
    r = nudge("experiment", "promote", "q4", "--store", "Acme Outdoor", "--arm", "sms/30m/0%")
    assert r.exit_code == 0, r.output
    with engine.connect() as conn:
        default = conn.execute(sa.text("SELECT default_arm FROM store")).scalar_one()
        status = conn.execute(
            sa.text("SELECT status FROM experiment WHERE name = 'q4'")
        ).scalar_one()
    assert (default, status) == ("sms/30m/0%", "stopped")
