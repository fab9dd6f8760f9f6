"""Bounce reports mailed back later (RFC 3464 DSNs): read by ``nudge bounces read``.

The email goes out through the real adapter to a real SMTP server (aiosmtpd) with the
Return-Path set; the report is the one a relay like Postfix mails back for it, built from
the message the server received, and piped to the ``nudge`` command as a mail server would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nudge.cli import app
from nudge.smtp_sink import Received, SmtpSink, free_port
from optimizer import FixedSchedulePolicy
from senders import journey
from senders.bounces import parse_report
from settings import Settings
from store.db import get_engine
from tests.factories import cart_event
from tests.journeys import Clock, abandon, rows

RETURN_PATH = "bounces@seoul-camping.example"
SHOPPER = "jane@example.com"
runner = CliRunner()


def dsn(
    received: Received,
    *,
    action: str = "failed",
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 <{to}>: Recipient address rejected: User unknown",
    recipient: str | None = None,
    headers_only: bool = False,
    strip_nudge_header: bool = False,
) -> bytes:
    """The report Postfix mails to the Return-Path for ``received`` (its bounce(8) layout)."""
    to = recipient or received.rcpt_tos[0]
    original = received.raw.decode("ascii")
    if strip_nudge_header:  # some relays return only the standard headers
        original = "\r\n".join(
            line for line in original.split("\r\n") if not line.startswith("X-Nudge-Message")
        )
    if headers_only:
        original = original.split("\r\n\r\n", 1)[0] + "\r\n"
        kind = "Content-Description: Undelivered Message Headers\nContent-Type: text/rfc822-headers"
    else:
        kind = "Content-Description: Undelivered Message\nContent-Type: message/rfc822"
    boundary = "4A1B2C3D4E.1764488401/mail.example.net"
    report = f"""Return-Path: <>
