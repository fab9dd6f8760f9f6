"""The journey of one cart, driven step by step with a controlled clock.

Real database (SQLite and PostgreSQL), real SMTP server; the journey functions are called
directly, as the actors call them, so each step can be checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.app import create_app
from nudge.smtp_sink import SmtpSink, free_port
from senders import actors, journey, links
from senders.broker import setup_broker
from senders.errors import TransientSendError
from settings import Settings
from store.db import get_engine
from tests.factories import cart_event, order_event
from tests.journeys import Clock, post, rows


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink(free_port()) as s:
        yield s


@pytest.fixture
def rt(settings: Settings, sink: SmtpSink, env: Any) -> journey.Runtime:
    assert settings.database_url  # the parametrised database, SQLite or PostgreSQL
    s = env(smtp_port=sink.port, public_url="https://nudge.example.com")
    return journey.Runtime(
        settings=s,
        engine=get_engine(s.sqlalchemy_url),
        policy_for=actors.policy_for,
        clock=Clock(),
    )


def decisions(rt: journey.Runtime) -> list[Any]:
    return sorted(rows(rt, "decision"), key=lambda d: (d.cart_id, d.journey, d.touch))


def abandon(rt: journey.Runtime, store_id: str, **kw: Any) -> int:
    clock: Clock = rt.clock  # type: ignore[assignment]
    applied = post(rt, store_id, cart_event(occurred_at=clock(), **kw))
    (cart_id,) = applied.checks
    clock.advance(seconds=1800)
    journey.check_cart(rt, cart_id)
    return int(cart_id)


def send_due(rt: journey.Runtime) -> list[journey.FollowUp]:
    """Run the sweep and every send it finds due, as the worker would."""
    follow = []
    for f in journey.sweep(rt).follow_ups:
        if f.actor == "send_touch" and f.delay_ms == 0:
            follow += journey.send_touch(rt, str(f.arg))
    return follow


def test_abandoned_cart_gets_the_reminder_with_its_items_and_link(
    rt: journey.Runtime, sink: SmtpSink, store_key: tuple[str, str]
) -> None:
    clock: Clock = rt.clock  # type: ignore[assignment]
    store_id, _ = store_key
    applied = post(rt, store_id, cart_event(occurred_at=clock()))
    (cart_id,) = applied.checks

    # Not idle long enough yet: the check comes back when it will be.
    clock.advance(seconds=1000)
    (again,) = journey.check_cart(rt, cart_id)
    assert again.actor == "check_cart" and again.delay_ms == 800_000
    assert decisions(rt) == []

    # Idle for 30 minutes: abandoned, touch 1 scheduled an hour later (1 h schedule).
    clock.advance(seconds=800)
    assert journey.check_cart(rt, cart_id) == []
    (d1,) = decisions(rt)
    assert (d1.touch, d1.arm_key, d1.state) == (1, "email/60m/0%", "scheduled")
    assert d1.scheduled_for == clock() + timedelta(minutes=60)
    assert d1.context["channels"] == ["email"] and d1.propensity == 1.0

    # Before its time nothing goes out; at its time the email does.
    clock.advance(minutes=30)
    assert send_due(rt) == []
    assert sink.messages == []
    clock.advance(minutes=30)
    send_due(rt)
    (mail,) = sink.wait_for(1)
    assert mail.rcpt_tos == ["jane@example.com"]
    text, html = mail.part("plain"), mail.part("html")
    for expected in ("Two-person tent", "Titanium mug", "238.00 USD"):
        assert expected in text and expected in html
    assert "https://cdn.example.com/tent.jpg" in html
    (message,) = rows(rt, "message")
    token = links.sign(rt.settings.link_secret, message.id)
    assert f"https://nudge.example.com/r/{token}" in text
    assert message.status == "sent" and message.provider_id.startswith(f"<{message.id}@")

    # Touch 2 is decided when touch 1 goes out: 23 h later (24 h after abandonment).
    d1, d2 = decisions(rt)
    assert d1.state == "sent"
    assert (d2.touch, d2.state) == (2, "scheduled")
    assert d2.scheduled_for == clock() + timedelta(minutes=1380)


def test_click_redirects_only_to_the_stores_restore_url(
    rt: journey.Runtime, sink: SmtpSink, store_key: tuple[str, str]
) -> None:
    store_id, _ = store_key
    abandon(rt, store_id)
    rt.clock.advance(minutes=60)  # type: ignore[attr-defined]
    send_due(rt)
    sink.wait_for(1)
    (message,) = rows(rt, "message")
    token = links.sign(rt.settings.link_secret, message.id)

    broker = setup_broker(rt.settings, stub=True)
    with TestClient(create_app(rt.settings, broker=broker)) as client:
        r = client.get(f"/r/{token}", follow_redirects=False)
        assert r.status_code == 302
        assert r.headers["location"] == (
            "https://shop.example.com/cart/restore/abc?utm_source=nudge&utm_medium=email"
            "&utm_campaign=cart_recovery&utm_content=touch1"
        )
        forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        assert client.get(f"/r/{forged}", follow_redirects=False).status_code == 404
        other = links.sign("another-secret", message.id)
        assert client.get(f"/r/{other}", follow_redirects=False).status_code == 404
    assert len(rows(rt, "click")) == 1


def test_order_voids_later_touches_and_records_outcomes(
    rt: journey.Runtime, sink: SmtpSink, store_key: tuple[str, str]
) -> None:
    clock: Clock = rt.clock  # type: ignore[assignment]
    store_id, _ = store_key
    abandon(rt, store_id)
    clock.advance(minutes=60)
    send_due(rt)
    sink.wait_for(1)

    # The customer orders two hours later.
    clock.advance(hours=2)
    post(rt, store_id, order_event(value=238.0, occurred_at=clock()))

    d1, d2 = decisions(rt)
    assert (d1.state, d2.state, d2.state_reason) == ("sent", "void", "ordered")
    # The policy was told how long each journey had run, in the product's hours: touch 2 was
    # decided when touch 1 went out, an hour of the product's time after the abandonment
    assert d1.context["hours_since_abandonment"] == 0.0
    assert d2.context["hours_since_abandonment"] == pytest.approx(rt.settings.time_scale)
    outcomes = {o.decision_id: o for o in rows(rt, "outcome")}
    assert set(outcomes) == {d1.id, d2.id}
    assert outcomes[d1.id].converted and outcomes[d1.id].revenue == 238.0
    assert outcomes[d1.id].message_sent and not outcomes[d2.id].message_sent

    # Touch 2's time comes: nothing is sent. The windows close: nothing changes.
    clock.advance(days=8)
    send_due(rt)
    assert len(sink.messages) == 1
    assert len(rows(rt, "outcome")) == 2


def test_a_window_that_closes_without_an_order_records_a_non_conversion(
    rt: journey.Runtime, sink: SmtpSink, store_key: tuple[str, str]
) -> None:
    clock: Clock = rt.clock  # type: ignore[assignment]
    store_id, _ = store_key
    abandon(rt, store_id)
    for minutes in (60, 1380, 2880):  # the whole 1 h / 24 h / 72 h schedule
        clock.advance(minutes=minutes)
        send_due(rt)
    assert len(sink.wait_for(3)) == 3
    assert [d.state for d in decisions(rt)] == ["sent", "sent", "sent"]

    clock.advance(days=7, seconds=1)
    report = journey.sweep(rt)
    assert report.closed == 3
    outcomes = rows(rt, "outcome")
    assert len(outcomes) == 3 and not any(o.converted for o in outcomes)
    # An order after the windows closed is not attributed, and nothing is recorded twice.
    post(rt, store_id, order_event(occurred_at=clock()))
    assert journey.sweep(rt).closed == 0
    assert len(rows(rt, "outcome")) == 3


def test_no_email_without_consent_or_after_consent_is_withdrawn(
    rt: journey.Runtime, sink: SmtpSink, store_key: tuple[str, str]
) -> None:
    clock: Clock = rt.clock  # type: ignore[assignment]
    store_id, _ = store_key
    # Never consented: the schedule's email arm is not reachable, so the holdout arm is chosen.
    abandon(rt, store_id, consent=False)
    (d,) = decisions(rt)
    assert (d.arm_key, d.state, d.state_reason) == ("holdout", "skipped", "holdout")

    # Consented at first, withdrawn before the send.
    abandon(rt, store_id, cart_id="c-2", customer_id="cust-2", email="kim@example.com")
    clock.advance(minutes=10)
    withdraw = cart_event("c-2", customer_id="cust-2", email="kim@example.com", consent=False)
    withdraw["type"] = "contact.captured"
    del withdraw["cart"]
    post(rt, store_id, withdraw)
    clock.advance(minutes=50)
    send_due(rt)
    assert sink.messages == []
    skipped = [x for x in decisions(rt) if x.arm_key != "holdout"]
    assert [(x.state, x.state_reason) for x in skipped] == [("skipped", "no_consent")]


def test_returning_to_the_cart_stops_the_journey_and_a_new_abandonment_starts_another(
    rt: journey.Runtime, sink: SmtpSink, store_key: tuple[str, str]
) -> None:
    clock: Clock = rt.clock  # type: ignore[assignment]
    store_id, _ = store_key
    cart_id = abandon(rt, store_id)
    clock.advance(minutes=20)
    applied = post(rt, store_id, cart_event(occurred_at=clock(), value=99.0))
    assert cart_id in applied.checks
    (d1,) = decisions(rt)
    assert (d1.state, d1.state_reason) == ("void", "cart_activity")
    clock.advance(minutes=30)
    journey.check_cart(rt, cart_id)
    d1, d2 = decisions(rt)
    assert (d2.journey, d2.touch, d2.state) == (2, 1, "scheduled")
    assert d2.context["previous_abandons"] == 1
    clock.advance(minutes=60)
    send_due(rt)
    (mail,) = sink.wait_for(1)
    assert "99.00 USD" in mail.part("plain")


def test_sending_the_same_touch_twice_sends_one_email(
    rt: journey.Runtime, sink: SmtpSink, store_key: tuple[str, str]
) -> None:
    store_id, _ = store_key
    abandon(rt, store_id)
    rt.clock.advance(minutes=60)  # type: ignore[attr-defined]
    (d1,) = decisions(rt)
    journey.send_touch(rt, d1.id)
    journey.send_touch(rt, d1.id)
    send_due(rt)
    assert len(sink.wait_for(1)) == 1
    assert len(rows(rt, "message")) == 1


def test_smtp_down_is_retried_with_the_same_idempotency_record(
    rt: journey.Runtime, sink: SmtpSink, store_key: tuple[str, str], env: Any
) -> None:
    clock: Clock = rt.clock  # type: ignore[assignment]
    store_id, _ = store_key
    abandon(rt, store_id)
    clock.advance(minutes=60)
    (d1,) = decisions(rt)
    # Given the relay refuses connections
    good = rt.settings
    rt.settings = env(smtp_port=free_port())
    with pytest.raises(TransientSendError):
        journey.send_touch(rt, d1.id)
    (message,) = rows(rt, "message")
    assert message.status == "prepared" and message.lease_until <= clock()
    # When it is back and the retry runs
    rt.settings = good
    journey.send_touch(rt, d1.id)
    # Then exactly one email went out, on the same message record, second attempt
    assert len(sink.wait_for(1)) == 1
    (message,) = rows(rt, "message")
    assert (message.status, message.attempts) == ("sent", 2)


def test_crash_before_hand_off_is_retried_and_during_hand_off_is_not(
    rt: journey.Runtime, sink: SmtpSink, store_key: tuple[str, str]
) -> None:
    clock: Clock = rt.clock  # type: ignore[assignment]
    store_id, _ = store_key
    abandon(rt, store_id)
    abandon(rt, store_id, cart_id="c-2", customer_id="cust-2", email="kim@example.com")
    clock.advance(minutes=60)
    a, b = decisions(rt)
    # Given two sends whose workers died: one while preparing, one during hand-off
    for d, status in ((a, "prepared"), (b, "handoff")):
        with rt.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO message (id, decision_id, store_id, channel, recipient, status,"
                    " cost, attempts, created_at, lease_until) VALUES (:id, :d, :s, 'email',"
                    " 'x@example.com', :st, 0, 1, :now, :lease)"
                ),
                {
                    "id": d.id,
                    "d": d.id,
                    "s": store_id,
                    "st": status,
                    "now": clock().replace(tzinfo=None),
                    "lease": (clock() + timedelta(seconds=120)).replace(tzinfo=None),
                },
            )
            conn.execute(sa.text("UPDATE decision SET state='sending' WHERE id=:d"), {"d": d.id})
    # While their leases run, nobody touches them
    assert send_due(rt) == [] and sink.messages == []
    # After the lease: the prepared one is sent once, the hand-off one is never re-sent
    clock.advance(seconds=121)
    send_due(rt)
    assert len(sink.wait_for(1)) == 1
    statuses = {m.decision_id: m.status for m in rows(rt, "message")}
    assert statuses == {a.id: "sent", b.id: "uncertain"}
    assert [d.state for d in decisions(rt)].count("sent") == 2
    send_due(rt)
    assert len(sink.messages) == 1
