"""The Web Push adapter: real pywebpush, real VAPID and aes128gcm, a local push service."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest

from nudge.provider_sinks import PushSink, vapid_keys
from senders.channels import open_channel
from senders.channels.base import Outgoing, SendResult
from senders.errors import PermanentSendError, TransientSendError
from settings import Settings

VAPID_PRIVATE, VAPID_PUBLIC = vapid_keys()


@pytest.fixture
def service() -> Iterator[PushSink]:
    with PushSink(vapid_public_key=VAPID_PUBLIC) as sink:
        yield sink


@pytest.fixture
def push_settings(env: Callable[..., Settings]) -> Settings:
    return env(
        vapid_private_key=VAPID_PRIVATE,
        vapid_subject="mailto:ops@shop.example.com",
        push_ttl_seconds=86400,
        push_timeout_seconds=0.5,
    )


def push(recipient: str, message_id: str = "0123456789abcdef0123456789abcdef") -> Outgoing:
    return Outgoing(
        message_id=message_id,
        channel="push",
        recipient=recipient,
        subject="(광고) Acme Outdoor",
        text="장바구니에 상품 2개가 남아 있어요.",
        url="https://nudge.example.com/r/token",
    )


def send(settings: Settings, message: Outgoing) -> SendResult:
    with open_channel("push", settings) as channel:
        channel.prepare(message)
        return channel.deliver()


def test_notification_arrives_encrypted_and_signed(
    push_settings: Settings, service: PushSink
) -> None:
    # Given a browser subscribed at the push service
    browser = service.subscribe()

    # When a reminder is pushed to it
    result = send(push_settings, push(browser.json))

    # Then the service checked our VAPID signature and the browser can decrypt the payload
    [received] = service.received
    assert received.payload == {
        "title": "(광고) Acme Outdoor",
        "body": "장바구니에 상품 2개가 남아 있어요.",
        "url": "https://nudge.example.com/r/token",
        "message_id": "0123456789abcdef0123456789abcdef",
    }
    assert received.vapid_claims["sub"] == "mailto:ops@shop.example.com"
    assert received.vapid_claims["aud"] == service.url
    assert 0 < received.vapid_claims["exp"] - time.time() <= 24 * 3600
    # with a day to live, and a topic that lets a repeated send replace the first
    assert received.headers["ttl"] == "86400"
    assert received.headers["topic"] == "0123456789abcdef0123456789abcdef"
    # and the result is the service's message URL, free of charge
    assert result.provider_id.startswith(f"{service.url}/message/")
    assert result.cost == 0.0
    assert service.refused == []


def test_gone_subscription_is_permanent_and_suppressed(
    push_settings: Settings, service: PushSink
) -> None:
    for status in (404, 410):
        browser = service.subscribe()
        service.gone(browser.endpoint, status)
        with pytest.raises(PermanentSendError) as info:
            send(push_settings, push(browser.json))
        assert (info.value.reason, info.value.suppress) == ("subscription_gone", True)
    assert service.received == []


def test_a_different_vapid_key_is_refused(env: Callable[..., Settings], service: PushSink) -> None:
    # The service knows the application server key the browser subscribed with; another
    # key's signature is refused (a misconfiguration: no suppression).
    other_private, _ = vapid_keys()
    settings = env(vapid_private_key=other_private)
    with pytest.raises(PermanentSendError) as info:
        send(settings, push(service.subscribe().json))
    assert (info.value.reason, info.value.suppress) == ("provider_auth", False)
    assert service.refused[0][1:] == (401, "VAPID authorization invalid")


def test_rate_limit_and_outage_are_transient(push_settings: Settings, service: PushSink) -> None:
    browser = service.subscribe()
    service.rate_limited(retry_after=30)
    with pytest.raises(TransientSendError) as info:
        send(push_settings, push(browser.json))
    assert info.value.retry_after == pytest.approx(30.0)
    service.server_error(503)
    with pytest.raises(TransientSendError):
        send(push_settings, push(browser.json))
    assert service.received == []
    send(push_settings, push(browser.json))
    assert len(service.received) == 1


def test_timeout_is_ambiguous(push_settings: Settings, service: PushSink) -> None:
    browser = service.subscribe()
    service.hang(1.0)
    with pytest.raises(ConnectionError):
        send(push_settings, push(browser.json))


@pytest.mark.parametrize(
    ("recipient", "reason", "suppressed"),
    [
        ("not json", "invalid_subscription", False),
        (json.dumps({"endpoint": "https://push.example.com/x"}), "invalid_subscription", False),
        (
            json.dumps(
                {"endpoint": "https://push.example.com/x", "keys": {"p256dh": "AAAA", "auth": "x"}}
            ),
            "invalid_subscription",
            True,
        ),
        (
            # 65 bytes, but not a point on P-256
            json.dumps(
                {
                    "endpoint": "https://push.example.com/x",
                    "keys": {"p256dh": "BA" + "A" * 85, "auth": "A" * 22},
                }
            ),
            "invalid_subscription",
            True,
        ),
    ],
)
def test_malformed_subscription_is_refused_before_any_request(
    push_settings: Settings, service: PushSink, recipient: str, reason: str, suppressed: bool
) -> None:
    with open_channel("push", push_settings) as channel, pytest.raises(PermanentSendError) as e:
        channel.prepare(push(recipient))
    assert (e.value.reason, e.value.suppress) == (reason, suppressed)
    assert service.exchanges == []


def test_missing_vapid_key_is_permanent(env: Callable[..., Settings], service: PushSink) -> None:
    with open_channel("push", env()) as channel, pytest.raises(PermanentSendError) as info:
        channel.prepare(push(service.subscribe().json))
    assert info.value.reason == "not_configured"
