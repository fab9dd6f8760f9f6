"""Touches sent in batches (``senders.sending``): every guarantee of one send, for each touch.

Real database (SQLite and PostgreSQL), real SMTP server; the batch is driven directly with a
controlled clock, as the ``send_touches`` actor drives it.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from nudge.smtp_sink import SmtpSink, free_port
from optimizer import FixedSchedulePolicy
from senders import journey, sending
from senders.errors import TransientSendError
from settings import Settings
from store import bulk
from store.db import get_engine
from store.events import EventLog, cart_t, decision_t, message_t
from store.schemas import EventIn
from store.stores import create_store
from store.suppressions import suppress
from tests.factories import cart_event, order_event
from tests.journeys import Clock, post, rows
from tests.pipeline import apply_accepted

NEW_YORK = "America/New_York"


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink(free_port()) as s:
        yield s


@pytest.fixture
def rt(settings: Settings, sink: SmtpSink, env: Any) -> journey.Runtime:
    assert settings.database_url
    s = env(smtp_port=sink.port, public_url="https://nudge.example.com")
    policy = FixedSchedulePolicy(discount_pct=0.0)
    # Tomorrow 15:00 UTC: 10:00 in New York, outside quiet hours.
    start = (datetime.now(UTC) + timedelta(days=1)).replace(hour=15, minute=0, second=0)
    return journey.Runtime(
        settings=s,
        engine=get_engine(s.sqlalchemy_url),
        policy_for=lambda _store: policy,
        clock=Clock(start.replace(microsecond=0)),
    )


def decisions(rt: journey.Runtime) -> dict[str, Any]:
    """Touch 1 of each cart, by the cart's external id."""
    d, c = SQLModel.metadata.tables["decision"], SQLModel.metadata.tables["cart"]
    with rt.engine.connect() as conn:
        found = conn.execute(
            sa.select(c.c.external_id, d)
            .select_from(d.join(c, c.c.id == d.c.cart_id))
            .where(d.c.touch == 1)
        ).all()
    return {r.external_id: r for r in found}


def store(rt: journey.Runtime, name: str = "Acme Outdoor", **rules: Any) -> str:
    with rt.engine.begin() as conn:
        store_id, _ = create_store(conn, name=name)
        t = SQLModel.metadata.tables["store"]
        conn.execute(sa.update(t).where(t.c.id == store_id).values(rules=rules))
    return store_id


def shopper(n: int, **kw: Any) -> dict[str, Any]:
    kw.setdefault("customer_id", f"cust-{n}")
    kw.setdefault("email", f"shopper-{n}@example.com")
    kw.setdefault("timezone", NEW_YORK)
    return cart_event(f"c-{n}", **kw)


def abandon_all(rt: journey.Runtime, store_id: str, events: list[dict[str, Any]]) -> list[str]:
    """Carts idle for 31 min, then an hour on: their first touches are due. Returns their
    decision ids, in the carts' order."""
    clock: Clock = rt.clock  # type: ignore[assignment]
    applied = post(rt, store_id, *[{**e, "occurred_at": clock().isoformat()} for e in events])
    clock.advance(minutes=31)
    for cart_id in sorted(applied.checks):
        journey.check_cart(rt, cart_id)
    clock.advance(minutes=60)
    by_cart = decisions(rt)
    return [by_cart[e["cart"]["id"]].id for e in events]


def delivered(sink: SmtpSink) -> Counter[str]:
    return Counter(m.email["X-Nudge-Message"] for m in sink.messages)


