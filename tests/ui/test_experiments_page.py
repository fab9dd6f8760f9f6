"""The Experiments page, run by AppTest against an experiment the offline simulator played out
(SQLite and PostgreSQL): it shows the numbers ``nudge experiment report`` computes, and its
actions change the experiment only after a confirmation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from experiments import lifecycle
from experiments.report import NOTHING, ExperimentReport, build
from settings import Settings
from store.db import get_engine
from tests.simulated import SimSeeded, seed_experiment
from tests.ui.test_pages import assert_clean, frames, metrics, row, texts
from ui import format as fmt

PAGE = "app_pages/experiments.py"


@pytest.fixture
def simulated(settings: Settings) -> SimSeeded:
    return seed_experiment(settings)


def cli_report(settings: Settings, sim: SimSeeded) -> ExperimentReport:
    """What `nudge experiment report` computes, over the dashboard's default 30 days."""
    today = datetime.now(UTC).date()
    with get_engine(settings.sqlalchemy_url).connect() as conn:
        return build(
            conn,
            store_id=sim.store_id,
            name=sim.experiment,
            start=today - timedelta(days=29),
            end=today,
        )


def status(settings: Settings, name: str) -> tuple[str, str | None]:
    with get_engine(settings.sqlalchemy_url).connect() as conn:
        r = conn.execute(
            sa.select(lifecycle.experiment_t.c.status, lifecycle.experiment_t.c.winner).where(
                lifecycle.experiment_t.c.name == name
            )
        ).one()
    return r.status, r.winner


def open_page(app: Callable[[], AppTest]) -> AppTest:
    at = app().run()
    at.switch_page(PAGE).run()
    assert_clean(at)
    return at


def test_the_page_shows_what_the_report_computes(
    settings: Settings, simulated: SimSeeded, app: Callable[[], AppTest]
) -> None:
    at = open_page(app)
    expected = cli_report(settings, simulated)
    usd = lambda x: fmt.money(x, "USD")  # noqa: E731

    # The list: the running experiment, every decision it made
    listing, arms, ope, roi = frames(at)
    exp = row(listing, "Experiment", simulated.experiment)
    assert (exp["Status"], exp["Mode"], exp["Decisions"]) == (
        "running",
        "bandit",
        simulated.decisions,
    )
    assert at.selectbox(key="experiment").value == simulated.experiment

    # The per-arm table is the report's, arm by arm
    assert list(arms["Arm"]) == [a.arm for a in expected.arms]
    assert {"holdout", NOTHING} <= set(arms["Arm"])
    for a in expected.arms:
        shown = row(arms, "Arm", a.arm)
        assert (shown["Carts"], shown["Sends"], shown["Conversions"]) == (
            a.carts,
            a.sends,
            a.conversions,
        )
        assert a.conversion_rate is not None
        assert shown["Conversion"] == fmt.pct(a.conversion_rate.value)
        assert shown["95% interval"] == (
            f"{fmt.pct(a.conversion_rate.low)} … {fmt.pct(a.conversion_rate.high)}"
        )
        assert shown["Profit / cart"] == usd(a.profit_per_cart.value if a.profit_per_cart else None)
        assert shown["P(best)"] == fmt.pct(a.prob_best_profit)
        assert shown["Expected loss"] == usd(a.expected_loss_profit)
    assert sum(arms["Carts"]) == simulated.resolved  # decisions with a final outcome

    # Headline: decisions, incremental profit (the path's last look), always-valid p, best arm
    m = metrics(at)
    assert m["Decisions"] == fmt.count(simulated.decisions)
    last = expected.incremental_profit[-1]
    assert m["Incremental profit"] == usd(last.value)
    assert expected.lift is not None and expected.lift.profit_per_cart is not None
    assert m["Always-valid p"] == f"{expected.lift.profit_per_cart.always_valid_p:.3f}"
    best = expected.best_arm
    assert m["Most likely best"] == (NOTHING if best == "holdout" else best)
    # The holdout is per customer and compared per journey: no sample ratio alarm
    assert expected.srm is not None and not expected.srm.flagged
    assert "Holdout split as configured" in texts(at)

    # Off-policy values and ROI, as the report has them
    for arm, estimate in expected.off_policy.items():
        shown = row(ope, "Arm", arm)
        assert shown["If always chosen"] == usd(estimate.value)
        assert shown["ESS"] == round(estimate.effective_sample_size, 1)
    overall = row(roi, "Group", "all")
    assert overall["Treated"] == expected.roi[0].treated_carts
    assert overall["Holdout"] == expected.roi[0].holdout_carts
    assert expected.roi[0].incremental_profit is not None
    assert overall["Incr. profit"] == usd(expected.roi[0].incremental_profit.value)

    # Four charts: posteriors, traffic share, incremental profit, sequential p-value
    assert len(at.get("vega_lite_chart")) == 4
    at.segmented_control(key="posterior_metric").set_value("conversion").run()
    assert_clean(at)
    assert len(at.get("vega_lite_chart")) == 4

    # The store's overview compares with the persistent holdout only, not with the bandit's
    # own choices to send nothing
    at.switch_page("app_pages/overview.py").run()
    assert_clean(at)
    assert f", {simulated.holdout_decisions} holdout journeys at" in texts(at)
    at.switch_page(PAGE).run()

    # In Korean too
    at.sidebar.radio(key="lang").set_value("ko").run()
    assert_clean(at)
    assert "결정" in metrics(at)


