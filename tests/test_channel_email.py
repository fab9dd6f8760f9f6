"""The email adapter against a real SMTP server (aiosmtpd): the MIME it writes, and many
messages over one connection."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nudge.smtp_sink import SmtpSink, free_port
from senders.channels import open_channel
from senders.channels.base import Outgoing
from senders.channels.email import SmtpEmail
from senders.errors import PermanentSendError, TransientSendError
from settings import Settings

UNSUBSCRIBE = "https://nudge.example.com/u/" + "a" * 32 + ".bbbbbbbbbbbbbbbbbbbbbb"


class PickySink(SmtpSink):
    """Refuses ``gone@…`` for good (550) and defers ``busy@…`` (450), as mailboxes do."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.startswith("gone@"):
            return "550 5.1.1 No such user here"
        if address.startswith("busy@"):
            return "450 4.2.1 Mailbox busy, try later"
        return await super().handle_RCPT(server, session, envelope, address, options)


@pytest.fixture
def sink() -> Iterator[PickySink]:
    with PickySink(free_port()) as s:
        yield s


@pytest.fixture
def email_settings(env: Callable[..., Settings], sink: SmtpSink) -> Settings:
    return env(smtp_port=sink.port, email_from="서울 캠핑 <hello@seoul-camping.example>")