def test_a_batch_sends_what_may_go_and_stops_the_rest_for_its_reason(
    rt: journey.Runtime, sink: SmtpSink
) -> None:
    clock: Clock = rt.clock  # type: ignore[assignment]
    shop = store(rt, messages_per_week=1)
    # Given six due touches: two fine, one bought meanwhile, one unsubscribed, one whose
    # customer turns out to live in Seoul (it is night there), and a second cart of a
    # customer the batch reaches already (a cap of one message a week)
    events = [
        shopper(0),
        shopper(1),
        shopper(2),
        shopper(3),
        shopper(4),
        shopper(5, customer_id="cust-0", email="shopper-0@example.com"),
    ]
    ids = abandon_all(rt, shop, events)
    post(rt, shop, order_event("c-2", occurred_at=clock()))
    moved = shopper(4, timezone="Asia/Seoul", type="contact.captured", occurred_at=clock())
    del moved["cart"]
    post(rt, shop, moved)
    with rt.engine.begin() as conn:
        suppress(
            conn,
            store_id=shop,
            channel="email",
            address="shopper-3@example.com",
            reason="unsubscribe",
            at=clock(),
        )

    # When they are sent as one batch
    report = sending.send_touches(rt, ids)

    # Then two go out, once each, and every other touch says why not
    assert sorted(m.rcpt_tos[0] for m in sink.wait_for(2)) == [
        "shopper-0@example.com",
        "shopper-1@example.com",
    ]
    assert (report.sent, report.stopped, report.failed, report.transient) == (2, 3, 0, [])
    by_cart = decisions(rt)
    states = {c: (d.state, d.state_reason) for c, d in by_cart.items()}
    # Customer 0's two carts: whichever the batch took first went out, the other is capped.
    assert {states.pop("c-0"), states.pop("c-5")} == {("sent", None), ("skipped", "cap_week")}
    assert states == {
        "c-1": ("sent", None),
        "c-2": ("void", "ordered"),  # voided by the order itself, before the batch ran
        "c-3": ("skipped", "suppressed"),
        "c-4": ("scheduled", None),  # the same touch, at 08:00 in Seoul
    }
    seoul = by_cart["c-4"].scheduled_for.astimezone(ZoneInfo("Asia/Seoul"))
    assert seoul.time() == time(8, 0) and by_cart["c-4"].scheduled_for > clock()
    messages = rows(rt, "message")
    assert sorted((m.status, m.recipient) for m in messages) == [
        ("sent", "shopper-0@example.com"),
        ("sent", "shopper-1@example.com"),
    ]
    assert set(delivered(sink)) == {m.id for m in messages}
    # The journeys that went on have their next touch; the follow-up of the postponed one
    # waits for the sweep (08:00 in Seoul is hours away).
    with rt.engine.connect() as conn:
        following = conn.execute(sa.text("SELECT count(*) FROM decision WHERE touch = 2"))
        assert following.scalar_one() == 2
    # Running the same batch again sends nothing more
    again = sending.send_touches(rt, ids)
    assert again.sent == 0 and len(sink.messages) == 2


def test_a_hard_bounce_is_refused_for_good_and_suppresses_the_address(
    rt: journey.Runtime, sink: SmtpSink
) -> None:
    clock: Clock = rt.clock  # type: ignore[assignment]
    shop = store(rt)
    # Given a relay that has no mailbox for shopper 1 (550 5.1.1) and one whose mailbox for
    # shopper 2 is full for now (452 4.2.2), and shopper 1's second cart, due later
    sink.refuse = {
        "shopper-1@example.com": "550 5.1.1 <shopper-1@example.com>: user unknown",
        "shopper-2@example.com": "452 4.2.2 Mailbox full, try again later",
    }
    tried: Counter[str] = Counter()
    sink.before_rcpt = lambda address: tried.update([address])
    events = [shopper(0), shopper(1), shopper(2)]
    events.append(shopper(3, customer_id="cust-1", email="shopper-1@example.com"))
    ids = abandon_all(rt, shop, events)

    # When the first three go out as one batch
    report = sending.send_touches(rt, ids[:3])

    # Then shopper 0 gets the email; the unknown user's touch fails for good, the full
    # mailbox's waits for a retry of its own
    assert [m.rcpt_tos for m in sink.wait_for(1)] == [["shopper-0@example.com"]]
    assert report.sent == 1 and [e.reason for e in report.refused] == ["hard_bounce"]
    assert [e.this_message_only for e in report.transient] == [True]
    messages = {m.recipient: m for m in rows(rt, "message")}
    bounced = messages["shopper-1@example.com"]
    assert (bounced.status, bounced.error_kind) == ("failed", "permanent")
    assert "550 5.1.1" in bounced.error and "shopper-1@" not in bounced.error
    full = messages["shopper-2@example.com"]
    assert (full.status, full.error_kind) == ("prepared", "transient")
    states = {c: (d.state, d.state_reason) for c, d in decisions(rt).items()}
    assert states["c-1"] == ("failed", "hard_bounce")
    # And the address is suppressed for the store, like an unsubscribe
    suppressed = {(x.channel, x.address, x.reason) for x in rows(rt, "suppression")}
    assert suppressed == {("email", "shopper-1@example.com", "hard_bounce")}

    # When the batch is retried (the mailbox has room again) and shopper 1's other cart
    # comes due, and shopper 1 comes back with consent flags riding on a cart event
    del sink.refuse["shopper-2@example.com"]
    retry = sending.send_touches(rt, [*ids[:3], ids[3]])
    post(rt, shop, shopper(1, event_id="back", occurred_at=clock()))

    # Then the full mailbox gets its email once, and the bounced address is never tried again
    assert sorted(m.rcpt_tos[0] for m in sink.wait_for(2)) == [
        "shopper-0@example.com",
        "shopper-2@example.com",
    ]
    assert retry.sent == 1 and retry.refused == []
    assert tried["shopper-1@example.com"] == 1 and tried["shopper-2@example.com"] == 2
    states = {c: (d.state, d.state_reason) for c, d in decisions(rt).items()}
    assert states["c-3"] == ("skipped", "suppressed")
    assert states["c-1"] == ("failed", "hard_bounce")
    assert {x.address for x in rows(rt, "suppression")} == {"shopper-1@example.com"}
    assert sorted(delivered(sink).values()) == [1, 1]


