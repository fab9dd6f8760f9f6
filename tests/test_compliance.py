"""Compliance: consent, suppressions, quiet hours, caps, KR advertising rules, coupons, tracking.

Rules are tested as pure functions; the journey with them on a real database and a real SMTP
server; and a property-based test drives random sequences of shopper and clock events and
checks every email that went out against what the law and the store allowed at that moment.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlmodel import SQLModel

from api.app import create_app
from nudge.migrate import upgrade
from nudge.smtp_sink import SmtpSink
from optimizer import FixedSchedulePolicy
from senders import compliance, journey, links
from senders.broker import setup_broker
from settings import Settings
from store.db import dispose_engines, get_engine
from store.stores import create_store
from tests.factories import cart_event, order_event
from tests.journeys import Clock, post, rows

SEOUL, NEW_YORK = "Asia/Seoul", "America/New_York"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- the rules, as pure functions ---------------------------------------------------------


def test_presets_and_overrides() -> None:
    kr, us = compliance.Rules.for_store("KR"), compliance.Rules.for_store("us")
    assert kr.advertising_prefix == "(광고)" and kr.night_consent_lifts_quiet
    assert us.advertising_prefix is None and not us.night_consent_lifts_quiet
    custom = compliance.Rules.for_store("US", {"quiet_start": "20:00", "messages_per_week": 5})
    assert custom.quiet_start == time(20, 0) and custom.messages_per_week == 5
    with pytest.raises(ValueError, match="quiet_begin"):
        compliance.Rules.for_store("US", {"quiet_begin": "20:00"})


@pytest.mark.parametrize(
    ("at", "zone", "country", "night", "expected"),
    [
        # 22:30 in Seoul: no advertising until 08:00 the next morning (정보통신망법 제50조)
        (utc(2026, 11, 23, 13, 30), SEOUL, "KR", False, utc(2026, 11, 23, 23, 0)),
        # …unless the customer gave separate night consent
        (utc(2026, 11, 23, 13, 30), SEOUL, "KR", True, utc(2026, 11, 23, 13, 30)),
        # 07:59 in New York: wait a minute; noon: go
        (utc(2026, 11, 23, 12, 59), NEW_YORK, "US", False, utc(2026, 11, 23, 13, 0)),
        (utc(2026, 11, 23, 17, 0), NEW_YORK, "US", False, utc(2026, 11, 23, 17, 0)),
        # US rules ignore night consent
        (utc(2026, 11, 24, 3, 0), NEW_YORK, "US", True, utc(2026, 11, 24, 13, 0)),
        # the night the clocks go forward: 21:30 EST → 08:00 EDT = 12:00 UTC
        (utc(2026, 3, 8, 2, 30), NEW_YORK, "US", False, utc(2026, 3, 8, 12, 0)),
        # no time zone known: UTC
        (utc(2026, 11, 23, 22, 0), None, "US", False, utc(2026, 11, 24, 8, 0)),
    ],
)
def test_next_allowed_minute(
    at: datetime, zone: str | None, country: str, night: bool, expected: datetime
) -> None:
    rules = compliance.Rules.for_store(country)
    assert compliance.next_allowed(at, timezone=zone, rules=rules, night_consent=night) == expected


# --- the journey with the rules -------------------------------------------------------------


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as s:
        yield s


def runtime(settings: Settings, start: datetime, policy: Any = None) -> journey.Runtime:
    policy = policy or FixedSchedulePolicy()
    return journey.Runtime(
        settings=settings,
        engine=get_engine(settings.sqlalchemy_url),
        policy_for=lambda _store: policy,
        clock=Clock(start),
    )


def decisions(rt: journey.Runtime) -> list[Any]:
    return sorted(rows(rt, "decision"), key=lambda d: (d.cart_id, d.journey, d.touch))


def tick(rt: journey.Runtime) -> None:
    """What the worker does: the sweep, and every send and check it finds due now."""
    for f in journey.sweep(rt).follow_ups:
        if f.delay_ms:
            continue
        if f.actor == "send_touch":
            journey.send_touch(rt, str(f.arg))
        else:
            journey.check_cart(rt, int(f.arg))


def store(rt: journey.Runtime, name: str, country: str = "US", **rules: Any) -> str:
    with rt.engine.begin() as conn:
        store_id, _ = create_store(conn, name=name)
        conn.execute(
            sa.text("UPDATE store SET country = :c WHERE id = :i"), {"c": country, "i": store_id}
        )
        t = SQLModel.metadata.tables["store"]
        conn.execute(sa.update(t).where(t.c.id == store_id).values(rules=rules))
    return store_id


def abandon(rt: journey.Runtime, store_id: str, **event: Any) -> None:
    clock: Clock = rt.clock  # type: ignore[assignment]
    post(rt, store_id, cart_event(occurred_at=clock(), **event))
    clock.advance(minutes=31)
    tick(rt)


@pytest.fixture
def env_settings(env: Any, settings: Settings, sink: SmtpSink) -> Settings:
    assert settings.database_url
    return env(smtp_port=sink.port, public_url="https://nudge.example.com")  # type: ignore[no-any-return]


def test_quiet_hours_move_the_touch_and_night_consent_lifts_them_in_korea(
    env_settings: Settings, sink: SmtpSink
) -> None:
    # Given a Korean store and two customers in Seoul abandoning at 20:00 KST
    rt = runtime(env_settings, utc(2026, 11, 23, 11, 0))
    clock: Clock = rt.clock  # type: ignore[assignment]
    kr = store(rt, "서울 캠핑", country="KR")
    abandon(rt, kr, cart_id="c-1", customer_id="a", email="a@example.kr", timezone=SEOUL)
    night = cart_event("c-2", customer_id="b", email="b@example.kr", timezone=SEOUL)
    night["customer"]["consents"]["night"] = True
    post(rt, kr, {**night, "occurred_at": utc(2026, 11, 23, 11, 0).isoformat()})
    tick(rt)
    d1, d2 = decisions(rt)
    # Then the first touch (due 21:31 KST) waits for 08:00 KST; with night consent it does not
    assert d1.scheduled_for == utc(2026, 11, 23, 23, 0)
    assert d2.scheduled_for == utc(2026, 11, 23, 12, 31)
    clock.advance(hours=1)
    tick(rt)
    (mail,) = sink.wait_for(1)
    assert mail.rcpt_tos == ["b@example.kr"]
    # And the KR advertising rules are in the message
    subject = mail.email["Subject"]
    assert subject.startswith("(광고) ") and "서울 캠핑" in subject  # marked, and who sends it
    text = mail.part("plain")
    assert text.startswith("(광고) 서울 캠핑") and "무료수신거부" in text
    clock.now = utc(2026, 11, 23, 23, 0)
    tick(rt)
    assert len(sink.wait_for(2)) == 2


def test_korean_locale_gets_korean_email(env_settings: Settings, sink: SmtpSink) -> None:
    rt = runtime(env_settings, utc(2026, 11, 23, 3, 0))  # 12:00 KST
    kr = store(rt, "서울 캠핑", country="KR")
    event = cart_event(email="kim@example.kr", timezone=SEOUL)
    event["customer"]["locale"] = "ko-KR"
    abandon(rt, kr, **{})  # a US-English customer on the same store
    post(
        rt,
        kr,
        {
            **event,
            "cart": {**event["cart"], "id": "c-ko"},
            "customer": {**event["customer"], "id": "kim"},
            "occurred_at": rt.clock().isoformat(),
        },
    )
    rt.clock.advance(minutes=31)  # type: ignore[attr-defined]
    tick(rt)
    rt.clock.advance(minutes=60)  # type: ignore[attr-defined]
    tick(rt)
    by_rcpt = {m.rcpt_tos[0]: m for m in sink.wait_for(2)}
    korean = by_rcpt["kim@example.kr"].part("plain")
    assert "장바구니에 담아두신 상품 2개가 기다리고 있어요" in korean
    assert "Two-person tent" in korean and "238.00 USD" in korean
    assert "You left" in by_rcpt["jane@example.com"].part("plain")


def test_frequency_cap_skips_the_touch_over_it(env_settings: Settings, sink: SmtpSink) -> None:
    rt = runtime(env_settings, utc(2026, 11, 23, 15, 0))  # 10:00 in New York
    us = store(rt, "Capped", messages_per_week=2)
    abandon(rt, us, timezone=NEW_YORK)
    clock: Clock = rt.clock  # type: ignore[assignment]
    for minutes in (60, 1380, 2880):
        clock.advance(minutes=minutes)
        tick(rt)
    assert len(sink.wait_for(2)) == 2
    states = [(d.touch, d.state, d.state_reason) for d in decisions(rt)]
    assert states == [(1, "sent", None), (2, "sent", None), (3, "skipped", "cap_week")]


def test_unsubscribe_suppresses_at_once_and_only_new_consent_lifts_it(
    env_settings: Settings, sink: SmtpSink
) -> None:
    # The unsubscribe endpoint stamps the suppression with the wall clock; the journey runs on
    # the test's clock, which must therefore be ahead of it: tomorrow, 10:00 in New York.
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    rt = runtime(env_settings, tomorrow.replace(hour=15, minute=0, second=0, microsecond=0))
    clock: Clock = rt.clock  # type: ignore[assignment]
    us = store(rt, "Outdoor")
    abandon(rt, us, timezone=NEW_YORK)
    clock.advance(minutes=60)
    tick(rt)
    (mail,) = sink.wait_for(1)
    # The email carries RFC 8058 one-click unsubscribe
    assert mail.email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe_url = mail.email["List-Unsubscribe"].strip("<>")
    path = unsubscribe_url.removeprefix("https://nudge.example.com")

    client = TestClient(create_app(env_settings, broker=setup_broker(env_settings, stub=True)))
    with client:
        assert client.get(path).status_code == 200  # a page with a button, nothing done yet
        assert rows(rt, "suppression") == []
        r = client.post(path, content=b"List-Unsubscribe=One-Click")
        assert r.status_code == 200 and "unsubscribed" in r.text
        bad = client.post(path[:-3] + "xyz")
        assert bad.status_code == 404
    (sup,) = rows(rt, "suppression")
    assert (sup.channel, sup.address, sup.reason) == ("email", "jane@example.com", "unsubscribe")
    assert [(d.touch, d.state) for d in decisions(rt)] == [(1, "sent"), (2, "skipped")]

    # A storefront repeating stale consent on cart events changes nothing
    clock.advance(minutes=10)
    post(rt, us, cart_event(occurred_at=clock(), value=10.0, timezone=NEW_YORK))
    clock.advance(minutes=31)
    tick(rt)
    clock.advance(minutes=60)
    tick(rt)
    assert len(sink.messages) == 1
    assert decisions(rt)[-1].context["channels"] == []

    # New explicit consent does
    clock.advance(minutes=5)
    consent = cart_event(occurred_at=clock(), timezone=NEW_YORK)
    consent["type"] = "contact.captured"
    post(rt, us, consent)
    assert rows(rt, "suppression") == []


def test_coupon_is_minted_once_sent_and_redeemed_once(
    env_settings: Settings, sink: SmtpSink
) -> None:
    rt = runtime(env_settings, utc(2026, 11, 23, 15, 0), FixedSchedulePolicy(discount_pct=10.0))
    clock: Clock = rt.clock  # type: ignore[assignment]
    us = store(rt, "Outdoor")
    abandon(rt, us, timezone=NEW_YORK)
    clock.advance(minutes=60)
    tick(rt)
    (coupon,) = rows(rt, "coupon")
    assert coupon.discount_pct == 10.0 and coupon.redeemed_at is None
    (mail,) = sink.wait_for(1)
    assert coupon.code in mail.part("plain") and coupon.code in mail.part("html")

    # The open pixel is in the HTML and records an open
    (message,) = rows(rt, "message")
    pixel = f"/o/{links.sign(env_settings.link_secret, message.id, 'open')}.gif"
    assert pixel in mail.part("html")
    with TestClient(
        create_app(env_settings, broker=setup_broker(env_settings, stub=True))
    ) as client:
        r = client.get(pixel)
        assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
    assert len(rows(rt, "open")) == 1

    clock.advance(hours=3)
    order = order_event(value=238.0, occurred_at=clock())
    order["order"]["coupon_code"] = coupon.code.lower()  # typed by hand
    post(rt, us, order)
    (coupon,) = rows(rt, "coupon")
    assert coupon.redeemed_at == clock() and coupon.order_id == "o-1"
    outcomes = {o.decision_id: o for o in rows(rt, "outcome")}
    assert outcomes[message.decision_id].discount_amount == pytest.approx(23.8)
    assert sum(o.discount_amount for o in outcomes.values()) == pytest.approx(23.8)


@pytest.mark.usefixtures("env_settings")  # the SMTP server and database it configures
def test_a_coupon_works_only_on_its_own_cart_only_once_and_not_after_it_expires(
    env: Any, sink: SmtpSink
) -> None:
    s = env(coupon_valid_days=2)
    rt = runtime(s, utc(2026, 11, 23, 15, 0), FixedSchedulePolicy(discount_pct=10.0))
    clock: Clock = rt.clock  # type: ignore[assignment]
    us = store(rt, "Outdoor")
    # Given two shoppers, each sent a 10% coupon (codes unique, valid two days)
    abandon(rt, us, timezone=NEW_YORK)
    abandon(rt, us, cart_id="c-2", customer_id="cust-2", email="kim@example.com", timezone=NEW_YORK)
    clock.advance(minutes=60)
    tick(rt)
    sink.wait_for(2)
    first, second = sorted(rows(rt, "coupon"), key=lambda c: c.created_at)
    assert first.code != second.code
    assert first.expires_at == first.created_at + timedelta(days=2)
    by_decision = {d.id: d for d in decisions(rt)}
    carts = {c.id: c.external_id for c in rows(rt, "cart")}
    code_of = {carts[by_decision[c.decision_id].cart_id]: c.code for c in (first, second)}

    # When the second shopper's order names the first shopper's code: not theirs, no discount
    clock.advance(hours=1)
    order = order_event("c-2", order_id="o-2", occurred_at=clock())
    order["order"]["coupon_code"] = code_of["c-1001"]
    post(rt, us, order)
    assert all(c.redeemed_at is None for c in rows(rt, "coupon"))

    # When the first shopper orders three days later with their own code: expired, no discount
    clock.advance(days=3)
    late = order_event(order_id="o-1", occurred_at=clock())
    late["order"]["coupon_code"] = code_of["c-1001"]
    post(rt, us, late)
    assert all(c.redeemed_at is None for c in rows(rt, "coupon"))
    assert all(o.discount_amount == 0.0 for o in rows(rt, "outcome"))
    assert {o.converted for o in rows(rt, "outcome")} == {True}


def test_a_coupon_is_redeemed_once_even_if_the_order_comes_twice(
    env_settings: Settings, sink: SmtpSink
) -> None:
    rt = runtime(env_settings, utc(2026, 11, 23, 15, 0), FixedSchedulePolicy(discount_pct=15.0))
    clock: Clock = rt.clock  # type: ignore[assignment]
    us = store(rt, "Outdoor")
    abandon(rt, us, timezone=NEW_YORK)
    clock.advance(minutes=60)
    tick(rt)
    sink.wait_for(1)
    (coupon,) = rows(rt, "coupon")
    clock.advance(hours=1)
    for n in range(2):  # the same order delivered twice (a webhook retried, a new event id)
        order = order_event(order_id="o-1", value=200.0, occurred_at=clock(), event_id=f"e-{n}")
        order["order"]["coupon_code"] = coupon.code
        post(rt, us, order)
        clock.advance(minutes=1)
    (coupon,) = rows(rt, "coupon")
    assert coupon.order_id == "o-1"
    # Both touches' decisions converted; the coupon's discount counted once, on its own
    outcomes = {o.decision_id: o.discount_amount for o in rows(rt, "outcome")}
    assert outcomes.pop(coupon.decision_id) == pytest.approx(30.0)
    assert list(outcomes.values()) == [0.0]


# --- any sequence of events ------------------------------------------------------------------


_WAIT = st.tuples(st.just("wait"), st.integers(min_value=1, max_value=36 * 60))
OPS = st.lists(
    st.one_of(
        # Waiting is what lets touches fall due, so it is drawn more often than the rest.
        _WAIT,
        _WAIT,
        _WAIT,
        _WAIT,
        st.tuples(st.just("cart"), st.booleans()),  # cart changed (consent flag riding along)
        st.tuples(st.just("consent"), st.booleans()),  # contact.captured: consent on/off
        st.tuples(st.just("unsubscribe"), st.just(0)),
        st.tuples(st.just("order"), st.just(0)),
    ),
    min_size=3,
    max_size=25,
)


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "nudge.db"
    upgrade(f"sqlite:///{path}")
    dispose_engines()
    return path


@hsettings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=OPS,
    zone=st.sampled_from([SEOUL, NEW_YORK, "Europe/Berlin"]),
    country=st.sampled_from(["KR", "US"]),
    start_hour=st.integers(min_value=0, max_value=23),
)
def test_no_email_breaks_the_rules_whatever_happens(
    ops: list[tuple[str, Any]],
    zone: str,
    country: str,
    start_hour: int,
    template_db: Path,
    tmp_path_factory: pytest.TempPathFactory,
    sink: SmtpSink,
    env: Any,
) -> None:
    db = tmp_path_factory.mktemp("prop") / "nudge.db"
    shutil.copy(template_db, db)
    s = env(database_url=f"sqlite:///{db}", smtp_port=sink.port)
    rt = runtime(s, utc(2026, 11, 23, start_hour, 0))
    clock: Clock = rt.clock  # type: ignore[assignment]
    shop = store(rt, f"shop-{db.parent.name}", country=country)
    rules = compliance.Rules.for_store(country)
    sink.messages.clear()

    consent, suppressed, ordered = True, False, False
    sent_at: list[datetime] = []
    post(rt, shop, cart_event(occurred_at=clock(), timezone=zone))
    n = 0
    for op, arg in ops:
        n += 1
        if op == "wait":
            step = timedelta(minutes=arg)
            while step > timedelta(0):  # the worker sweeps at least every 30 minutes
                dt = min(step, timedelta(minutes=30))
                clock.advance(seconds=dt.total_seconds())
                step -= dt
                before = len(sink.messages)
                tick(rt)
                for _ in sink.messages[before:]:
                    # Then every email that went out was allowed at that moment
                    assert consent and not suppressed and not ordered
                    local = clock().astimezone(ZoneInfo(zone)).time()
                    assert not rules.in_quiet_hours(local, night_consent=False), local
                    week = [t for t in sent_at if t > clock() - timedelta(days=7)]
                    assert rules.messages_per_week is None or len(week) < rules.messages_per_week
                    sent_at.append(clock())
        elif op == "cart" and not ordered:
            post(
                rt,
                shop,
                cart_event(occurred_at=clock(), consent=arg, timezone=zone, value=10.0 + n),
            )
            # A cart event's consent flag grants nothing new once suppressed
            consent = arg
        elif op == "consent":
            captured = cart_event(occurred_at=clock(), consent=arg, timezone=zone)
            captured["type"] = "contact.captured"
            del captured["cart"]
            post(rt, shop, captured)
            consent = arg
            if arg:
                suppressed = False  # new explicit consent lifts a suppression
        elif op == "unsubscribe" and rows(rt, "message"):
            with rt.engine.begin() as conn:
                from store.suppressions import suppress

                suppress(
                    conn,
                    store_id=shop,
                    channel="email",
                    address="jane@example.com",
                    reason="unsubscribe",
                    at=clock(),
                )
            suppressed = True
        elif op == "order" and not ordered:
            post(rt, shop, order_event(occurred_at=clock()))
            ordered = True
        clock.advance(seconds=1)

    event(f"emails sent: {min(len(sent_at), 3)}{'+' if len(sent_at) >= 3 else ''}")
    # And no touch was ever sent twice
    messages = rows(rt, "message")
    assert len({m.decision_id for m in messages}) == len(messages)
    delivered = [m.email["X-Nudge-Message"] for m in sink.messages]
    assert len(delivered) == len(set(delivered))
