"""The Settings page's editors, run by AppTest (SQLite and PostgreSQL): experiments through the
lifecycle's validation, messaging rules through the compliance rules', channel credentials shown
as set or not, never their values."""

from __future__ import annotations

from collections.abc import Callable
from datetime import time
from typing import Any

import pytest
import sqlalchemy as sa
import streamlit as st
from streamlit.testing.v1 import AppTest

from experiments import lifecycle
from settings import Settings
from store.db import get_engine
from tests.simulated import SimSeeded, seed_experiment
from tests.ui.test_pages import assert_clean, frames, row, texts
from ui import data

PAGE = "app_pages/settings.py"


@pytest.fixture
def simulated(settings: Settings) -> SimSeeded:
    return seed_experiment(settings, carts=120)


def open_page(app: Callable[[], AppTest]) -> AppTest:
    at = app().run()
    at.switch_page(PAGE).run()
    assert_clean(at)
    return at


def experiments(settings: Settings) -> dict[str, Any]:
    with get_engine(settings.sqlalchemy_url).connect() as conn:
        return {r.name: r for r in conn.execute(sa.select(lifecycle.experiment_t)).all()}


def seeded_store(settings: Settings) -> str:
    with get_engine(settings.sqlalchemy_url).connect() as conn:
        return str(conn.execute(sa.select(lifecycle.store_t.c.id)).scalar_one())


def store_rules(settings: Settings) -> dict[str, Any]:
    with get_engine(settings.sqlalchemy_url).connect() as conn:
        return dict(conn.execute(sa.select(lifecycle.store_t.c.rules)).scalar_one() or {})


@pytest.mark.usefixtures("simulated")
def test_the_editor_creates_a_draft_only_when_it_is_valid(
    settings: Settings, app: Callable[[], AppTest]
) -> None:
    at = open_page(app)
    assert at.selectbox(key="edit_experiment").value == ""  # a new one
    at.text_input(key="ed_name").input("winter")
    at.multiselect(key="ed_arms").set_value(["email/60m/0%", "sms/30m/10%"])
    at.number_input(key="ed_holdout").set_value(0.7)
    at.button(key="ed_submit").click().run()
    # The lifecycle's own reason, and nothing stored
    assert [e.value for e in at.error] == ["Not saved: holdout share must be in [0, 0.5), not 0.7."]
    at.number_input(key="ed_holdout").set_value(0.2)
    at.number_input(key="ed_max_discount").set_value(5.0)
    at.button(key="ed_submit").click().run()
    assert [e.value for e in at.error] == [
        "Not saved: arms ['sms/30m/10%'] offer more than the 5% discount guardrail."
    ]
    assert set(experiments(settings)) == {"autumn-timing"}

    # Valid: a draft with exactly what was asked
    at.number_input(key="ed_max_discount").set_value(10.0)
    at.number_input(key="ed_window").set_value(3.0)
    at.number_input(key="ed_sms_budget").set_value(50)
    at.button(key="ed_submit").click().run()
    assert_clean(at)
    assert "Draft winter created — start it on the Experiments page." in [
        s.value for s in at.success
    ]
    winter = experiments(settings)["winter"]
    assert winter.status == "draft" and winter.holdout_share == 0.2
    assert set(winter.arms) == {"email/60m/0%", "sms/30m/10%", "holdout"}
    assert winter.attribution_window_days == 3.0
    assert winter.guardrails == {
        "max_discount_pct": 10.0,
        "max_touches": 3,
        "daily_sms_budget": 50,
    }

    # An A/B draft with weights that name an arm it does not have is refused
    at.selectbox(key="edit_experiment").set_value("winter").run()
    assert at.text_input(key="ed_name").value == "winter"
    at.radio(key="ed_mode").set_value("ab")
    at.text_input(key="ed_weights").input("email/60m/0%=3, push/30m/0%=1")
    at.button(key="ed_submit").click().run()
    assert "weights name arms that are not in the experiment" in at.error[0].value
    at.text_input(key="ed_weights").input("email/60m/0%=3, sms/30m/10%=1")
    at.button(key="ed_submit").click().run()
    assert_clean(at)
    winter = experiments(settings)["winter"]
    assert winter.mode == "ab" and winter.weights == {"email/60m/0%": 3.0, "sms/30m/10%": 1.0}