def test_a_batch_goes_over_one_smtp_connection(rt: journey.Runtime, sink: SmtpSink) -> None:
    shop = store(rt)
    ids = abandon_all(rt, shop, [shopper(n) for n in range(4)])
    sending.send_touches(rt, ids)
    received = sink.wait_for(4)
    assert len({m.peer for m in received}) == 1  # one connection, four mail transactions
    assert len(delivered(sink)) == 4


def test_an_order_or_an_opt_out_just_before_the_hand_off_stops_that_message(
    rt: journey.Runtime, sink: SmtpSink
) -> None:
    clock: Clock = rt.clock  # type: ignore[assignment]
    shop = store(rt)
    ids = abandon_all(rt, shop, [shopper(n) for n in range(3)])

    # Given the shoppers act while the relay is taking the recipient (after the claim,
    # before DATA): one buys, one unsubscribes
    def meanwhile(address: str) -> None:
        if address == "shopper-0@example.com":
            post(rt, shop, order_event("c-0", occurred_at=clock()))
        if address == "shopper-1@example.com":
            with rt.engine.begin() as conn:
                suppress(
                    conn,
                    store_id=shop,
                    channel="email",
                    address=address,
                    reason="unsubscribe",
                    at=clock(),
                )

    sink.before_rcpt = meanwhile
    report = sending.send_touches(rt, ids)

    # Then only the third message reaches DATA; the others end for their reasons
    (mail,) = sink.wait_for(1)
    assert mail.rcpt_tos == ["shopper-2@example.com"]
    assert report.sent == 1 and report.stopped == 2
    states = {c: (d.state, d.state_reason) for c, d in decisions(rt).items()}
    assert states == {
        "c-0": ("void", "ordered"),
        "c-1": ("skipped", "suppressed"),
        "c-2": ("sent", None),
    }
    statuses = sorted(m.status for m in rows(rt, "message"))
    assert statuses == ["sent", "void", "void"]