Date: Mon, 30 Nov 2026 07:40:01 +0000 (UTC)
From: MAILER-DAEMON@mail.example.net (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {received.mail_from}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"
Content-Transfer-Encoding: 8bit
Message-Id: <20261130074001.5F6A7B8C9D@mail.example.net>

This is a MIME-encapsulated message.

--{boundary}
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mail.example.net.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

<{to}>: host mx.example.com[203.0.113.5] said: 550 5.1.1 <{to}>:
    Recipient address rejected: User unknown (in reply to RCPT TO command)

--{boundary}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.example.net
X-Postfix-Queue-ID: 4A1B2C3D4E
X-Postfix-Sender: rfc822; {received.mail_from}
Arrival-Date: Mon, 30 Nov 2026 07:39:58 +0000 (UTC)

Final-Recipient: rfc822; {to}
Original-Recipient: rfc822;{to}
Action: {action}
Status: {status}
Remote-MTA: dns; mx.example.com
Diagnostic-Code: {diagnostic.format(to=to)}

--{boundary}
{kind}

{original}
--{boundary}--
"""
    return report.replace("\r\n", "\n").replace("\n", "\r\n").encode()


# --- parsing ---------------------------------------------------------------------------------


def sent_email(message_id: str = "ab" * 16, to: str = SHOPPER) -> Received:
    raw = (
        f"From: hello@seoul-camping.example\r\nTo: {to}\r\nSubject: Your cart\r\n"
        f"Message-ID: <{message_id}@seoul-camping.example>\r\nX-Nudge-Message: {message_id}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nYour cart misses you.\r\n"
    ).encode()
    return Received(mail_from=RETURN_PATH, rcpt_tos=[to], raw=raw)


@pytest.mark.parametrize("headers_only", [False, True])
@pytest.mark.parametrize("strip_nudge_header", [False, True])
def test_a_postfix_report_names_the_message_the_recipient_and_the_status(
    headers_only: bool, strip_nudge_header: bool
) -> None:
    raw = dsn(sent_email(), headers_only=headers_only, strip_nudge_header=strip_nudge_header)
    (bounce,) = parse_report(raw)
    assert bounce.message_id == "ab" * 16  # from X-Nudge-Message, else from the Message-ID
    assert (bounce.recipient, bounce.action, bounce.status) == (SHOPPER, "failed", "5.1.1")
    assert bounce.hard and bounce.delivery_status == "bounced"
    # The remote server's words are kept, the address it echoed is not
    assert "Recipient address rejected" in bounce.diagnostic and SHOPPER not in bounce.diagnostic


def test_a_full_mailbox_is_a_failure_but_not_a_hard_bounce() -> None:
    (bounce,) = parse_report(
        dsn(sent_email(), status="5.2.2", diagnostic="smtp; 552 5.2.2 Mailbox full")
    )
    assert not bounce.hard and bounce.delivery_status == "failed"


def test_anything_but_a_delivery_report_is_not_one() -> None:
    auto_reply = (
        b"From: jane@example.com\r\nTo: bounces@seoul-camping.example\r\n"
        b"Subject: Out of office\r\nAuto-Submitted: auto-replied\r\n\r\nBack on Monday.\r\n"
    )
    assert parse_report(auto_reply) == []
    assert parse_report(b"") == []
    assert parse_report(b"\x00\xff garbage") == []


# --- the journey -----------------------------------------------------------------------------


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink(free_port()) as s:
        yield s


@pytest.fixture
def mail_settings(env: Any, settings: Settings, sink: SmtpSink) -> Settings:
    assert settings.database_url
    return env(  # type: ignore[no-any-return]
        smtp_port=sink.port,
        email_from="서울 캠핑 <hello@seoul-camping.example>",
        email_return_path=RETURN_PATH,
        public_url="https://nudge.example.com",
    )


def email_cart(rt: journey.Runtime, store_id: str, cart_id: str) -> None:
    """A shopper's cart, abandoned; its first email sent when it is due."""
    event = cart_event(cart_id, customer_id="cust-jane", email=SHOPPER, occurred_at=rt.clock())
    for f in abandon(rt, store_id, event):
        if f.actor == "send_touch" and not f.delay_ms:
            journey.send_touch(rt, str(f.arg))


@pytest.fixture
def rt(mail_settings: Settings) -> journey.Runtime:
    policy = FixedSchedulePolicy(channel="email")
    return journey.Runtime(
        settings=mail_settings,
        engine=get_engine(mail_settings.sqlalchemy_url),
        policy_for=lambda _store: policy,
        clock=Clock(),
    )


def test_a_hard_bounce_piped_to_nudge_suppresses_the_address(
    rt: journey.Runtime, sink: SmtpSink, store_key: tuple[str, str]
) -> None:
    store_id, _ = store_key
    email_cart(rt, store_id, "c-1")
    (received,) = sink.wait_for(1)
    # The relay is told where reports go: the Return-Path, not the From address
    assert received.mail_from == RETURN_PATH
    assert received.email["From"].addresses[0].addr_spec == "hello@seoul-camping.example"

    # The relay accepted it; later the recipient's server says the mailbox does not exist,
    # and the report reaches `nudge bounces read` through a pipe alias.
    done = subprocess.run(
        [str(Path(sys.executable).parent / "nudge"), "bounces", "read"],
        input=dsn(received),
        capture_output=True,
        env=os.environ.copy(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert "1 hard bounce(s)" in done.stdout.decode()
    assert SHOPPER not in (done.stdout + done.stderr).decode()  # no personal data in logs

    (message,) = rows(rt, "message")
    assert (message.status, message.delivery_status) == ("sent", "bounced")
    assert message.detail == "bounce report 5.1.1" and "User unknown" in (message.error or "")
    suppressed = {(s.channel, s.address, s.reason) for s in rows(rt, "suppression")}
    assert suppressed == {("email", SHOPPER, "hard_bounce")}

    # The same shopper's next cart: email is no longer a channel that reaches her
    email_cart(rt, store_id, "c-2")
    latest = max(rows(rt, "decision"), key=lambda d: d.decided_at)
    assert latest.context["channels"] == [] and latest.arm_key == "holdout"
    assert len(sink.messages) == 1


def test_soft_failures_delays_and_forged_reports(
    rt: journey.Runtime, sink: SmtpSink, store_key: tuple[str, str]
) -> None:
    store_id, _ = store_key
    email_cart(rt, store_id, "c-1")
    (received,) = sink.wait_for(1)
    reports = [
        # Someone who knows nothing of the message id cannot have an address suppressed
        dsn(received, recipient="someone-else@example.com"),
        dsn(sent_email("cd" * 16)),  # a message that is not ours
        # A delay first, then the final word: the mailbox is full
        dsn(received, action="delayed", status="4.2.2", diagnostic="smtp; 452 4.2.2 Full"),
        dsn(received, status="5.2.2", diagnostic="smtp; 552 5.2.2 Mailbox full"),
        # A late copy of the delay changes nothing
        dsn(received, action="delayed", status="4.2.2", diagnostic="smtp; 452 4.2.2 Full"),
    ]
    tallies = []
    for report in reports:
        result = runner.invoke(app, ["bounces", "read", "-"], input=report)
        assert result.exit_code == 0, result.output
        tallies.append(result.output.strip())
    assert all("1 line(s) matching no message" in t for t in tallies[:2])
    assert "1 other failure(s)" in tallies[3]
    (message,) = rows(rt, "message")
    assert message.delivery_status == "failed" and "5.2.2" in (message.error or "")
    assert rows(rt, "suppression") == []  # a full mailbox is no reason to stop writing


def test_a_maildir_is_read_and_emptied_in_batches(
    rt: journey.Runtime, sink: SmtpSink, store_key: tuple[str, str], tmp_path: Path
) -> None:
    store_id, _ = store_key
    email_cart(rt, store_id, "c-1")
    (received,) = sink.wait_for(1)
    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1.report").write_bytes(dsn(received))
    (maildir / "cur" / "2.reply").write_bytes(b"Subject: thanks\r\n\r\nThanks!\r\n")
    (maildir / "tmp" / "3.partial").write_bytes(b"half a message")  # being written: left

    result = runner.invoke(app, ["bounces", "read", str(maildir), "--remove"])
    assert result.exit_code == 0, result.output
    assert "2 message(s) read: 1 hard bounce(s)" in result.output
    assert "1 not a delivery report" in result.output
    assert sorted(p.name for p in maildir.rglob("*") if p.is_file()) == ["3.partial"]
    (message,) = rows(rt, "message")
    assert message.delivery_status == "bounced"


def test_a_missing_file_and_an_unreachable_database_say_so(env: Any, tmp_path: Path) -> None:
    result = runner.invoke(app, ["bounces", "read", str(tmp_path / "nope.eml")])
    assert result.exit_code == 66 and "no such file" in result.output
    # The mail server keeps a report the database could not take, and pipes it again later
    env(database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/nudge")
    result = runner.invoke(app, ["bounces", "read", "-"], input=dsn(sent_email()))
    assert result.exit_code == 75 and "database is unavailable" in result.output