def test_actions_change_the_experiment_only_once_confirmed(
    settings: Settings, simulated: SimSeeded, app: Callable[[], AppTest]
) -> None:
    at = open_page(app)
    assert at.button(key="act_start").disabled  # it is running already

    # Pausing asks first; cancelling changes nothing
    at.button(key="act_pause").click().run()
    assert "Pause **autumn-timing**?" in texts(at)
    assert status(settings, simulated.experiment) == ("running", None)
    at.button(key="confirm_no").click().run()
    assert "Pause **autumn-timing**?" not in texts(at)
    assert status(settings, simulated.experiment) == ("running", None)

    # Confirmed, it pauses
    at.button(key="act_pause").click().run()
    at.button(key="confirm_yes").click().run()
    assert_clean(at)
    assert status(settings, simulated.experiment) == ("paused", None)
    assert "autumn-timing is now paused." in [s.value for s in at.success]
    assert at.button(key="act_pause").disabled and not at.button(key="act_start").disabled

    # and starts again
    at.button(key="act_start").click().run()
    at.button(key="confirm_yes").click().run()
    assert status(settings, simulated.experiment) == ("running", None)

    # Promoting offers the most likely best arm, and ends the experiment with it
    expected = cli_report(settings, simulated)
    at.button(key="act_promote").click().run()
    assert at.selectbox(key="promote_arm").value == expected.best_arm
    at.selectbox(key="promote_arm").set_value("email/30m/0%").run()
    assert "Promote **email/30m/0%** and end **autumn-timing**?" in texts(at)
    at.button(key="confirm_yes").click().run()
    assert_clean(at)
    assert status(settings, simulated.experiment) == ("stopped", "email/30m/0%")
    with get_engine(settings.sqlalchemy_url).connect() as conn:
        default = conn.execute(sa.text("SELECT default_arm FROM store")).scalar_one()
    assert default == "email/30m/0%"
    assert all(at.button(key=f"act_{a}").disabled for a in ("start", "pause", "stop", "promote"))
    assert "Promoted: **email/30m/0%**" in texts(at)


def test_a_refused_action_says_why(
    settings: Settings, simulated: SimSeeded, app: Callable[[], AppTest]
) -> None:
    # Given a second experiment for the same touches, still a draft
    with get_engine(settings.sqlalchemy_url).begin() as conn:
        lifecycle.create(
            conn,
            store_id=simulated.store_id,
            spec=lifecycle.Spec("winter", ["email/60m/0%"]),
            now=datetime.now(UTC),
        )
    at = open_page(app)
    at.selectbox(key="experiment").set_value("winter").run()
    assert "has not decided any touch yet" in texts(at)
    # Starting it clashes with the running one: the lifecycle's reason is shown
    at.button(key="act_start").click().run()
    at.button(key="confirm_yes").click().run()
    assert [e.value for e in at.error] == [
        "experiment 'autumn-timing' is already running for this store and touch"
    ]
    assert status(settings, "winter") == ("draft", None)
    # Stopping the draft works
    at.button(key="act_stop").click().run()
    assert "Stop **winter** for good?" in texts(at)
    at.button(key="confirm_yes").click().run()
    assert status(settings, "winter") == ("stopped", None)