def test_an_order_accepted_but_not_yet_applied_holds_its_touch(
    rt: journey.Runtime, sink: SmtpSink
) -> None:
    clock: Clock = rt.clock  # type: ignore[assignment]
    shop = store(rt)
    ids = abandon_all(rt, shop, [shopper(n) for n in range(3)])
    # Given the API accepted an order for cart c-0 and a withdrawn consent for shopper 1,
    # which the worker's applier has not applied yet
    withdrawn = cart_event("c-elsewhere", customer_id="cust-1", email="shopper-1@example.com")
    withdrawn["customer"]["consents"]["email"] = False
    withdrawn["type"] = "contact.captured"
    accepted = [
        EventIn.model_validate(e)
        for e in (order_event("c-0", occurred_at=clock()), {**withdrawn, "cart": None})
    ]
    log = EventLog(rt.engine)
    assert log.append([(shop, accepted)], clock()) == [[False, False]]
    log.release()
    # When the batch comes due
    report = sending.send_touches(rt, ids)
    # Then only the third shopper is emailed; the other two touches wait a moment
    (mail,) = sink.wait_for(1)
    assert mail.rcpt_tos == ["shopper-2@example.com"]
    assert report.sent == 1
    assert sorted(f.arg for f in report.follow_ups if f.actor == "send_touch") == sorted(ids[:2])
    # And once the applier has applied the events, they end for their reasons (the order
    # voids its cart's touch as it is applied; the batch stops the other)
    assert apply_accepted(rt.settings) == 2
    again = sending.send_touches(rt, ids[:2])
    assert again.sent == 0 and again.stopped == 1 and again.follow_ups == []
    states = {c: (d.state, d.state_reason) for c, d in decisions(rt).items()}
    assert states == {
        "c-0": ("void", "ordered"),
        "c-1": ("skipped", "no_consent"),
        "c-2": ("sent", None),
    }
    assert len(sink.messages) == 1


def test_each_message_of_a_batch_is_recorded_with_its_provider_id_cost_and_time(
    rt: journey.Runtime, sink: SmtpSink, env: Any
) -> None:
    clock: Clock = rt.clock  # type: ignore[assignment]
    rt.settings = env(
        smtp_port=sink.port, public_url="https://nudge.example.com", email_price=0.0125
    )
    shop = store(rt)
    ids = abandon_all(rt, shop, [shopper(n) for n in range(4)])
    # When a batch of four goes out (its records written by one statement on PostgreSQL)
    report = sending.send_touches(rt, ids)
    assert report.sent == 4
    # Then each record is sent, names the Message-ID its mail carried, and has its cost
    # and time; nothing in them is another message's
    mails = {m.email["X-Nudge-Message"]: m.email["Message-ID"] for m in sink.wait_for(4)}
    messages = rows(rt, "message")
    assert {m.id: m.provider_id for m in messages} == mails
    assert [(m.status, m.cost, m.sent_at, m.detail, m.next_check_at) for m in messages] == [
        ("sent", 0.0125, clock(), None, None)
    ] * 4
    assert {m.decision_id for m in messages} == set(ids)


