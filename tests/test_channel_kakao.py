"""The AlimTalk adapter against a local provider shaped like NHN Cloud's API (real httpx)."""

from __future__ import annotations

import time
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


@pytest.fixture
def nhn_like() -> Iterator[AlimTalkSink]:
    """A provider that reports the fallback later, as NHN Cloud does."""
    with AlimTalkSink("app-1", "secret-1", templates=[TEMPLATE], report_later=True) as sink:
        yield sink


@pytest.fixture
def later_settings(env: Callable[..., Settings], nhn_like: AlimTalkSink) -> Settings:
    return env(
        alimtalk_base_url=nhn_like.url,
        alimtalk_app_key="app-1",
        alimtalk_secret="secret-1",
        alimtalk_sender_key="sender-key-1",
        alimtalk_resend_from="0212345678",
        alimtalk_price=0.006,
        lms_price=0.022,
        alimtalk_check_seconds=30,
    )


def test_a_fallback_reported_later_is_read_from_the_message_query(
    later_settings: Settings, nhn_like: AlimTalkSink
) -> None:
    # Given three recipients: on KakaoTalk, not on it (the LMS goes), not on it and the LMS
    # fails too
    nhn_like.no_kakaotalk.update({"01022223333", "01044445555"})
    nhn_like.lms_fails.add("01044445555")
    nhn_like.report_after = 0.3
    with open_channel("kakao", later_settings) as channel:
        results = []
        for n, to in enumerate(["+821011112222", "+821022223333", "+821044445555"]):
            channel.prepare(alimtalk(to, message_id=f"m-{n}"))
            results.append(channel.deliver())
        # Then each send is accepted at the AlimTalk price, to be checked later
        assert all(r.cost == pytest.approx(0.006) and r.detail is None for r in results)
        assert all(r.check_after == 30 for r in results)
        # While the provider does not know yet, the answer is not final
        assert not channel.check(results[1].provider_id).final  # type: ignore[attr-defined]
        time.sleep(0.35)
        kakao, lms, neither = (
            channel.check(r.provider_id)  # type: ignore[attr-defined]
            for r in results
        )
    assert (kakao.final, kakao.status, kakao.detail) == (True, "delivered", None)
    assert kakao.cost == pytest.approx(0.006)
    assert (lms.final, lms.status, lms.detail) == (True, "delivered", "fallback:lms")
    assert lms.cost == pytest.approx(0.022)
    assert (neither.final, neither.status, neither.cost) == (True, "failed", 0.0)
    assert "3019" in (neither.error or "")
    assert [s.via for s in nhn_like.sent] == ["alimtalk", "lms"]
    assert nhn_like.queries == 4


@pytest.mark.usefixtures("later_settings")
def test_without_a_fallback_number_the_failure_is_reported_later(
    env: Callable[..., Settings], nhn_like: AlimTalkSink
) -> None:
    settings = env(alimtalk_resend_from=None)
    nhn_like.no_kakaotalk.add("01012345678")
    with open_channel("kakao", settings) as channel:
        channel.prepare(alimtalk())
        result = channel.deliver()
        outcome = channel.check(result.provider_id)  # type: ignore[attr-defined]
    assert (outcome.final, outcome.status, outcome.cost) == (True, "failed", 0.0)
    assert nhn_like.sent == []