def test_a_running_experiment_changes_only_its_guardrails(
    settings: Settings, simulated: SimSeeded, app: Callable[[], AppTest]
) -> None:
    at = open_page(app)
    at.selectbox(key="edit_experiment").set_value(simulated.experiment).run()
    assert "only its guardrails can change" in texts(at)
    assert at.text_input(key="ed_name").disabled and at.multiselect(key="ed_arms").disabled
    assert not at.number_input(key="ed_max_touches").disabled
    at.number_input(key="ed_max_touches").set_value(1)
    at.button(key="ed_submit").click().run()
    assert_clean(at)
    exp = experiments(settings)[simulated.experiment]
    assert exp.guardrails["max_touches"] == 1 and exp.status == "running"
    assert exp.holdout_share == 0.15  # untouched

    # Once stopped, it is final
    with get_engine(settings.sqlalchemy_url).begin() as conn:
        lifecycle.transition(
            conn,
            store_id=simulated.store_id,
            name=simulated.experiment,
            action="stop",
            now=exp.started_at,
        )
    st.cache_data.clear()  # the list is cached for a few seconds
    at = open_page(app)
    at.selectbox(key="edit_experiment").set_value(simulated.experiment).run()
    assert "is stopped: it is final" in texts(at)
    assert not at.text_input  # no form


@pytest.mark.usefixtures("simulated")
def test_quiet_hours_and_caps_are_edited_and_checked(
    settings: Settings, app: Callable[[], AppTest]
) -> None:
    at = open_page(app)
    # Quiet hours that start when they end are refused; nothing is stored
    at.time_input(key="rules_start").set_value(time(22, 0))
    at.time_input(key="rules_end").set_value(time(22, 0))
    at.button(key="rules_save").click().run()
    assert [e.value for e in at.error] == [
        "Not saved: quiet hours must start and end at different times."
    ]
    assert store_rules(settings) == {}

    # 22:00-07:00, two SMS a day, five messages a week: stored as what differs from the US
    # preset (21:00-08:00, 1 a day, 3 a week)
    at.time_input(key="rules_end").set_value(time(7, 0))
    at.number_input(key="rules_sms").set_value(2)
    at.number_input(key="rules_week").set_value(5)
    at.button(key="rules_save").click().run()
    assert_clean(at)
    assert store_rules(settings) == {
        "quiet_start": "22:00",
        "quiet_end": "07:00",
        "sms_per_day": 2,
        "messages_per_week": 5,
    }
    _, rules, *_ = frames(at)
    assert row(rules, "Setting", "Quiet hours (recipient's time)")["Value"] == "22:00 – 07:00"
    assert row(rules, "Setting", "SMS/KakaoTalk per customer per day")["Value"] == "2"
    assert row(rules, "Setting", "Messages per customer per week")["Value"] == "5"
    assert "Messaging rules saved." in [s.value for s in at.success]

    # An emptied cap (AppTest cannot empty a number input; the page passes None) is "none"
    with pytest.raises(ValueError, match="sms_per_day must be a whole number"):
        data.save_rules(settings.sqlalchemy_url, seeded_store(settings), "US", {"sms_per_day": -1})
    data.save_rules(
        settings.sqlalchemy_url, seeded_store(settings), "US", {"messages_per_week": None}
    )
    assert store_rules(settings) == {"messages_per_week": None}

    # Back to the country's preset
    at.button(key="rules_reset").click().run()
    assert store_rules(settings) == {}


@pytest.mark.usefixtures("simulated")
def test_channel_credentials_show_as_set_never_their_values(
    env: Callable[..., Settings], settings: Settings, app: Callable[[], AppTest]
) -> None:
    env(
        database_url=settings.database_url,
        twilio_account_sid="AC-not-shown",
        twilio_auth_token="token-never-shown",
        twilio_from="+15550100",
    )
    at = open_page(app)
    _, _, channels, _ = frames(at)
    sms = row(channels, "Channel", "SMS (Twilio)")
    assert sms["Configured"] == "✅" and "NUDGE_TWILIO_AUTH_TOKEN ✓" in sms["Variables"]
    shown = texts(at) + "".join(frame.to_string() for frame in frames(at))
    assert "token-never-shown" not in shown and "AC-not-shown" not in shown
