"""The SMS adapter against a local server speaking Twilio's Messages API, via the real SDK."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest

from nudge.provider_sinks import TwilioSink, free_port
from senders.channels import open_channel
from senders.channels.base import Outgoing, SendResult
from senders.errors import PermanentSendError, TransientSendError
from settings import Settings

SID = "AC" + "1" * 32
TOKEN = "test-auth-token-0123456789"
FROM = "+15005550006"
TO = "+14155550123"
CALLBACK = "https://nudge.example.com/v1/providers/twilio/status"
ENGLISH = "Acme Outdoor\nYou left 2 items ($238.00) in your cart.\nReply STOP to opt out."
KOREAN = "(광고) Acme Outdoor\n장바구니에 상품 2개(₩238,000)가 남아 있어요.\n" + "x" * 23


@pytest.fixture
def twilio() -> Iterator[TwilioSink]:
    with TwilioSink(SID, TOKEN) as sink:
        yield sink


@pytest.fixture
def sms_settings(env: Callable[..., Settings], twilio: TwilioSink) -> Settings:
    return env(
        twilio_account_sid=SID,
        twilio_auth_token=TOKEN,
        twilio_from=FROM,
        twilio_base_url=twilio.base_url,
        twilio_timeout_seconds=0.5,
        sms_price_per_segment=0.0079,
    )


def sms(text: str = ENGLISH, to: str = TO, message_id: str = "m-1") -> Outgoing:
    return Outgoing(
        message_id=message_id, channel="sms", recipient=to, text=text, status_callback=CALLBACK
    )


def send(settings: Settings, message: Outgoing) -> SendResult:
    with open_channel("sms", settings) as channel:
        channel.prepare(message)
        return channel.deliver()


def test_sms_goes_out_through_the_twilio_api(sms_settings: Settings, twilio: TwilioSink) -> None:
    # When an English reminder is sent
    result = send(sms_settings, sms())

    # Then Twilio got one authenticated, form-encoded message with the status callback
    assert len(twilio.messages) == 1
    sent = twilio.messages[0]
    assert sent.form["To"] == TO
    assert sent.form["From"] == FROM
    assert sent.form["Body"] == ENGLISH
    assert sent.form["StatusCallback"] == CALLBACK
    # and the result carries Twilio's SID, its first status, and the cost of one GSM-7 part
    assert result.provider_id == sent.sid and result.provider_id.startswith("SM")
    assert result.status == "queued"
    assert result.detail == "segments=1 encoding=GSM-7"
    assert result.cost == pytest.approx(0.0079)


def test_korean_sms_is_ucs2_and_costs_per_segment(
    sms_settings: Settings, twilio: TwilioSink
) -> None:
    # 72 characters with Hangul: UCS-2, over 70, so two parts
    assert len(KOREAN) == 72
    result = send(sms_settings, sms(KOREAN, to="+821012345678"))
    assert twilio.messages[0].encoding == "UCS-2"
    assert result.detail == "segments=2 encoding=UCS-2"
    assert result.cost == pytest.approx(2 * 0.0079)


def test_opted_out_number_is_permanent_and_suppressed(
    sms_settings: Settings, twilio: TwilioSink
) -> None:
    twilio.opted_out()
    with pytest.raises(PermanentSendError) as info:
        send(sms_settings, sms())
    assert info.value.reason == "opted_out"
    assert info.value.suppress is True
    assert TO not in str(info.value)  # the error is stored; it must not quote the number


def test_invalid_number_is_permanent_and_suppressed(
    sms_settings: Settings, twilio: TwilioSink
) -> None:
    twilio.invalid_number()
    with pytest.raises(PermanentSendError) as info:
        send(sms_settings, sms())
    assert (info.value.reason, info.value.suppress) == ("invalid_number", True)


def test_rate_limit_is_transient_with_the_providers_delay(
    sms_settings: Settings, twilio: TwilioSink
) -> None:
    twilio.rate_limited(retry_after=7)
    with pytest.raises(TransientSendError) as info:
        send(sms_settings, sms())
    assert info.value.retry_after == pytest.approx(7.0)
    # and the next attempt goes through
    assert send(sms_settings, sms()).status == "queued"
    assert len(twilio.messages) == 1


def test_server_error_is_transient_but_gateway_timeout_is_ambiguous(
    sms_settings: Settings, twilio: TwilioSink
) -> None:
    twilio.server_error(500)
    with pytest.raises(TransientSendError) as info:
        send(sms_settings, sms())
    assert info.value.retry_after is None
    twilio.server_error(504)
    with pytest.raises(ConnectionError):
        send(sms_settings, sms())


def test_timeout_during_delivery_is_ambiguous(sms_settings: Settings, twilio: TwilioSink) -> None:
    # Given Twilio takes longer than the client waits (it still creates the message)
    twilio.hang(3.0)
    with pytest.raises(ConnectionError):
        send(sms_settings, sms())
    # Then the adapter gave up after its own timeout (0.5 s), before Twilio answered, and
    # could not have known: the sink holds the message and creates it afterwards
    assert twilio.messages == []
    twilio.wait_until(lambda: len(twilio.messages) == 1, timeout=10)


def test_dropped_connection_during_delivery_is_ambiguous(
    sms_settings: Settings, twilio: TwilioSink
) -> None:
    twilio.drop()
    with pytest.raises(ConnectionError):
        send(sms_settings, sms())
    assert len(twilio.messages) == 1


def test_malformed_number_is_refused_before_any_request(
    sms_settings: Settings, twilio: TwilioSink
) -> None:
    for bad in ("4155550123", "+0123456789", "+1 415 555 0123", "+1415555012345678"):
        with open_channel("sms", sms_settings) as channel, pytest.raises(PermanentSendError) as e:
            channel.prepare(sms(to=bad))
        assert (e.value.reason, e.value.suppress) == ("invalid_number", True)
    assert twilio.exchanges == []


def test_wrong_credentials_fail_without_suppressing(
    env: Callable[..., Settings], twilio: TwilioSink
) -> None:
    settings = env(
        twilio_account_sid=SID,
        twilio_auth_token="wrong",
        twilio_from=FROM,
        twilio_base_url=twilio.base_url,
    )
    with pytest.raises(PermanentSendError) as info:
        send(settings, sms())
    assert (info.value.reason, info.value.suppress) == ("provider_auth", False)
    assert twilio.messages == []


def test_missing_configuration_is_permanent(env: Callable[..., Settings]) -> None:
    with open_channel("sms", env()) as channel, pytest.raises(PermanentSendError) as info:
        channel.prepare(sms())
    assert info.value.reason == "not_configured"


def test_nothing_logs_the_number_the_body_or_the_token(
    sms_settings: Settings, twilio: TwilioSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    send(sms_settings, sms())
    twilio.opted_out()
    with pytest.raises(PermanentSendError):
        send(sms_settings, sms())
    assert caplog.records, "expected the HTTP client to log something"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (TO, TO.removeprefix("+"), TOKEN, "You left 2 items"):
        assert secret not in logged


def test_many_messages_go_over_one_keep_alive_connection(
    sms_settings: Settings, twilio: TwilioSink
) -> None:
    with open_channel("sms", sms_settings) as channel:
        for n in range(3):
            channel.prepare(sms(message_id=f"m-{n}"))
            channel.deliver()
    assert len(twilio.messages) == 3
    assert len({e.peer for e in twilio.exchanges}) == 1


def test_a_connection_the_provider_closed_is_opened_again(
    sms_settings: Settings, twilio: TwilioSink
) -> None:
    with open_channel("sms", sms_settings) as channel:
        channel.prepare(sms())
        channel.deliver()
        twilio.stop()  # the provider drops idle connections (here: it restarts)
        with TwilioSink(SID, TOKEN, port=twilio.port) as again:
            channel.prepare(sms())
            assert channel.deliver().status == "queued"
            assert len(again.messages) == 1


def test_no_connection_at_all_is_transient_not_ambiguous(env: Callable[..., Settings]) -> None:
    # Nothing listens: the request never left, so a retry cannot double it
    settings = env(
        twilio_account_sid=SID,
        twilio_auth_token=TOKEN,
        twilio_from=FROM,
        twilio_base_url=f"http://127.0.0.1:{free_port()}",
    )
    with open_channel("sms", settings) as channel, pytest.raises(TransientSendError):
        channel.prepare(sms())
        channel.deliver()