def test_provider_ids_are_written_while_the_batch_goes_on(
    rt: journey.Runtime, sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = store(rt)
    ids = abandon_all(rt, shop, [shopper(n) for n in range(3)])
    # Given a batch whose quarter second for writing provider ids is up after two messages
    monkeypatch.setattr(
        sending._Outcome, "naming_due", lambda self: len(self.sent) == 2 and self.named == 0
    )
    seen: list[dict[str, tuple[str, str | None]]] = []

    def meanwhile(_address: str) -> None:
        seen.append({m.id: (m.status, m.provider_id) for m in rows(rt, "message")})

    sink.before_rcpt = meanwhile
    sending.send_touches(rt, ids)
    # Then when the third message's recipient is named, the first two are in hand-off with
    # their Message-IDs (a status callback would find them), the third has none yet
    first, second, third = [
        (m.email["X-Nudge-Message"], m.email["Message-ID"]) for m in sink.wait_for(3)
    ]
    assert seen[2] == {
        first[0]: ("handoff", first[1]),
        second[0]: ("handoff", second[1]),
        third[0]: ("prepared", None),
    }
    assert set(seen[0].values()) == {("prepared", None)}


def test_a_message_settled_as_uncertain_during_its_batch_is_recorded_sent_once(
    rt: journey.Runtime, sink: SmtpSink
) -> None:
    clock: Clock = rt.clock  # type: ignore[assignment]
    shop = store(rt)
    ids = abandon_all(rt, shop, [shopper(n) for n in range(3)])
    # Given the batch outlives its leases: while the last message's recipient is named, the
    # sweep finds the first two in hand-off past their leases, settles them as uncertain and
    # decides their journeys' next touches
    swept: list[journey.SweepReport] = []
    named: list[str] = []

    def meanwhile(address: str) -> None:
        named.append(address)
        if len(named) == 3:
            clock.advance(seconds=rt.settings.send_lease_seconds + 1)
            swept.append(journey.sweep(rt))

    sink.before_rcpt = meanwhile
    report = sending.send_touches(rt, ids)
    # Then all three were delivered once and are recorded as sent; the journeys the sweep
    # went on with are not decided again
    assert report.sent == 3 and swept[0].uncertain == 2
    assert sorted(delivered(sink).values()) == [1, 1, 1]
    assert [m.status for m in rows(rt, "message")] == ["sent"] * 3
    touches = Counter((d.cart_id, d.touch) for d in rows(rt, "decision"))
    assert sorted(touches.values()) == [1] * 6
    assert sorted(t for _, t in touches) == [1, 1, 1, 2, 2, 2]


def test_relay_down_releases_the_whole_batch_and_the_retry_sends_each_once(
    rt: journey.Runtime, sink: SmtpSink, env: Any
) -> None:
    clock: Clock = rt.clock  # type: ignore[assignment]
    shop = store(rt)
    ids = abandon_all(rt, shop, [shopper(n) for n in range(3)])
    good = rt.settings
    rt.settings = env(smtp_port=free_port())  # nothing listens there

    report = sending.send_touches(rt, ids)
    # One failed connection says "later" for the whole batch: nothing went out, every record
    # waits with its lease released, and the batch asks to be retried
    assert report.sent == 0 and len(report.transient) == 1
    assert isinstance(report.transient[0], TransientSendError)
    messages = rows(rt, "message")
    assert [(m.status, m.error_kind) for m in messages] == [("prepared", "transient")] * 3
    assert all(m.lease_until <= clock() for m in messages)

    rt.settings = good
    retry = sending.send_touches(rt, ids)
    assert retry.sent == 3 and retry.transient == []
    assert sorted(delivered(sink).values()) == [1, 1, 1]
    assert sorted((m.status, m.attempts) for m in rows(rt, "message")) == [("sent", 2)] * 3


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)  # SQLite: one writer
def test_a_decision_another_worker_holds_is_looked_at_again(
    rt: journey.Runtime, sink: SmtpSink
) -> None:
    shop = store(rt)
    first, second = abandon_all(rt, shop, [shopper(0), shopper(1)])
    # Given another transaction holds the first touch's row
    with rt.engine.connect() as other:
        other.execute(sa.text("SELECT 1 FROM decision WHERE id = :d FOR UPDATE"), {"d": first})
        report = sending.send_touches(rt, [first, second])
        other.rollback()
    # Then the batch sends the second and asks to look at the first again in a moment
    assert report.sent == 1
    assert [(f.arg, f.delay_ms) for f in report.follow_ups if f.arg == first] == [
        (first, sending.LOCKED_RETRY_MS)
    ]
    assert sending.send_touches(rt, [first]).sent == 1
    assert sorted(delivered(sink).values()) == [1, 1]


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)  # SQLite: one writer
def test_two_workers_never_pass_a_cap_together(
    rt: journey.Runtime, sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = store(rt, messages_per_week=1)
    # Given one customer with two carts whose touches are due at once (a weekly cap of one)
    x, y = abandon_all(rt, shop, [shopper(0), shopper(1, customer_id="cust-0")])
    claimed, go_on = threading.Event(), threading.Event()
    real_hand_off = sending._hand_off

    def paused_hand_off(*args: Any) -> None:
        if threading.current_thread().name == "worker-a":
            claimed.set()  # worker A's claim has committed; its hand-off waits
            go_on.wait(30)
        real_hand_off(*args)

    monkeypatch.setattr(sending, "_hand_off", paused_hand_off)
    reports: dict[str, sending.SendReport] = {}
    a = threading.Thread(
        target=lambda: reports.update(a=sending.send_touches(rt, [x])), name="worker-a"
    )
    a.start()
    assert claimed.wait(30)
    # When worker B claims the other touch while A's message is claimed but not yet sent
    reports["b"] = sending.send_touches(rt, [y])
    go_on.set()
    a.join(30)
    # Then A's claimed message counts against the cap: B's touch is skipped, one email
    assert (reports["a"].sent, reports["b"].sent) == (1, 0)
    states = {c: (d.state, d.state_reason) for c, d in decisions(rt).items()}
    assert states == {"c-0": ("sent", None), "c-1": ("skipped", "cap_week")}
    assert len(sink.wait_for(1)) == 1


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)  # SQLite: one writer
def test_a_customer_another_worker_is_claiming_for_is_looked_at_again(
    rt: journey.Runtime, sink: SmtpSink
) -> None:
    shop = store(rt)
    (touch,) = abandon_all(rt, shop, [shopper(0)])
    with rt.engine.connect() as other:  # another claim holds the customer
        other.execute(sa.text("SELECT 1 FROM customer FOR UPDATE"))
        report = sending.send_touches(rt, [touch])
        other.rollback()
    assert report.sent == 0 and rows(rt, "message") == []
    assert [(f.arg, f.delay_ms) for f in report.follow_ups] == [(touch, sending.LOCKED_RETRY_MS)]
    assert sending.send_touches(rt, [touch]).sent == 1
    assert len(sink.wait_for(1)) == 1


