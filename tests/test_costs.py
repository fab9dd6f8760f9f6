"""What a message costs comes from one place: the prices in settings, recorded per message by
the channels and expected by the bandits experiments create."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlmodel import SQLModel

from api.app import create_app
from nudge.smtp_sink import SmtpSink, free_port
from optimizer import FixedSchedulePolicy
from senders import journey
from senders.broker import setup_broker
from settings import Settings
from store.db import get_engine
from store.events import apply_events
from store.schemas import EventIn
from tests.factories import cart_event

PRICES = {"email_price": 0.0007, "sms_price_per_segment": 0.011, "push_price": 0.0002}


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink(free_port()) as s:
        yield s


@pytest.fixture
def priced(env: Callable[..., Settings], settings: Settings, sink: SmtpSink) -> Settings:
    assert settings.database_url
    return env(smtp_port=sink.port, **PRICES)


def rows(settings: Settings, table: str) -> list[Any]:
    t = SQLModel.metadata.tables[table]
    with get_engine(settings.sqlalchemy_url).connect() as conn:
        return list(conn.execute(sa.select(t)))


def test_the_bandit_expects_what_the_channels_record(
    priced: Settings, sink: SmtpSink, store_key: tuple[str, str]
) -> None:
    store_id, key = store_key
    # Given the prices are set, an experiment created over the API expects them
    with TestClient(create_app(priced, broker=setup_broker(priced, stub=True))) as client:
        created = client.post(
            "/v1/experiments",
            json={"name": "costs", "arms": ["email/60m/0%", "sms/60m/0%"]},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert created.status_code == 201, created.text
    (experiment,) = rows(priced, "experiment")
    assert (
        experiment.economics["message_cost"]
        == priced.message_costs()
        == {
            "email": 0.0007,
            "sms": 2 * 0.011,
            "push": 0.0002,
            "kakao": priced.alimtalk_price,
        }
    )

    # and an email sent records the same price
    now = datetime.now(UTC).replace(microsecond=0)
    rt = journey.Runtime(
        settings=priced,
        engine=get_engine(priced.sqlalchemy_url),
        policy_for=lambda _store: FixedSchedulePolicy(),
        clock=lambda: now,
    )
    with rt.engine.begin() as conn:
        applied = apply_events(
            conn,
            store_id=store_id,
            events=[EventIn.model_validate(cart_event(occurred_at=now - timedelta(hours=2)))],
            now=now - timedelta(hours=2),
        )
    (cart_id,) = applied.checks
    rt.clock = lambda: now - timedelta(minutes=61)
    journey.check_cart(rt, cart_id)
    rt.clock = lambda: now
    (due,) = [f for f in journey.sweep(rt).follow_ups if f.actor == "send_touch"]
    journey.send_touch(rt, str(due.arg))
    sink.wait_for(1)
    (message,) = rows(priced, "message")
    assert (message.status, message.cost) == ("sent", 0.0007)


def test_a_message_lost_in_hand_off_is_costed_at_its_own_channels_price(
    priced: Settings, store_key: tuple[str, str]
) -> None:
    store_id, _ = store_key
    now = datetime.now(UTC).replace(microsecond=0)
    rt = journey.Runtime(
        settings=priced,
        engine=get_engine(priced.sqlalchemy_url),
        policy_for=lambda _store: FixedSchedulePolicy(channel="sms"),
        clock=lambda: now,
    )
    event = cart_event(occurred_at=now - timedelta(hours=2))
    event["customer"].update(phone="+14155550123", consents={"sms": True})
    with rt.engine.begin() as conn:
        applied = apply_events(
            conn, store_id=store_id, events=[EventIn.model_validate(event)], now=now
        )
        (cart_id,) = applied.checks
    journey.check_cart(rt, cart_id)
    # Given an SMS whose worker died during the hand-off, its lease over
    with rt.engine.begin() as conn:
        decision_id = conn.execute(sa.text("SELECT id FROM decision")).scalar_one()
        message = SQLModel.metadata.tables["message"]
        conn.execute(
            message.insert().values(
                id=decision_id,
                decision_id=decision_id,
                store_id=store_id,
                channel="sms",
                recipient="+14155550123",
                status="handoff",
                cost=0.0,
                attempts=1,
                created_at=now - timedelta(minutes=5),
                lease_until=now - timedelta(minutes=1),
            )
        )
        conn.execute(sa.text("UPDATE decision SET state = 'sending'"))
    # When the sweep settles it: never re-sent, and costed as an SMS (not as an email)
    assert journey.sweep(rt).uncertain == 1
    (settled,) = rows(priced, "message")
    assert (settled.status, settled.cost) == ("uncertain", priced.message_costs()["sms"])
