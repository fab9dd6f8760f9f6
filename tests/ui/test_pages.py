"""Every dashboard page, run by Streamlit's AppTest against a database the journey filled.

The numbers on screen must be the ones the seed made (it counts what it does), on SQLite and
on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import pandas as pd
import pytest
from dramatiq.brokers.redis import RedisBroker
from streamlit import config
from streamlit.testing.v1 import AppTest

from senders.actors import QUEUE
from senders.broker import redis_client
from settings import Settings
from store.db import get_engine
from store.stores import create_store
from tests.ui.seed import Seeded

PAGES = [
    "app_pages/overview.py",
    "app_pages/experiments.py",
    "app_pages/segments.py",
    "app_pages/messages.py",
    "app_pages/settings.py",
]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def frames(at: AppTest) -> list[pd.DataFrame]:
    return [d.value for d in at.dataframe]


def row(frame: pd.DataFrame, column: str, value: Any) -> dict[str, Any]:
    (match,) = frame[frame[column] == value].to_dict("records")
    return dict(match)


def texts(at: AppTest) -> str:
    kinds = ("info", "warning", "error", "caption", "success")
    return "\n".join(str(getattr(e, "value", "")) for kind in kinds for e in at.get(kind))


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_every_page_shows_the_seeded_numbers(seeded: Seeded, app: Callable[[], AppTest]) -> None:
    # Given a store whose journeys the real journey functions made
    at = app().run()
    assert_clean(at)

    # Then the overview counts what happened, once per journey
    m = metrics(at)
    assert m["Abandoned carts"] == str(seeded.carts) == "30"
    assert m["Carts reached"] == str(seeded.sent) == "23"
    assert m["Recovered"] == str(seeded.recovered) == "5"
    assert m["Recovered revenue"] == f"${seeded.recovered_revenue:,.2f}" == "$430.00"
    # 5/24 treated converted vs 1/6 held out: (5/24 - 1/6) * 24 = 1 incremental order
    assert m["Incremental orders"] == "1.0"
    assert m["Spend"] == "$0.00" and m["ROI"] == "—"  # email costs nothing: ROI undefined
    assert "24 treated journeys converted at 20.8%, 6 holdout journeys at 16.7%" in texts(at)
    (channels,) = frames(at)
    assert row(channels, "Channel", "email")["Sends"] == seeded.sent

    # The experiments page: no experiment yet, and the arms the schedule used
    at.switch_page("app_pages/experiments.py").run()
    assert_clean(at)
    assert "nudge experiment create" in texts(at)
    (arms,) = frames(at)
    assert row(arms, "Arm", "holdout")["Carts"] == seeded.holdout
    assert row(arms, "Arm", "email/60m/0%")["Sends"] == seeded.sent

    # Segments by device: treated and holdout journeys of each
    at.switch_page("app_pages/segments.py").run()
    assert_clean(at)
    (segments,) = frames(at)
    mobile = row(segments, "Segment", "mobile")
    assert (mobile["Treated"], mobile["Holdout"]) == (12, 3)
    assert segments["Recovered"].sum() == seeded.recovered
    assert mobile["Arm chosen most"] == "email/60m/0% (80%)"

    # Messages: sends with opens and clicks, the bounce, the opt-out
    at.switch_page("app_pages/messages.py").run()
    assert_clean(at)
    by_status, recent, failures, skipped, suppressions, latest = frames(at)
    sent = row(by_status, "Status", "sent")
    assert (sent["Messages"], sent["Opened"], sent["Clicked"]) == (
        seeded.sent,
        seeded.opened,
        seeded.clicked,
    )
    assert row(by_status, "Status", "failed")["Messages"] == seeded.failed == 1
    assert len(recent) == seeded.sent + seeded.failed
    assert not recent["Recipient"].str.contains("shopper-").any()  # addresses are masked
    failure = row(failures, "Reason", "hard_bounce")
    assert failure["Kind"] == "permanent" and "550 5.1.1" in failure["Example"]
    assert row(skipped, "Reason", "holdout")["Touches"] == seeded.holdout
    assert row(suppressions, "Reason", "unsubscribe")["Addresses"] == seeded.unsubscribed
    # The mailbox that does not exist is suppressed too, with its reason
    assert row(suppressions, "Reason", "hard_bounce")["Addresses"] == seeded.failed
    assert sorted(latest["Reason"]) == ["hard_bounce", "unsubscribe"]

    # Settings: the US preset's quiet hours and caps; credentials as set/unset only
    at.switch_page("app_pages/settings.py").run()
    assert_clean(at)
    store, rules, channels, journey = frames(at)
    assert row(rules, "Setting", "Quiet hours (recipient's time)")["Value"] == "21:00 – 08:00"
    assert row(rules, "Setting", "Messages per customer per week")["Value"] == "3"
    sms = row(channels, "Channel", "SMS (Twilio)")
    assert sms["Configured"] == "—" and "NUDGE_TWILIO_AUTH_TOKEN ✗" in sms["Variables"]


def test_store_selector_shows_each_store_in_its_currency(
    seeded: Seeded, app: Callable[[], AppTest]
) -> None:
    at = app().run()
    at.sidebar.selectbox(key="store_id").set_value(seeded.other_store_id).run()
    assert_clean(at)
    m = metrics(at)
    assert m["Abandoned carts"] == str(seeded.other_carts)
    assert m["Recovered revenue"] == "₩0"
    at.switch_page("app_pages/settings.py").run()
    (store, *_) = frames(at)
    assert row(store, "Setting", "Currency")["Value"] == "KRW"


@pytest.mark.usefixtures("seeded")
def test_every_segment_dimension_renders(app: Callable[[], AppTest]) -> None:
    at = app().run()
    at.switch_page("app_pages/segments.py").run()
    seen = {}
    for dimension in ("device", "customer_type", "cart_value", "checkout_stage", "channel"):
        at.segmented_control(key="dimension").set_value(dimension).run()
        assert_clean(at)
        (table,) = frames(at)
        seen[dimension] = table
    # Values 20, 35, … 455 USD: bands <$50, $50–$100, $100–$250, $250+
    assert list(seen["cart_value"]["Segment"]) == ["<$50", "$50–$100", "$100–$250", "$250+"]
    assert seen["cart_value"]["Treated"].sum() + seen["cart_value"]["Holdout"].sum() == 30
    stages = seen["checkout_stage"].set_index("Segment")
    assert stages.loc["checkout", "Treated"] + stages.loc["checkout", "Holdout"] == 10
    # Per channel: treated journeys of a channel against the whole holdout
    email = row(seen["channel"], "Segment", "email")
    assert (email["Treated"], email["Holdout"]) == (24, 6)
    assert set(seen["customer_type"]["Segment"]) == {"new"}


@pytest.mark.usefixtures("seeded")
def test_a_range_without_carts_says_what_to_do(app: Callable[[], AppTest]) -> None:
    at = app().run()
    long_ago = datetime.now(UTC).date() - timedelta(days=400)
    at.sidebar.date_input(key="dates").set_value((long_ago, long_ago + timedelta(days=7))).run()
    for page in PAGES:
        at.switch_page(page).run()
        assert_clean(at)
    at.switch_page("app_pages/overview.py").run()
    assert "No abandoned carts in this date range" in texts(at)
    assert not at.metric


@pytest.mark.usefixtures("seeded")
def test_messages_page_shows_queue_depth_and_live_workers(
    app: Callable[[], AppTest], env: Callable[..., Settings], redis_url: str
) -> None:
    # Given a broker that queued one message now and one for later
    s = env(redis_url=redis_url)
    broker = RedisBroker(client=redis_client(s), namespace=s.redis_namespace)  # type: ignore[no-untyped-call]
    broker.declare_queue(QUEUE)
    for delay in (None, 60_000):
        broker.enqueue(
            dramatiq.Message(
                queue_name=QUEUE, actor_name="send_touch", args=("x",), kwargs={}, options={}
            ),
            delay=delay,
        )
    try:
        at = app().run()
        at.switch_page("app_pages/messages.py").run()
        assert_clean(at)
        m = metrics(at)
        assert (m["Ready"], m["Delayed"], m["Dead-lettered"]) == ("1", "1", "0")
        assert int(m["Live brokers"]) >= 1  # this test's broker just talked to Redis
        assert "Workers are running" in texts(at)
    finally:
        broker.flush_all()
        broker.close()


def test_language_switch_translates_labels(seeded: Seeded, app: Callable[[], AppTest]) -> None:
    at = app().run()
    at.sidebar.radio(key="lang").set_value("ko").run()
    assert_clean(at)
    m = metrics(at)
    assert m["이탈 장바구니"] == str(seeded.carts)
    assert "Abandoned carts" not in m
    for page in PAGES[1:]:
        at.switch_page(page).run()
        assert_clean(at)
    at.switch_page("app_pages/settings.py").run()
    (_, rules, *_) = frames(at)
    assert "야간 발송 제한 (수신자 시간)" in list(rules["항목"])


@pytest.fixture
def sqlite_settings(env: Callable[..., Settings], tmp_path: Any) -> Settings:
    from nudge.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'ui.db'}"
    upgrade(url)
    return env(database_url=url)


def test_password_guards_the_dashboard(
    sqlite_settings: Settings, env: Callable[..., Settings], app: Callable[[], AppTest]
) -> None:
    with get_engine(sqlite_settings.sqlalchemy_url).begin() as conn:
        create_store(conn, name="Acme Outdoor")
    env(ui_password="correct horse")

    # Without the password: a lock, nothing of the data
    at = app().run()
    assert not at.exception
    assert not at.metric and not at.dataframe
    assert at.text_input[0].label == "Password"

    # A wrong one is refused
    at.text_input[0].input("wrong")
    at.button[0].click().run()
    assert [e.value for e in at.error] == ["Wrong password."]
    assert not at.metric

    # The right one opens it for this session
    at.text_input[0].input("correct horse")
    at.button[0].click().run()
    assert_clean(at)
    assert "No abandoned carts in this date range" in texts(at)
    at.switch_page("app_pages/messages.py").run()
    assert_clean(at)
    assert "No messages in this date range" in texts(at)


@pytest.mark.usefixtures("sqlite_settings")
def test_a_dashboard_reachable_from_other_machines_needs_a_password(
    app: Callable[[], AppTest],
) -> None:
    config.set_option("server.address", "0.0.0.0")
    at = app().run()
    assert not at.exception
    (error,) = at.error
    assert "NUDGE_UI_PASSWORD" in error.value
    assert not at.metric and not at.text_input


@pytest.mark.usefixtures("sqlite_settings")
def test_without_a_store_every_page_says_how_to_start(
    app: Callable[[], AppTest],
) -> None:
    at = app().run()
    for page in PAGES:
        at.switch_page(page).run()
        assert_clean(at)
        assert "nudge store create" in texts(at)


def test_an_unmigrated_database_says_to_migrate(
    env: Callable[..., Settings], tmp_path: Any, app: Callable[[], AppTest]
) -> None:
    from nudge.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0005")  # the schema before the dashboard's rollups
    env(database_url=url)
    with get_engine(url).begin() as conn:
        create_store(conn, name="Acme Outdoor")
    at = app().run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "The database's schema is older than this dashboard: run `nudge migrate`, then reload."
    ]
