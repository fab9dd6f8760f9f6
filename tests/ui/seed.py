"""A store with a few dozen journeys, made by the real journey functions with a controlled clock.

Real SMTP (a loopback server that bounces ``bounce-…`` addresses), the real API for opens,
clicks and unsubscribes, real events for orders. What it makes is counted in :class:`Seeded`
so the tests can check the dashboard shows exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.app import create_app
from nudge.smtp_sink import SmtpSink
from senders import actors, journey, links
from senders.broker import setup_broker
from senders.errors import PermanentSendError
from settings import Settings
from store.db import get_engine
from store.events import apply_events
from store.schemas import EventIn
from store.stores import create_store
from tests.factories import cart_event, order_event


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class BouncingSink(SmtpSink):
    """An SMTP server that refuses ``bounce-…`` recipients for good (550), as a mailbox that
    does not exist would."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.startswith("bounce-"):
            return "550 5.1.1 No such user here"
        return await super().handle_RCPT(server, session, envelope, address, options)


@dataclass
class Seeded:
    store_id: str
    store_name: str
    carts: int = 0
    holdout: int = 0
    sent: int = 0
    failed: int = 0
    opened: int = 0
    clicked: int = 0
    recovered: int = 0
    holdout_orders: int = 0
    recovered_revenue: float = 0.0
    unsubscribed: int = 0
    devices: dict[str, int] = field(default_factory=dict)
    other_store_id: str = ""
    other_store_name: str = ""
    other_carts: int = 0


STORE = "Acme Outdoor"
OTHER_STORE = "서울 아웃도어"


def seed(settings: Settings, *, carts: int = 30) -> Seeded:
    """Carts ``c-000``…: every 5th has no email consent (the schedule holds it out), ``c-001``
    bounces, the first 12 sent are opened, 8 clicked, 5 of those ordered, one more opened
    unsubscribes; holdout cart ``c-000`` orders on its own. A second, Korean store has 3
    abandoned carts in KRW."""
    with BouncingSink() as sink:
        s = settings.model_copy(
            update={"smtp_port": sink.port, "public_url": "https://nudge.example.com"}
        )
        engine = get_engine(s.sqlalchemy_url)
        clock = Clock(datetime.now(UTC).replace(microsecond=0) - timedelta(days=3))
        rt = journey.Runtime(settings=s, engine=engine, policy_for=actors.policy_for, clock=clock)
        with engine.begin() as conn:
            store_id, _ = create_store(conn, name=STORE)
            other_id, _ = create_store(conn, name=OTHER_STORE)
        seeded = Seeded(store_id, STORE, other_store_id=other_id, other_store_name=OTHER_STORE)

        def post(store: str, *events: dict[str, Any]) -> Any:
            with engine.begin() as conn:
                return apply_events(
                    conn,
                    store_id=store,
                    events=[EventIn.model_validate(e) for e in events],
                    now=clock(),
                )

        values: dict[str, float] = {}
        events = []
        for i in range(carts):
            cart_id = f"c-{i:03d}"
            local = "bounce" if i == 1 else "shopper"
            value = 20.0 + 15.0 * i
            values[cart_id] = value
            ev = cart_event(
                cart_id,
                customer_id=f"cust-{i:03d}",
                email=f"{local}-{i}@example.com",
                consent=i % 5 != 0,
                value=value,
                occurred_at=clock(),
            )
            device = "mobile" if i % 2 == 0 else "desktop"
            ev["context"] = {"device": device}
            seeded.devices[device] = seeded.devices.get(device, 0) + 1
            events.append(ev)
            if i % 3 == 0:
                later = (clock() + timedelta(seconds=1)).isoformat()
                events.append(
                    {**ev, "event_id": f"co-{i}", "type": "checkout.started", "occurred_at": later}
                )
            seeded.carts += 1
            seeded.holdout += i % 5 == 0
        applied = post(store_id, *events)

        clock.advance(seconds=1800)
        for cart_id in sorted(set(applied.checks)):
            journey.check_cart(rt, cart_id)

        clock.advance(minutes=60)
        for f in journey.sweep(rt).follow_ups:
            if f.actor == "send_touch":
                try:
                    journey.send_touch(rt, str(f.arg))
                except PermanentSendError:
                    seeded.failed += 1
        sink.wait_for(carts - seeded.holdout - seeded.failed)

        with engine.connect() as conn:
            sent = conn.execute(
                sa.text(
                    "SELECT m.id, c.external_id FROM message m JOIN decision d ON d.id ="
                    " m.decision_id JOIN cart c ON c.id = d.cart_id WHERE m.status = 'sent'"
                    " ORDER BY c.external_id"
                )
            ).all()
        seeded.sent = len(sent)

        broker = setup_broker(s, stub=True)
        secret = s.link_secret
        ordered: list[str] = []
        with TestClient(create_app(s, broker=broker)) as client:
            for n, (message_id, cart_id) in enumerate(sent):
                if n < 13:
                    client.get(f"/o/{links.sign(secret, message_id, 'open')}.gif")
                    seeded.opened += 1
                if n < 8:
                    r = client.get(f"/r/{links.sign(secret, message_id)}", follow_redirects=False)
                    assert r.status_code == 302, r.text
                    seeded.clicked += 1
                if n < 5:
                    ordered.append(cart_id)
                if n == 12:
                    r = client.post(f"/u/{links.sign(secret, message_id, 'unsubscribe')}")
                    assert r.status_code == 200, r.text
                    seeded.unsubscribed += 1

        clock.advance(hours=2)
        for n, cart_id in enumerate([*ordered, "c-000"]):
            post(
                store_id,
                order_event(cart_id, order_id=f"o-{n}", value=values[cart_id], occurred_at=clock()),
            )
        seeded.recovered = len(ordered)
        seeded.recovered_revenue = sum(values[c] for c in ordered)
        seeded.holdout_orders = 1

        korean = []
        for i in range(3):
            ev = cart_event(
                f"kr-{i}",
                customer_id=f"kr-cust-{i}",
                email=f"kr-{i}@example.kr",
                value=45000.0 * (i + 1),
                occurred_at=clock(),
            )
            ev["cart"]["currency"] = "KRW"
            korean.append(ev)
        applied = post(other_id, *korean)
        clock.advance(seconds=1800)
        for cart_id in sorted(set(applied.checks)):
            journey.check_cart(rt, cart_id)
        seeded.other_carts = 3
    return seeded
