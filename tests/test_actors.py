"""The actors on Dramatiq's StubBroker: what they queue, and that running them twice is safe."""

from __future__ import annotations

import doctest
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import pytest
import sqlalchemy as sa
from dramatiq.brokers.stub import StubBroker

from nudge.smtp_sink import SmtpSink
from senders import actors, journey
from senders.broker import setup_broker
from settings import Settings
from store.db import get_engine
from store.events import apply_events, decision_t, message_t
from store.schemas import EventIn
from tests.factories import cart_event
from tests.processes import eventually


@pytest.fixture
def stub(env: Any, settings: Settings) -> Iterator[tuple[StubBroker, SmtpSink, Settings]]:
    with SmtpSink() as sink:
        # Time 3600x faster: abandonment after 0.5 s, the first touch 1 s later.
        s = env(database_url=settings.database_url, smtp_port=sink.port, time_scale=3600)
        broker = setup_broker(s, stub=True)
        assert isinstance(broker, StubBroker)
        broker.emit_after("process_boot")
        yield broker, sink, s
        broker.flush_all()


def queued(broker: StubBroker) -> list[tuple[str, Any, int | None]]:
    out = []
    for queue in broker.queues.values():
        for raw in list(queue.queue):
            m = json.loads(raw)
            out.append((m["actor_name"], m["args"][0], m["options"].get("eta")))
    return sorted(out, key=lambda x: x[0])


def test_checks_travel_in_one_message_and_sends_follow(
    stub: tuple[StubBroker, SmtpSink, Settings], store_key: tuple[str, str]
) -> None:
    broker, sink, s = stub
    store_id, _ = store_key
    # Given three carts changed in one go
    now = datetime.now(UTC)
    with get_engine(s.sqlalchemy_url).begin() as conn:
        applied = apply_events(
            conn,
            store_id=store_id,
            events=[
                EventIn.model_validate(
                    cart_event(f"c-{i}", customer_id=f"u-{i}", email=f"u{i}@example.com")
                )
                for i in range(3)
            ],
            now=now,
        )
    # When their checks are scheduled: one message for the three, due when they are idle
    actors.schedule_checks(list(applied.checks), 500)
    ((name, cart_ids, eta),) = queued(broker)
    assert name == "check_carts" and sorted(cart_ids) == sorted(applied.checks)
    assert eta is not None

    # Then a worker runs them: three abandonments, three sends, three emails, once each
    def states() -> list[tuple[int, str]]:
        with get_engine(s.sqlalchemy_url).connect() as conn:
            return [
                (r.touch, r.state)
                for r in conn.execute(
                    sa.select(decision_t.c.touch, decision_t.c.state).order_by(decision_t.c.touch)
                )
            ]

    worker = dramatiq.Worker(broker, worker_timeout=50)
    worker.start()
    try:
        sink.wait_for(3, timeout=20)
        eventually(lambda: states().count((2, "scheduled")) == 3, 10, lambda: repr(states()))
    finally:
        worker.stop()
    assert states().count((1, "sent")) == 3
    # The second touches (23 h later = 23 s) are waiting in the database, not sent
    assert len(sink.messages) == 3

    # Running a send again changes nothing
    with get_engine(s.sqlalchemy_url).connect() as conn:
        sent_ids = (
            conn.execute(sa.select(decision_t.c.id).where(decision_t.c.state == "sent"))
            .scalars()
            .all()
        )
    for decision_id in sent_ids:
        actors.send_touch.fn(decision_id)
    assert len(sink.messages) == 3


def test_send_retries_with_backoff_when_the_relay_is_down(
    stub: tuple[StubBroker, SmtpSink, Settings], store_key: tuple[str, str]
) -> None:
    broker, sink, s = stub
    store_id, _ = store_key
    with get_engine(s.sqlalchemy_url).begin() as conn:
        applied = apply_events(
            conn,
            store_id=store_id,
            events=[
                EventIn.model_validate(
                    cart_event(occurred_at=datetime.now(UTC) - timedelta(hours=1))
                )
            ],
            now=datetime.now(UTC),
        )
    (cart_id,) = applied.checks
    actors.check_carts.fn([cart_id])
    with get_engine(s.sqlalchemy_url).connect() as conn:
        (decision_id,) = conn.execute(sa.select(decision_t.c.id)).scalars().all()

    def message() -> Any:
        with get_engine(s.sqlalchemy_url).connect() as conn:
            return conn.execute(sa.select(message_t)).first()

    # Given the relay is down
    sink.stop()
    worker = dramatiq.Worker(broker, worker_timeout=50)
    worker.start()
    try:
        # When the send runs, it fails, and nothing went out: the record waits, lease released
        actors.send_touch.send(decision_id)
        failed = eventually(lambda: message(), 10, "the send was never attempted")
        assert failed.status == "prepared"
        eventually(lambda: message().lease_until <= datetime.now(UTC), 10, "lease kept")
        # Then, the relay back, a later retry (Retries middleware, backoff) delivers it once
        revived = SmtpSink(sink.port).start()
        try:
            (mail,) = revived.wait_for(1, timeout=30)
            sent = eventually(lambda: message().status == "sent" and message(), 10, "not sent")
            assert sent.attempts >= 2
            assert mail.email["X-Nudge-Message"] == sent.id
        finally:
            revived.stop()
    finally:
        worker.stop()


def test_touches_due_together_are_shared_out_evenly_over_the_threads(env: Any) -> None:
    broker = setup_broker(env(), stub=True)
    assert isinstance(broker, StubBroker)
    try:
        # Given 2,000 touches due now, 101 due in a minute and 3 more a second after those
        due = [journey.FollowUp("send_touch", f"now-{i}") for i in range(2000)]
        due += [journey.FollowUp("send_touch", f"soon-{i}", 60_000) for i in range(101)]
        due += [journey.FollowUp("send_touch", f"late-{i}", 61_500) for i in range(3)]
        # When they are queued for workers of 8 threads
        actors.enqueue(due, spread=8)
        batches = [args for actor, args, _ in queued(broker) if actor == "send_touches"]
        # Then every touch travels exactly once
        flat = [d for batch in batches for d in batch]
        assert sorted(flat) == sorted(str(f.arg) for f in due)
        sizes = {
            prefix: sorted(len(b) for b in batches if b[0].startswith(prefix))
            for prefix in ("now", "soon", "late")
        }
        # the 2,000 as three full rounds of the 8 threads (24 of 83-84, not 20 of 100)
        assert len(sizes["now"]) == 24 and set(sizes["now"]) == {83, 84}
        # 101 as two halves: eight batches of 12-13 would cost more than they save
        assert sizes["soon"] == [50, 51]
        assert sizes["late"] == [3]
        assert all(len({d.split("-")[0] for d in b}) == 1 for b in batches)
        # And the module's examples hold
        assert doctest.testmod(actors).failed == 0
    finally:
        broker.flush_all()
