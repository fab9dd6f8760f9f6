"""Email over SMTP, in two steps so the caller can record the hand-off in between.

``prepare`` connects (or reuses the open connection) and names sender and recipient (nothing
can be delivered yet, so a crash here is safe to retry); ``deliver`` sends DATA, the step
after which the message may exist. One adapter sends any number of messages in turn over one
connection: a message prepared but never delivered is reset (``RSET``) before the next.

Where the server advertises PIPELINING (RFC 2920; Postfix, Exim and the large providers do),
``prepare`` sends MAIL, RCPT and DATA in one write and reads their three replies: one round
trip instead of three. The message is then between the server's 354 and our end-of-data
dot, which is what makes it count: a message prepared that way and never delivered is dropped
with its connection (the server discards a message whose data never ended), not reset.

A permanent refusal of the recipient (5xx to RCPT) whose enhanced status code (RFC 3463)
says the mailbox or its domain does not exist or takes no mail (5.1.1, 5.1.2, 5.1.3, 5.1.6,
5.1.10, 5.2.1) is a hard bounce: refused for good, and the address is suppressed. Any other
5xx (a policy refusal, a relay that will not relay for us, a reply without an enhanced code)
refuses this message for good and suppresses nothing: it may well be our relay's doing.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import smtplib
import time
from email.utils import formataddr, formatdate, parseaddr
from functools import lru_cache

from senders.channels.base import Outgoing, SendResult
from senders.channels.keepalive import peer_closed
from senders.errors import PermanentSendError, TransientSendError
from settings import Settings

logger = logging.getLogger(__name__)

#: RFC 5322 §2.1.1: a line must not exceed 998 characters (CRLF excluded).
_MAX_LINE = 998


class SmtpEmail:
    """Email over SMTP (any relay). ``prepare`` names sender and recipient; ``deliver`` is DATA."""

    name = "email"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None
        # The message named by MAIL/RCPT and not yet sent: (MIME bytes, Message-ID).
        self._pending: tuple[bytes, str] | None = None
        # The server advertised PIPELINING (and we may use it): see ``_envelope``.
        self._pipelining = False
        # The server said 354 and waits for the message's data (pipelined prepare).
        self._in_data = False

    def __enter__(self) -> SmtpEmail:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def prepare(self, message: Outgoing) -> None:
        """Connect (once), authenticate and name sender and recipient. Nothing is delivered."""
        data, message_id, sender, recipient = build_email(message, self.settings.email_from)
        sender = self.settings.email_return_path or sender  # where bounce reports go
        if self._pending is not None:
            self._reset()  # the previous message was prepared but never handed over
        s = self.settings
        for attempt in (1, 2):
            reused = self._smtp is not None
            try:
                smtp = self._connection()
                if self._pipelining:
                    self._envelope(smtp, sender, recipient)
                else:
                    # docmd, not mail()/rcpt(): those re-parse both addresses every time.
                    code, reply = smtp.docmd("MAIL", f"FROM:<{sender}>")
                    _check(code, reply, "MAIL FROM")
                    code, reply = smtp.docmd("RCPT", f"TO:<{recipient}>")
                    _check_recipient(code, reply)
            except (PermanentSendError, TransientSendError):
                self._reset()
                raise
            except smtplib.SMTPServerDisconnected as exc:
                self._drop()
                if reused and attempt == 1:
                    continue  # the relay closed an idle connection: open a fresh one
                raise TransientSendError(f"SMTP {s.smtp_host}:{s.smtp_port}: {exc}") from exc
            except (OSError, smtplib.SMTPException) as exc:
                self._drop()
                raise TransientSendError(f"SMTP {s.smtp_host}:{s.smtp_port}: {exc}") from exc
            break
        self._pending = (data, message_id)

    def deliver(self) -> SendResult:
        """Send DATA. The provider id is the Message-ID.

        Raises TransientSendError only when the server said no (4xx): then it holds no copy.
        A dropped connection here is ambiguous and raised as ConnectionError.
        """
        assert self._smtp is not None and self._pending is not None, "prepare() first"
        data, message_id = self._pending
        self._pending = None
        try:
            if self._in_data:  # the 354 came with the envelope's replies
                self._in_data = False
                self._smtp.send(_data_lines(data))
                code, reply = self._smtp.getreply()
            else:
                code, reply = self._smtp.data(data)
        except smtplib.SMTPDataError as exc:
            raise _classify(exc.smtp_code, exc.smtp_error, "DATA") from exc
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            self._drop()
            raise ConnectionError(f"SMTP connection lost during DATA: {exc}") from exc
        _check(code, reply, "DATA")
        return SendResult(provider_id=message_id, cost=self.settings.email_price)

    def close(self) -> None:
        self._pending = None
        if self._in_data:
            self._drop()  # QUIT would be taken for the message's data
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (OSError, smtplib.SMTPException):
                self._smtp.close()
            self._smtp = None

    def _connection(self) -> smtplib.SMTP:
        if self._smtp is not None and self._smtp.sock is not None and peer_closed(self._smtp.sock):
            # Between two transactions a server says nothing unless it is going away (a 421
            # for an idle connection, or EOF): what it said would be read as the next reply.
            self._drop()
        if self._smtp is None:
            s = self.settings
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_seconds)
            self._smtp = smtp
            smtp.ehlo()
            if s.smtp_starttls:
                smtp.starttls()
                smtp.ehlo()
            if s.smtp_username and s.smtp_password:
                smtp.login(s.smtp_username, s.smtp_password)
            self._pipelining = s.smtp_pipelining and smtp.has_extn("pipelining")
        return self._smtp

    def _envelope(self, smtp: smtplib.SMTP, sender: str, recipient: str) -> None:
        """MAIL, RCPT and DATA in one write (RFC 2920 §3.1: DATA ends a group), then their
        replies in order. Nothing is delivered before the data's final dot."""
        smtp.send(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n")
        replies: list[tuple[int, bytes]] = []
        try:
            for _ in range(3):
                replies.append(smtp.getreply())
        except smtplib.SMTPServerDisconnected:
            # A server closing the connection (421) says why before it goes.
            if not replies or 200 <= replies[0][0] < 400:
                raise
            self._drop()
        (mail, mail_reply), *rest = replies
        if len(rest) == 2 and rest[1][0] == 354:
            self._in_data = True
        if self._in_data and not (200 <= mail < 400 and 200 <= rest[0][0] < 400):
            self._drop()  # a server that took DATA after refusing MAIL or RCPT: start afresh
        _check(mail, mail_reply, "MAIL FROM")
        if not rest:
            raise TransientSendError("SMTP connection closed after MAIL FROM")
        _check_recipient(*rest[0])
        if not self._in_data:
            code, reply = rest[1] if len(rest) == 2 else (0, b"connection closed")
            raise _classify(code, reply, "DATA")

    def _reset(self) -> None:
        """Abandon the mail transaction under way (RFC 5321 §4.1.1.5), keeping the connection."""
        self._pending = None
        if self._in_data:
            self._drop()  # past DATA's 354 only the end of the data, or hanging up, will do
        if self._smtp is None:
            return
        try:
            code, _ = self._smtp.rset()
        except (OSError, smtplib.SMTPException):
            code = 0
        if code != 250:
            self._drop()

    def _drop(self) -> None:
        self._pending = None
        self._in_data = False
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None


def build_email(message: Outgoing, default_sender: str) -> tuple[bytes, str, str, str]:
    """The MIME message (RFC 5322 / 2045-2047): text and HTML alternatives in UTF-8, base64.

    Returns (bytes with CRLF line ends, Message-ID, envelope sender, envelope recipient). The
    Message-ID is derived from Nudge's message id (the idempotency key), so a relay or
    mailbox that sees it twice can tell. Written out directly rather than through
    ``email.message``: that took ~3 ms of CPU per message, more than the rest of a send.

    Raises PermanentSendError for an address SMTP cannot carry without SMTPUTF8.
    """
    sender_header, sender = _from(message.sender or default_sender)
    recipient = message.recipient.strip()
    if not recipient.isascii() or "@" not in recipient or any(c in recipient for c in "\r\n<>"):
        raise PermanentSendError("recipient is not an ASCII email address", reason="bad_address")
    domain = sender.rpartition("@")[2] or "nudge.localhost"
    message_id = f"<{message.message_id}@{domain}>"
    boundary = f"=_nudge_{message.message_id}"
    headers = [
        ("Subject", message.subject or ""),
        ("From", sender_header),
        ("To", recipient),
        ("Date", _date()),
        ("Message-ID", message_id),
        ("X-Nudge-Message", message.message_id),
        *message.headers.items(),
        ("MIME-Version", "1.0"),
    ]
    lines = [_header(name, value) for name, value in headers]
    if message.html is None:
        lines.append(_part_headers("text/plain"))
        body = _base64(message.text)
    else:
        lines.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
        body = (
            f"--{boundary}\r\n{_part_headers('text/plain')}\r\n\r\n{_base64(message.text)}"
            f"--{boundary}\r\n{_part_headers('text/html')}\r\n\r\n{_base64(message.html)}"
            f"--{boundary}--\r\n"
        )
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("ascii"), message_id, sender, recipient


_dated: tuple[int, str] = (0, "")


def _date() -> str:
    """The Date header's value, now (written once a second: messages go out many a second)."""
    global _dated
    second = int(time.time())
    if _dated[0] != second:
        _dated = (second, formatdate(second))
    return _dated[1]


@lru_cache(maxsize=16)
def _from(header: str) -> tuple[str, str]:
    """The From header (display name encoded if need be) and the bare address."""
    name, address = parseaddr(header)
    if not address or not address.isascii():
        raise PermanentSendError(f"sender {header!r} is not an ASCII email address")
    return formataddr((_clean(name), address), charset="utf-8"), address


def _clean(value: str) -> str:
    """No line breaks in a header value (they would start a new header)."""
    return value.replace("\r", " ").replace("\n", " ")


def _header(name: str, value: str) -> str:
    value = _clean(value)
    if value.isascii():
        line = f"{name}: {value}"
        if len(line) > _MAX_LINE:
            raise ValueError(f"header {name} is longer than {_MAX_LINE} characters")
        return line
    # RFC 2047 encoded words of at most 75 characters, whole UTF-8 characters each.
    words, chunk = [], ""
    for ch in value:
        if len((chunk + ch).encode()) > 45:  # 45 bytes -> 60 base64 characters -> a 72-char word
            words.append(chunk)
            chunk = ""
        chunk += ch
    words.append(chunk)
    encoded = [f"=?utf-8?b?{base64.b64encode(w.encode()).decode()}?=" for w in words]
    return f"{name}: " + "\r\n ".join(encoded)


def _part_headers(content_type: str) -> str:
    return f'Content-Type: {content_type}; charset="utf-8"\r\nContent-Transfer-Encoding: base64'


def _base64(text: str) -> str:
    """Base64 in 76-character lines, CRLF after each (RFC 2045 §6.8): what
    ``base64.encodebytes`` writes (57 bytes a line), encoded in one call, not one a line."""
    encoded = binascii.b2a_base64(text.encode(), newline=False).decode("ascii")
    return "".join([encoded[i : i + 76] + "\r\n" for i in range(0, len(encoded), 76)])


def _data_lines(data: bytes) -> bytes:
    """The message as DATA carries it: lines starting with a dot doubled, then CRLF.CRLF."""
    if data.startswith(b".") or b"\n." in data:  # rare: base64 bodies never start with a dot
        data = re.sub(rb"(?m)^\.", b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


#: Enhanced status codes (RFC 3463) of a recipient that does not exist or takes no mail:
#: bad mailbox, bad domain, bad address syntax, mailbox moved, domain accepts no mail
#: (null MX, RFC 7505), mailbox disabled. Not 5.1.0/5.1.7/5.1.8: Postfix reports a refused
#: *sender* at RCPT time with those.
HARD_BOUNCES = frozenset({"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.2.1"})
_ENHANCED = re.compile(r"\s*(5\.\d{1,3}\.\d{1,3})\b")
#: Servers echo addresses in their replies; the record keeps the reply without them.
_ADDRESS = re.compile(r"[^\s<>\"]+@[^\s<>\"]+")


def _classify(
    code: int,
    reply: bytes | str,
    step: str,
    *,
    this_message_only: bool = False,
    recipient: bool = False,
) -> Exception:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
    text = _ADDRESS.sub("…", text.replace("\n", " "))
    if 500 <= code < 600:
        enhanced = _ENHANCED.match(text)
        if recipient and enhanced is not None and enhanced.group(1) in HARD_BOUNCES:
            return PermanentSendError(
                f"{step} refused: {code} {text}", reason="hard_bounce", suppress=True
            )
        return PermanentSendError(f"{step} refused: {code} {text}")
    return TransientSendError(
        f"{step} deferred: {code} {text}", this_message_only=this_message_only
    )


def _check_recipient(code: int, reply: bytes | str) -> None:
    # A deferred recipient (450 mailbox busy, greylisting…) concerns this message alone;
    # 421 means the server is closing the connection. A 5xx may be a hard bounce.
    if not 200 <= code < 400:
        raise _classify(code, reply, "RCPT TO", this_message_only=code != 421, recipient=True)


def _check(code: int, reply: bytes | str, step: str, *, this_message_only: bool = False) -> None:
    if not 200 <= code < 400:
        raise _classify(code, reply, step, this_message_only=this_message_only)