def test_batch_records_carry_any_text_to_the_database_unchanged(
    settings: Settings, store_key: tuple[str, str]
) -> None:
    # Given values a provider id or a detail might hold: quotes, backslashes, commas, braces,
    # spaces, the word NULL, an empty string, non-ASCII, and a real NULL
    values = ['a"b', "c\\d", "e,f", "{g}", " h ", "NULL", "", "한글 ü", None, "<id@x.y>"]
    costs = [0.1, 1e-7, 0.0, 0.03, 2.5, 0.0079, 1 / 3, 0.0, 0.2, 0.05]
    store_id, _ = store_key
    engine = get_engine(settings.sqlalchemy_url)
    ids = [f"{n:032x}" for n in range(len(values))]
    held = f"{len(values):032x}"  # still "prepared": another attempt owns it
    now = datetime.now(UTC).replace(microsecond=0)
    with engine.begin() as conn:
        carts, decisions, messages = [], [], []
        for n, message_id in enumerate([*ids, held]):
            cart = conn.execute(
                sa.insert(cart_t)
                .values(
                    store_id=store_id,
                    external_id=f"c-{n}",
                    last_event_at=now,
                    last_activity_at=now,
                )
                .returning(cart_t.c.id)
            ).scalar_one()
            carts.append(cart)
            decisions.append(
                {
                    "id": message_id,
                    "store_id": store_id,
                    "cart_id": cart,
                    "journey": 1,
                    "touch": 1,
                    "policy": "schedule",
                    "arm_key": "email/60m/0%",
                    "channel": "email",
                    "delay_minutes": 60,
                    "discount_pct": 0.0,
                    "propensity": 1.0,
                    "context": {},
                    "decided_at": now,
                    "scheduled_for": now,
                    "state": "scheduled",
                    "window_ends_at": now,
                    "updated_at": now,
                }
            )
            messages.append(
                {
                    "id": message_id,
                    "decision_id": message_id,
                    "store_id": store_id,
                    "channel": "email",
                    "recipient": f"s{n}@example.com",
                    "status": "prepared" if message_id == held else "handoff",
                    "lease_until": now,
                }
            )
        conn.execute(sa.insert(decision_t), decisions)
        conn.execute(sa.insert(message_t), messages)
    # When a batch's records write them, in one statement as the send path does
    with engine.begin() as conn:
        bulk.update_rows(
            conn,
            message_t,
            "id",
            [
                {"id": m, "status": "sent", "provider_id": v, "cost": c, "detail": v}
                for m, v, c in zip([*ids, held], [*values, "x"], [*costs, 9.0], strict=True)
            ],
            where="\"message\".status IN ('handoff', 'uncertain')",
        )
        back = {
            r.id: r
            for r in conn.execute(
                sa.select(
                    message_t.c.id,
                    message_t.c.status,
                    message_t.c.provider_id,
                    message_t.c.detail,
                    message_t.c.cost,
                )
            )
        }
    # Then the database holds exactly them
    assert [back[m].provider_id for m in ids] == values
    assert [back[m].detail for m in ids] == values
    assert [back[m].cost for m in ids] == costs
    # And a record not in hand-off is left as it was
    assert (back[held].status, back[held].provider_id, back[held].cost) == ("prepared", None, 0.0)