def email(n: int = 1, to: str = "jane@example.com", subject: str = "Your cart") -> Outgoing:
    return Outgoing(
        message_id=f"{n:032x}",
        channel="email",
        recipient=to,
        subject=subject,
        text=f"Plain text {n}\nwith a link https://nudge.example.com/r/x\n",
        html=f"<p>HTML {n} — <a href='https://nudge.example.com/r/x'>back to the cart</a></p>",
        headers={
            "List-Unsubscribe": f"<{UNSUBSCRIBE}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )


def test_the_mime_message_reads_back_as_written(email_settings: Settings, sink: SmtpSink) -> None:
    # A Korean subject long enough to be folded over several encoded words
    subject = "(광고) 서울 캠핑: 장바구니에 상품이 남아 있어요 — 오늘만 10% 할인 쿠폰을 드려요"
    with open_channel("email", email_settings) as channel:
        channel.prepare(email(7, subject=subject))
        result = channel.deliver()
    (mail,) = sink.wait_for(1)
    parsed = mail.email
    assert parsed["Subject"] == subject
    assert parsed["From"].addresses[0].display_name == "서울 캠핑"
    assert parsed["From"].addresses[0].addr_spec == "hello@seoul-camping.example"
    assert parsed["To"] == "jane@example.com"
    assert parsed["Message-ID"] == result.provider_id == f"<{7:032x}@seoul-camping.example>"
    assert parsed["X-Nudge-Message"] == f"{7:032x}"
    assert parsed["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed.get_content_type() == "multipart/alternative"
    assert mail.part("plain") == email(7).text
    assert mail.part("html") == email(7).html
    assert mail.mail_from == "hello@seoul-camping.example"
    assert all(len(line) <= 998 for line in mail.raw.split(b"\r\n"))
    assert result.cost == email_settings.email_price


def test_a_line_break_in_a_header_value_starts_no_new_header(
    email_settings: Settings, sink: SmtpSink
) -> None:
    with open_channel("email", email_settings) as channel:
        channel.prepare(email(subject="Hello\r\nBcc: victim@example.com"))
        channel.deliver()
    (mail,) = sink.wait_for(1)
    assert mail.email["Bcc"] is None and mail.rcpt_tos == ["jane@example.com"]
    assert mail.email["Subject"] == "Hello  Bcc: victim@example.com"


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
def test_many_messages_over_one_connection_refusals_included(
    env: Callable[..., Settings], sink: SmtpSink, pipelining: bool
) -> None:
    settings = env(smtp_port=sink.port, smtp_pipelining=pipelining)
    outcomes: list[str] = []
    with open_channel("email", settings) as channel:
        for n, to in enumerate(
            ["a@example.com", "gone@example.com", "b@example.com", "busy@example.com"]
        ):
            try:
                channel.prepare(email(n, to=to))
                channel.deliver()
                outcomes.append("sent")
            except PermanentSendError:
                outcomes.append("refused")
            except TransientSendError as exc:
                # A deferring mailbox concerns that message alone
                assert exc.this_message_only
                outcomes.append("later")
        # A message prepared but never delivered is dropped before the next one
        channel.prepare(email(8, to="c@example.com"))
        channel.prepare(email(9, to="d@example.com"))
        channel.deliver()
    assert outcomes == ["sent", "refused", "sent", "later"]
    received = sink.wait_for(3)
    assert [m.rcpt_tos for m in received] == [
        ["a@example.com"],
        ["b@example.com"],
        ["d@example.com"],
    ]
    # Refusals keep the connection. A pipelined message left unsent is dropped with its
    # connection (its DATA had begun: only hanging up keeps it from counting); one sent
    # command by command is reset, and the connection goes on.
    assert received[0].peer == received[1].peer
    assert (received[2].peer == received[1].peer) is not pipelining


@pytest.mark.parametrize(
    ("reply", "reason", "suppress"),
    [
        ("550 5.1.1 <{to}>: Recipient address rejected: User unknown", "hard_bounce", True),
        ("553 5.1.3 Bad recipient address syntax", "hard_bounce", True),
        ("550 5.2.1 Mailbox disabled, not accepting messages", "hard_bounce", True),
        # Not about the mailbox: our relay's policy, or no enhanced code to tell
        ("554 5.7.1 <{to}>: Relay access denied", "refused", False),
        ("550 Requested action not taken", "refused", False),
        ("553 5.1.8 <hello@seoul-camping.example>: Sender address rejected", "refused", False),
    ],
)
def test_a_refused_recipient_is_a_hard_bounce_only_when_the_mailbox_is_the_reason(
    email_settings: Settings, sink: SmtpSink, reply: str, reason: str, suppress: bool
) -> None:
    to = "nobody@example.com"
    sink.refuse[to] = reply.format(to=to)
    with open_channel("email", email_settings) as channel:
        with pytest.raises(PermanentSendError) as info:
            channel.prepare(email(1, to=to))
            channel.deliver()
        assert (info.value.reason, info.value.suppress) == (reason, suppress)
        assert reply.split()[0] in str(info.value) and to not in str(info.value)
        # The connection goes on with the next message
        channel.prepare(email(2))
        channel.deliver()
    assert [m.rcpt_tos for m in sink.wait_for(1)] == [["jane@example.com"]]


def test_a_connection_the_relay_closed_is_opened_again(
    email_settings: Settings, sink: SmtpSink
) -> None:
    channel = SmtpEmail(email_settings)
    try:
        channel.prepare(email(1))
        channel.deliver()
        # The relay restarts (every idle connection is dropped) between two messages
        sink.stop()
        with SmtpSink(sink.port) as again:
            channel.prepare(email(2))
            channel.deliver()
            (second,) = again.wait_for(1)
        assert second.email["X-Nudge-Message"] == f"{2:032x}"
    finally:
        channel.close()


def test_addresses_smtp_cannot_carry_are_refused_before_any_connection(
    email_settings: Settings, sink: SmtpSink
) -> None:
    with open_channel("email", email_settings) as channel:
        with pytest.raises(PermanentSendError) as info:
            channel.prepare(email(to="jöns@example.com"))
        assert info.value.reason == "bad_address" and not info.value.suppress
        with pytest.raises(PermanentSendError):
            channel.prepare(email(to="jane@example.com>\r\nRCPT TO:<x@example.com"))
    assert sink.messages == []


def test_relay_down_is_transient(env: Callable[..., Settings]) -> None:
    settings = env(smtp_port=free_port())
    with open_channel("email", settings) as channel, pytest.raises(TransientSendError) as info:
        channel.prepare(email())
    assert not info.value.this_message_only  # the whole relay: the rest of a batch waits too
