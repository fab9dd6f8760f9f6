"""The journey on SMS and Web Push: the same claim / hand-off / record path as email.

Real database (SQLite and PostgreSQL), the real twilio SDK against a local server speaking
Twilio's Messages API, and real pywebpush against a local push service.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from nudge.provider_sinks import AlimTalkSink, Planned, PushSink, TwilioSink, vapid_keys
from optimizer import FixedSchedulePolicy
from senders import delivery, journey, sending
from senders.errors import PermanentSendError
from settings import Settings
from store.db import get_engine
from store.events import apply_events
from store.schemas import EventIn
from tests.factories import cart_event, order_event
from tests.journeys import Clock, abandon, rows

SID, TOKEN, FROM = "AC" + "2" * 32, "journey-token", "+15005550006"
VAPID_PRIVATE, VAPID_PUBLIC = vapid_keys()


@pytest.fixture
def twilio() -> Iterator[TwilioSink]:
    with TwilioSink(SID, TOKEN) as sink:
        yield sink


@pytest.fixture
def push_service() -> Iterator[PushSink]:
    with PushSink(vapid_public_key=VAPID_PUBLIC) as sink:
        yield sink


@pytest.fixture
def channel_settings(
    env: Any, settings: Settings, twilio: TwilioSink, push_service: PushSink
) -> Settings:
    assert settings.database_url and push_service.url
    return env(  # type: ignore[no-any-return]
        twilio_account_sid=SID,
        twilio_auth_token=TOKEN,
        twilio_from=FROM,
        twilio_base_url=twilio.base_url,
        vapid_private_key=VAPID_PRIVATE,
        public_url="https://nudge.example.com",
    )


def runtime(settings: Settings, channel: str) -> journey.Runtime:
    policy = FixedSchedulePolicy(channel=channel)
    return journey.Runtime(
        settings=settings,
        engine=get_engine(settings.sqlalchemy_url),
        policy_for=lambda _store: policy,
        clock=Clock(),
    )


def abandon_and_wait(rt: journey.Runtime, store_id: str, event: dict[str, Any]) -> None:
    """Post the cart, let it be abandoned, and run the first touch when it is due."""
    for f in abandon(rt, store_id, event):
        if f.actor == "send_touch" and not f.delay_ms:
            try:
                journey.send_touch(rt, str(f.arg))
            except PermanentSendError:
                pass  # recorded by the journey; the actor's `throws` stops retries


def sms_shopper(phone: str = "+14155550123") -> dict[str, Any]:
    event = cart_event()
    event["customer"]["phone"] = phone
    event["customer"]["consents"] = {"email": False, "sms": True}
    return event


def three_sms_touches_due(rt: journey.Runtime, store_id: str, prefix: str) -> list[str]:
    """Three SMS shoppers (phones ``prefix`` + 0..2) abandoned; their first touches' ids."""
    events = []
    for n in range(3):
        e = sms_shopper(f"{prefix}{n}")
        e["cart"]["id"], e["customer"]["id"], e["event_id"] = f"c-{n}", f"cust-{n}", f"e-{n}"
        events.append(e)
    return [str(f.arg) for f in abandon(rt, store_id, *events) if f.actor == "send_touch"]


def test_sms_reminder_goes_out_and_is_costed_by_segment(
    channel_settings: Settings, twilio: TwilioSink, store_key: tuple[str, str]
) -> None:
    rt = runtime(channel_settings, "sms")
    store_id, _ = store_key
    abandon_and_wait(rt, store_id, sms_shopper())

    (sent,) = twilio.messages
    assert sent.form["To"] == "+14155550123" and sent.form["From"] == FROM
    body = sent.form["Body"]
    assert "Acme Outdoor" in body and "https://nudge.example.com/r/" in body
    assert "Reply STOP" in body
    assert sent.form["StatusCallback"] == "https://nudge.example.com/v1/providers/twilio/status"
    (message,) = rows(rt, "message")
    assert (message.status, message.channel, message.provider_id) == ("sent", "sms", sent.sid)
    assert message.cost == pytest.approx(sent.segments * channel_settings.sms_price_per_segment)
    assert f"segments={sent.segments}" in (message.detail or "")


