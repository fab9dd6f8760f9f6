"""Twilio status callbacks and inbound STOP/HELP (signed, or refused), and push subscriptions.

Real SQLite and PostgreSQL through the ``settings`` fixture; requests signed the way Twilio
signs them (``twilio.request_validator``); one test runs the whole loop: the real SDK sends
to the local Twilio server, which calls the API back over HTTP.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import uvicorn
from dramatiq.brokers.stub import StubBroker
from fastapi.testclient import TestClient

from api.app import create_app
from nudge.provider_sinks import PushSink, TwilioSink, free_port, twilio_signature
from senders.broker import setup_broker
from senders.channels import open_channel
from senders.channels.base import Outgoing
from settings import Settings
from store.db import get_engine
from store.events import cart_t, customer_t, decision_t, message_t
from store.models import DecisionState, MessageStatus, new_id
from store.stores import create_store
from store.suppressions import is_suppressed

SID = "AC" + "2" * 32
TOKEN = "callback-test-token"
PHONE = "+821012345678"
STATUS = "/v1/providers/twilio/status"
INBOUND = "/v1/providers/twilio/inbound"


@pytest.fixture
def cfg(settings: Settings, env: Callable[..., Settings]) -> Settings:
    return env(
        database_url=settings.database_url,
        twilio_account_sid=SID,
        twilio_auth_token=TOKEN,
        twilio_from="+15005550006",
        public_url="https://nudge.example.com",
        sms_help_text="Acme reminders. Reply STOP to opt out.",
    )


@pytest.fixture
def client(cfg: Settings) -> Iterator[TestClient]:
    broker = setup_broker(cfg, stub=True)
    assert isinstance(broker, StubBroker)
    with TestClient(create_app(cfg, broker=broker)) as c:
        yield c


def engine(cfg: Settings) -> sa.Engine:
    return get_engine(cfg.sqlalchemy_url)


def seed(cfg: Settings, name: str, phone: str, *, provider_id: str | None = None) -> dict[str, Any]:
    """A store with a customer, an abandoned cart, a sent SMS touch and a scheduled one."""
    now = datetime.now(UTC)
    with engine(cfg).begin() as conn:
        store_id, key = create_store(conn, name=name)
        customer_id = conn.execute(
            sa.insert(customer_t)
            .values(
                store_id=store_id,
                external_id="cust-1",
                phone=phone,
                consent_sms=True,
                created_at=now,
                updated_at=now,
            )
            .returning(customer_t.c.id)
        ).scalar_one()
        cart_id = conn.execute(
            sa.insert(cart_t)
            .values(
                store_id=store_id,
                external_id="c-1",
                customer_id=customer_id,
                status="abandoned",
                journey=1,
                last_event_at=now,
                last_activity_at=now,
                created_at=now,
            )
            .returning(cart_t.c.id)
        ).scalar_one()
        decisions = {}
        for touch, state in ((1, DecisionState.SENT), (2, DecisionState.SCHEDULED)):
            decisions[touch] = new_id()
            conn.execute(
                sa.insert(decision_t).values(
                    id=decisions[touch],
                    store_id=store_id,
                    cart_id=cart_id,
                    journey=1,
                    touch=touch,
                    policy="test",
                    arm_key="sms-0",
                    channel="sms",
                    propensity=1.0,
                    context={},
                    decided_at=now,
                    scheduled_for=now + timedelta(hours=touch),
                    window_ends_at=now + timedelta(days=7),
                    state=state,
                    updated_at=now,
                )
            )
        message_id = new_id()
        conn.execute(
            sa.insert(message_t).values(
                id=message_id,
                decision_id=decisions[1],
                store_id=store_id,
                channel="sms",
                recipient=phone,
                status=MessageStatus.SENT,
                provider_id=provider_id or "SM" + new_id(),
                lease_until=now,
                created_at=now,
                sent_at=now,
            )
        )
    return {
        "store_id": store_id,
        "key": key,
        "customer_id": customer_id,
        "message_id": message_id,
        "scheduled": decisions[2],
    }


def row(cfg: Settings, table: sa.Table, id_: Any) -> Any:
    with engine(cfg).connect() as conn:
        return conn.execute(sa.select(table).where(table.c.id == id_)).one()


def suppressed(cfg: Settings, store_id: str, channel: str, phone: str = PHONE) -> bool:
    with engine(cfg).connect() as conn:
        return is_suppressed(conn, store_id=store_id, channel=channel, address=phone)


def signed(url: str, params: dict[str, str], token: str = TOKEN) -> dict[str, str]:
    return {"X-Twilio-Signature": twilio_signature(token, url, params)}


def post_status(client: TestClient, params: dict[str, str], **kw: Any) -> Any:
    headers = kw.pop("headers", None) or signed("https://nudge.example.com" + STATUS, params)
    return client.post(STATUS, data=params, headers=headers)


def post_inbound(client: TestClient, body: str, from_: str = PHONE, **kw: Any) -> Any:
    params = {"From": from_, "To": "+15005550006", "Body": body, "MessageSid": "SM" + new_id()}
    headers = kw.pop("headers", None) or signed("https://nudge.example.com" + INBOUND, params)
    return client.post(INBOUND, data=params, headers=headers)


# -- status callbacks ------------------------------------------------------------------------


def test_status_callback_records_delivery_and_never_goes_back(
    client: TestClient, cfg: Settings
) -> None:
    s = seed(cfg, "Acme", PHONE, provider_id="SMaaa")
    for status in ("sent", "delivered", "sent"):  # the late "sent" must not undo "delivered"
        r = post_status(client, {"MessageSid": "SMaaa", "MessageStatus": status})
        assert r.status_code == 204, r.text
    assert row(cfg, message_t, s["message_id"]).delivery_status == "delivered"


def test_unsigned_or_forged_callbacks_are_refused_and_change_nothing(
    client: TestClient, cfg: Settings
) -> None:
    s = seed(cfg, "Acme", PHONE, provider_id="SMbbb")
    params = {"MessageSid": "SMbbb", "MessageStatus": "delivered"}
    attempts = [
        {},  # no signature
        signed("https://nudge.example.com" + STATUS, params, token="not-the-token"),
        signed("https://evil.example.com" + STATUS, params),  # signed for another URL
        signed(
            "https://nudge.example.com" + STATUS, {**params, "MessageStatus": "failed"}
        ),  # signed other params
    ]
    for headers in attempts:
        r = client.post(STATUS, data=params, headers=headers)
        assert r.status_code == 403
        assert r.json()["error"] == "invalid_signature"
    assert row(cfg, message_t, s["message_id"]).delivery_status is None


def test_undelivered_to_a_landline_suppresses_the_number(client: TestClient, cfg: Settings) -> None:
    s = seed(cfg, "Acme", PHONE, provider_id="SMccc")
    params = {"MessageSid": "SMccc", "MessageStatus": "undelivered", "ErrorCode": "30006"}
    assert post_status(client, params).status_code == 204
    m = row(cfg, message_t, s["message_id"])
    assert (m.delivery_status, m.error) == ("undelivered", "Twilio delivery error 30006")
    assert suppressed(cfg, s["store_id"], "sms")


def test_callback_for_an_unknown_message_is_acknowledged(client: TestClient, cfg: Settings) -> None:
    s = seed(cfg, "Acme", PHONE, provider_id="SMddd")
    assert (
        post_status(client, {"MessageSid": "SMzzz", "MessageStatus": "failed"}).status_code == 204
    )
    assert row(cfg, message_t, s["message_id"]).delivery_status is None


# -- inbound STOP / HELP ---------------------------------------------------------------------


@pytest.mark.parametrize("word", ["STOP", "stop all", "Unsubscribe.", " cancel ", "수신거부"])
def test_stop_suppresses_the_number_in_every_store_that_knows_it(
    client: TestClient, cfg: Settings, word: str
) -> None:
    # Given two stores with a customer on this phone, and a third with another number
    acme, bolt = seed(cfg, "Acme", PHONE), seed(cfg, "Bolt", PHONE)
    other = seed(cfg, "Cora", "+821099998888")

    # When the customer replies STOP to the installation's number
    r = post_inbound(client, word)

    # Then both stores suppress the number on SMS and KakaoTalk
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/xml")
    assert "<Message>" not in r.text  # Twilio confirms the opt-out itself
    for s in (acme, bolt):
        assert suppressed(cfg, s["store_id"], "sms") and suppressed(cfg, s["store_id"], "kakao")
        assert row(cfg, customer_t, s["customer_id"]).consent_sms is False
        d = row(cfg, decision_t, s["scheduled"])
        assert (d.state, d.state_reason) == (DecisionState.SKIPPED, "unsubscribed")
    # and the other store's customer is untouched
    assert not suppressed(cfg, other["store_id"], "sms", "+821099998888")
    assert row(cfg, customer_t, other["customer_id"]).consent_sms is True
    assert row(cfg, decision_t, other["scheduled"]).state == DecisionState.SCHEDULED


def test_forged_stop_is_refused_and_suppresses_nothing(client: TestClient, cfg: Settings) -> None:
    s = seed(cfg, "Acme", PHONE)
    r = post_inbound(client, "STOP", headers={"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"})
    assert r.status_code == 403
    assert not suppressed(cfg, s["store_id"], "sms")
    assert row(cfg, customer_t, s["customer_id"]).consent_sms is True


def test_help_answers_with_twiml_and_changes_nothing(client: TestClient, cfg: Settings) -> None:
    s = seed(cfg, "Acme", PHONE)
    r = post_inbound(client, "help")
    assert r.status_code == 200
    assert "<Message>Acme reminders. Reply STOP to opt out.</Message>" in r.text
    assert not suppressed(cfg, s["store_id"], "sms")
    # An ordinary reply is neither
    r = post_inbound(client, "Stop sending me the tent please")
    assert "<Message>" not in r.text
    assert not suppressed(cfg, s["store_id"], "sms")


# -- push subscriptions ----------------------------------------------------------------------


def test_push_subscription_is_registered_once_per_endpoint(
    client: TestClient, cfg: Settings
) -> None:
    s = seed(cfg, "Acme", PHONE)
    auth = {"Authorization": f"Bearer {s['key']}"}
    with PushSink() as service:
        browser = service.subscribe()
        body = {"customer_id": "cust-new", "subscription": {**browser.info, "expirationTime": None}}

        # Without the store's key: refused
        assert client.post("/v1/push/subscriptions", json=body).status_code == 401
        # With it: stored, for a customer created on the way
        first = client.post("/v1/push/subscriptions", json=body, headers=auth)
        assert first.status_code == 201, first.text
        assert first.json()["created"] is True
        # The same endpoint again (for the known customer) updates the row
        again = client.post(
            "/v1/push/subscriptions", json={**body, "customer_id": "cust-1"}, headers=auth
        )
        assert again.status_code == 200 and again.json() == {
            "id": first.json()["id"],
            "created": False,
        }

    with engine(cfg).connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM pushsubscription")).all()
        new = conn.execute(
            sa.select(customer_t.c.id).where(customer_t.c.external_id == "cust-new")
        ).scalar_one()
    assert len(rows) == 1
    assert rows[0].endpoint == browser.endpoint
    assert rows[0].p256dh == browser.info["keys"]["p256dh"]
    assert rows[0].customer_id == s["customer_id"]
    assert new is not None


def test_malformed_push_subscription_is_refused(client: TestClient, cfg: Settings) -> None:
    s = seed(cfg, "Acme", PHONE)
    auth = {"Authorization": f"Bearer {s['key']}"}
    bad = {
        "customer_id": "cust-1",
        "subscription": {
            "endpoint": "https://push.example.com/x",
            "keys": {"p256dh": "AAAA", "auth": "x"},
        },
    }
    r = client.post("/v1/push/subscriptions", json=bad, headers=auth)
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_subscription"
    assert {e["field"] for e in r.json()["errors"]} == {
        "subscription.keys.p256dh",
        "subscription.keys.auth",
    }
    with engine(cfg).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM pushsubscription")).scalar_one() == 0


# -- the whole loop over HTTP ----------------------------------------------------------------


@pytest.fixture
def served_api(settings: Settings, env: Callable[..., Settings]) -> Iterator[Settings]:
    """The API under uvicorn on a free port, its public URL pointing at itself."""
    port = free_port()
    cfg = env(
        database_url=settings.database_url,
        twilio_account_sid=SID,
        twilio_auth_token=TOKEN,
        twilio_from="+15005550006",
        public_url=f"http://127.0.0.1:{port}",
    )
    broker = setup_broker(cfg, stub=True)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(cfg, broker=broker), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield cfg
    server.should_exit = True
    thread.join(10)


def test_sent_sms_is_marked_delivered_by_twilios_signed_callbacks(served_api: Settings) -> None:
    cfg = served_api
    s = seed(cfg, "Acme", PHONE)
    with TwilioSink(SID, TOKEN, callbacks=("sent", "delivered")) as twilio:
        settings = cfg.model_copy(update={"twilio_base_url": twilio.base_url})
        # Given an SMS sent through the real SDK with the status callback the renderer sets
        with open_channel("sms", settings) as channel:
            channel.prepare(
                Outgoing(
                    message_id=s["message_id"],
                    channel="sms",
                    recipient=PHONE,
                    text="Acme: your cart is waiting",
                    status_callback=f"{cfg.public_url}{STATUS}",
                )
            )
            result = channel.deliver()
        with engine(cfg).begin() as conn:
            conn.execute(
                sa.update(message_t)
                .where(message_t.c.id == s["message_id"])
                .values(provider_id=result.provider_id)
            )

        # When Twilio reports sent, then delivered
        callbacks = twilio.wait_for_callbacks(2)

    # Then the API accepted both signatures and the message is delivered
    assert [c[1:] for c in callbacks] == [("sent", 204), ("delivered", 204)]
    assert row(cfg, message_t, s["message_id"]).delivery_status == "delivered"
