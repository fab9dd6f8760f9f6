"""The AlimTalk adapter against a local provider shaped like NHN Cloud's API (real httpx)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from nudge.provider_sinks import AlimTalkSink
from senders.channels import open_channel
from senders.channels.base import Outgoing, SendResult
from senders.errors import PermanentSendError, TransientSendError
from settings import Settings

TEMPLATE = "NUDGE_CART_REMINDER_KO"
TEXT = "(광고) Acme Outdoor\n장바구니에 상품 2개(₩238,000)가 남아 있어요.\nhttps://n.example/r/t"


@pytest.fixture
def provider() -> Iterator[AlimTalkSink]:
    with AlimTalkSink("app-1", "secret-1", templates=[TEMPLATE]) as sink:
        yield sink


@pytest.fixture
def kakao_settings(env: Callable[..., Settings], provider: AlimTalkSink) -> Settings:
    return env(
        alimtalk_base_url=provider.url,
        alimtalk_app_key="app-1",
        alimtalk_secret="secret-1",
        alimtalk_sender_key="sender-key-1",
        alimtalk_resend_from="0212345678",
        alimtalk_timeout_seconds=0.5,
        alimtalk_price=0.006,
        lms_price=0.022,
    )


def alimtalk(to: str = "+821012345678", message_id: str = "m-1") -> Outgoing:
    return Outgoing(
        message_id=message_id,
        channel="kakao",
        recipient=to,
        text=TEXT,
        template=TEMPLATE,
        variables={"store": "Acme Outdoor", "count": "2", "link": "https://n.example/r/t"},
    )


def send(settings: Settings, message: Outgoing) -> SendResult:
    with open_channel("kakao", settings) as channel:
        channel.prepare(message)
        return channel.deliver()


def test_alimtalk_is_sent_with_template_variables_and_fallback(
    kakao_settings: Settings, provider: AlimTalkSink
) -> None:
    result = send(kakao_settings, alimtalk())

    [sent] = provider.sent
    assert sent.via == "alimtalk"
    assert sent.sender_key == "sender-key-1"
    assert sent.template_code == TEMPLATE
    assert sent.recipient_no == "01012345678"  # national form
    assert sent.parameters == {
        "store": "Acme Outdoor",
        "count": "2",
        "link": "https://n.example/r/t",
    }
    assert sent.idempotency_key == "m-1"
    assert sent.resend == {
        "isResend": True,
        "resendType": "LMS",
        "resendTitle": "Acme Outdoor",
        "resendContent": TEXT,
        "resendSendNo": "0212345678",
    }
    assert result.provider_id == f"{sent.request_id}:1"
    assert result.cost == pytest.approx(0.006)
    assert result.detail is None


def test_recipient_without_kakaotalk_gets_the_lms(
    kakao_settings: Settings, provider: AlimTalkSink
) -> None:
    provider.no_kakaotalk.add("01012345678")
    result = send(kakao_settings, alimtalk())
    assert provider.sent[0].via == "lms"
    assert result.detail == "fallback:lms"
    assert result.cost == pytest.approx(0.022)


@pytest.mark.usefixtures("kakao_settings")
def test_without_a_fallback_number_no_kakaotalk_is_permanent(
    env: Callable[..., Settings], provider: AlimTalkSink
) -> None:
    settings = env(alimtalk_resend_from=None)
    provider.no_kakaotalk.add("01012345678")
    with pytest.raises(PermanentSendError) as info:
        send(settings, alimtalk())
    # Not suppressed: the number may still take SMS.
    assert (info.value.reason, info.value.suppress) == ("no_kakaotalk", False)
    assert provider.sent == []


def test_a_repeated_message_id_is_sent_once(
    kakao_settings: Settings, provider: AlimTalkSink
) -> None:
    first = send(kakao_settings, alimtalk(message_id="m-7"))
    second = send(kakao_settings, alimtalk(message_id="m-7"))
    assert first.provider_id == second.provider_id
    assert len(provider.sent) == 1 and provider.replays == 1


def test_rate_limit_and_outage_are_transient(
    kakao_settings: Settings, provider: AlimTalkSink
) -> None:
    provider.rate_limited(retry_after=5)
    with pytest.raises(TransientSendError) as info:
        send(kakao_settings, alimtalk())
    assert info.value.retry_after == pytest.approx(5.0)
    provider.server_error(500)
    with pytest.raises(TransientSendError):
        send(kakao_settings, alimtalk())
    assert provider.sent == []


def test_timeout_and_gateway_errors_are_ambiguous(
    kakao_settings: Settings, provider: AlimTalkSink
) -> None:
    provider.hang(1.0)
    with pytest.raises(ConnectionError):
        send(kakao_settings, alimtalk(message_id="m-slow"))
    provider.server_error(502)
    with pytest.raises(ConnectionError):
        send(kakao_settings, alimtalk())
    provider.drop()
    with pytest.raises(ConnectionError):
        send(kakao_settings, alimtalk())


def test_unknown_template_and_wrong_secret_are_permanent(
    env: Callable[..., Settings], kakao_settings: Settings, provider: AlimTalkSink
) -> None:
    with pytest.raises(PermanentSendError) as info:
        send(kakao_settings, Outgoing("m-1", "kakao", "+821012345678", TEXT, template="NOPE"))
    assert (info.value.reason, info.value.suppress) == ("rejected", False)
    with pytest.raises(PermanentSendError) as info:
        send(env(alimtalk_secret="wrong"), alimtalk())
    assert info.value.reason == "provider_auth"
    assert provider.sent == []


def test_numbers_are_checked_before_any_request(
    kakao_settings: Settings, provider: AlimTalkSink
) -> None:
    with open_channel("kakao", kakao_settings) as channel, pytest.raises(PermanentSendError) as e:
        channel.prepare(alimtalk(to="010-1234-5678"))
    assert (e.value.reason, e.value.suppress) == ("invalid_number", True)
    with open_channel("kakao", kakao_settings) as channel, pytest.raises(PermanentSendError) as e:
        channel.prepare(alimtalk(to="+14155550123"))
    assert (e.value.reason, e.value.suppress) == ("unsupported_country", False)
    assert provider.exchanges == []