def test_opted_out_number_is_suppressed_and_never_tried_again(
    channel_settings: Settings, twilio: TwilioSink, store_key: tuple[str, str]
) -> None:
    rt = runtime(channel_settings, "sms")
    store_id, _ = store_key
    # Given Twilio says the recipient replied STOP to us at some point (21610)
    twilio.opted_out()
    abandon_and_wait(rt, store_id, sms_shopper())
    (message,) = rows(rt, "message")
    assert (message.status, message.error_kind) == ("failed", "permanent")
    (decision,) = rows(rt, "decision")
    assert (decision.state, decision.state_reason) == ("failed", "opted_out")
    suppressed = {(x.channel, x.address, x.reason) for x in rows(rt, "suppression")}
    assert suppressed == {
        ("sms", "+14155550123", "opted_out"),
        ("kakao", "+14155550123", "opted_out"),  # the same number, KakaoTalk's SMS fallback
    }
    # When the same shopper abandons another cart, SMS is no longer a reachable channel
    second = sms_shopper()
    second["cart"]["id"] = "c-2"
    second["event_id"] = "second"
    abandon_and_wait(rt, store_id, second)
    latest = max(rows(rt, "decision"), key=lambda d: d.decided_at)
    assert latest.context["channels"] == [] and latest.arm_key == "holdout"
    assert len(twilio.messages) == 0


def test_push_reminder_and_a_gone_subscription(
    channel_settings: Settings, push_service: PushSink, store_key: tuple[str, str]
) -> None:
    rt = runtime(channel_settings, "push")
    store_id, _ = store_key
    browser = push_service.subscribe()
    event = cart_event()
    event["customer"]["consents"] = {"email": False, "push": True}
    # The browser's subscription, as POST /v1/push/subscriptions stores it
    contact = {**event, "type": "contact.captured", "event_id": "contact"}
    del contact["cart"]
    with rt.engine.begin() as conn:
        apply_events(
            conn, store_id=store_id, events=[EventIn.model_validate(contact)], now=rt.clock()
        )
        customer_id = conn.execute(sa.text("SELECT id FROM customer")).scalar_one()
        keys = browser.info["keys"]
        conn.execute(
            SQLModel.metadata.tables["pushsubscription"]
            .insert()
            .values(
                store_id=store_id,
                customer_id=customer_id,
                endpoint=browser.endpoint,
                p256dh=keys["p256dh"],
                auth=keys["auth"],
                created_at=rt.clock(),
            )
        )
    event["event_id"] = "again"
    abandon_and_wait(rt, store_id, event)
    (received,) = push_service.received
    assert received.payload["title"] == "Acme Outdoor"
    assert received.payload["url"].startswith("https://nudge.example.com/r/")
    (message,) = rows(rt, "message")
    assert message.status == "sent" and message.recipient.startswith("push:")

    # When the browser unsubscribed (410), the next push removes the subscription for good
    push_service.gone(browser.endpoint)
    second = {**event, "event_id": "third", "cart": {**event["cart"], "id": "c-2"}}
    abandon_and_wait(rt, store_id, second)
    assert rows(rt, "pushsubscription") == []
    (sup,) = rows(rt, "suppression")
    assert (sup.channel, sup.address) == ("push", browser.endpoint)
    assert len(push_service.received) == 1


def test_alimtalk_fallback_reported_later_sets_route_and_cost(
    env: Any, settings: Settings, store_key: tuple[str, str]
) -> None:
    assert settings.database_url
    with AlimTalkSink("app-1", "secret-1", report_later=True) as provider:
        s = env(
            alimtalk_base_url=provider.url,
            alimtalk_app_key="app-1",
            alimtalk_secret="secret-1",
            alimtalk_sender_key="sender-key-1",
            alimtalk_resend_from="0212345678",
            alimtalk_price=0.006,
            lms_price=0.022,
            alimtalk_check_seconds=60,
            public_url="https://nudge.example.com",
        )
        rt = runtime(s, "kakao")
        clock: Clock = rt.clock  # type: ignore[assignment]
        store_id, _ = store_key
        # Given a Korean shopper without KakaoTalk: the provider accepts, sends the LMS, and
        # says so only when asked
        provider.no_kakaotalk.add("01012345678")
        abandon_and_wait(rt, store_id, sms_shopper("+821012345678"))
        (sent,) = provider.sent
        assert sent.via == "lms"
        (message,) = rows(rt, "message")
        assert (message.status, message.cost, message.detail) == ("sent", 0.006, None)
        assert message.next_check_at == clock() + timedelta(seconds=60)

        # The shopper buys before the provider is asked: the outcome has the AlimTalk price
        with rt.engine.begin() as conn:
            apply_events(
                conn,
                store_id=store_id,
                events=[EventIn.model_validate(order_event(occurred_at=clock()))],
                now=clock(),
            )
        (outcome,) = [o for o in rows(rt, "outcome") if o.message_sent]
        assert outcome.message_cost == pytest.approx(0.006)

        # Nothing is asked before its time; then the sweep puts the check on the broker once
        assert journey.sweep(rt).deliveries == 0
        clock.now += timedelta(seconds=61)
        report = journey.sweep(rt)
        checks = [f.arg for f in report.follow_ups if f.actor == "check_delivery"]
        assert checks == [message.id] and journey.sweep(rt).deliveries == 0

        # When it runs, the message and the decision's outcome get the LMS route and price
        assert delivery.check_deliveries(rt, checks) == 1
        (message,) = rows(rt, "message")
        assert (message.delivery_status, message.detail) == ("delivered", "fallback:lms")
        assert message.cost == pytest.approx(0.022) and message.next_check_at is None
        (outcome,) = [o for o in rows(rt, "outcome") if o.message_sent]
        assert outcome.message_cost == pytest.approx(0.022)


def test_a_provider_that_never_knows_is_asked_again_then_given_up_on(
    env: Any, settings: Settings, store_key: tuple[str, str]
) -> None:
    assert settings.database_url
    with AlimTalkSink("app-1", "secret-1", report_later=True, report_after=3600) as provider:
        s = env(
            alimtalk_base_url=provider.url,
            alimtalk_app_key="app-1",
            alimtalk_secret="secret-1",
            alimtalk_sender_key="sender-key-1",
            alimtalk_check_seconds=60,
            alimtalk_check_hours=2,
        )
        rt = runtime(s, "kakao")
        clock: Clock = rt.clock  # type: ignore[assignment]
        store_id, _ = store_key
        abandon_and_wait(rt, store_id, sms_shopper("+821012345678"))
        (message,) = rows(rt, "message")
        clock.now += timedelta(seconds=61)
        assert delivery.check_deliveries(rt, [message.id]) == 0  # READY: ask again
        (pending,) = rows(rt, "message")
        assert pending.delivery_status is None
        assert pending.next_check_at == clock() + timedelta(seconds=60)
        clock.now += timedelta(hours=2)
        assert delivery.check_deliveries(rt, [message.id]) == 0
        (given_up,) = rows(rt, "message")
        assert (given_up.delivery_status, given_up.next_check_at) == ("unknown", None)
        assert provider.queries == 2


def test_a_long_batch_writes_provider_ids_as_it_goes_for_the_status_callbacks(
    channel_settings: Settings, twilio: TwilioSink, store_key: tuple[str, str]
) -> None:
    rt = runtime(channel_settings, "sms")
    ids = three_sms_touches_due(rt, store_key[0], "+1415555012")
    # Given Twilio answers the second message slowly and the third more slowly still
    twilio.plan(Planned(), Planned(delay=0.4), Planned(delay=3.0))
    batch = threading.Thread(target=sending.send_touches, args=(rt, ids))
    batch.start()

    # Then, while the third is under way, the first two carry Twilio's ids already (a status
    # callback for them finds them), still in hand-off until the batch records them as sent
    def named() -> list[Any]:
        return [m for m in rows(rt, "message") if m.provider_id]

    twilio.wait_until(lambda: len(twilio.exchanges) == 3, timeout=10)
    deadline = datetime.now(UTC) + timedelta(seconds=2)
    while len(named()) < 2 and datetime.now(UTC) < deadline:
        threading.Event().wait(0.05)
    early = named()
    assert len(early) == 2 and {m.status for m in early} == {"handoff"}
    assert {m.provider_id for m in early} == {m.sid for m in twilio.messages[:2]}
    batch.join(10)
    assert sorted(m.status for m in rows(rt, "message")) == ["sent"] * 3


@pytest.mark.usefixtures("channel_settings")  # Twilio's account and local server
def test_a_provider_that_hangs_costs_one_uncertain_message_not_the_batch(
    env: Any, twilio: TwilioSink, store_key: tuple[str, str]
) -> None:
    rt = runtime(env(twilio_timeout_seconds=0.5), "sms")
    ids = three_sms_touches_due(rt, store_key[0], "+1415555013")
    # Given Twilio takes the first message and then answers too late
    twilio.hang(2.0)
    report = sending.send_touches(rt, ids)
    # Then that one is uncertain (never sent again), the other two wait for the retry
    assert (report.sent, report.uncertain, len(report.transient)) == (0, 1, 1)
    statuses = sorted(m.status for m in rows(rt, "message"))
    assert statuses == ["handoff", "prepared", "prepared"]
    twilio.wait_until(lambda: len(twilio.messages) == 1, timeout=5)
    retry = sending.send_touches(rt, ids)
    assert retry.sent == 2
    assert sorted(m.status for m in rows(rt, "message")) == ["handoff", "sent", "sent"]
    assert len({m.form["To"] for m in twilio.messages}) == len(twilio.messages) == 3
