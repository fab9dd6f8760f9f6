"""Email over SMTP, in two steps so the caller can record the hand-off in between.

``open`` connects and names the recipient (nothing can be delivered yet, so a crash here is
safe to retry); ``deliver`` sends DATA, the step after which the message may exist.
"""

from __future__ import annotations

import logging
import smtplib
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, parseaddr

from senders.channels.base import Outgoing, SendResult
from senders.errors import PermanentSendError, TransientSendError
from settings import Settings

logger = logging.getLogger(__name__)

#: What one email costs (USD); a relay's price would go here.
COST_PER_EMAIL = 0.0


class SmtpEmail:
    """Email over SMTP (any relay). ``prepare`` names sender and recipient; ``deliver`` is DATA."""

    name = "email"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None
        self._email: EmailMessage | None = None

    def __enter__(self) -> SmtpEmail:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def prepare(self, message: Outgoing) -> None:
        """Connect, authenticate and name sender and recipient. Nothing is delivered yet."""
        email = build_email(message, self.settings.email_from)
        s = self.settings
        try:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_seconds)
            self._smtp = smtp
            smtp.ehlo()
            if s.smtp_starttls:
                smtp.starttls()
                smtp.ehlo()
            if s.smtp_username and s.smtp_password:
                smtp.login(s.smtp_username, s.smtp_password)
            code, reply = smtp.mail(_address(email["From"]))
            _check(code, reply, "MAIL FROM")
            code, reply = smtp.rcpt(_address(email["To"]))
            _check(code, reply, "RCPT TO")
        except (PermanentSendError, TransientSendError):
            self.close()
            raise
        except (OSError, smtplib.SMTPException) as exc:
            self.close()
            raise TransientSendError(f"SMTP {s.smtp_host}:{s.smtp_port}: {exc}") from exc
        self._email = email

    def deliver(self) -> SendResult:
        """Send DATA. The provider id is the Message-ID.

        Raises TransientSendError only when the server said no (4xx): then it holds no copy.
        A dropped connection here is ambiguous and raised as ConnectionError.
        """
        assert self._smtp is not None and self._email is not None, "open() first"
        try:
            code, reply = self._smtp.data(self._email.as_bytes(policy=SMTP_POLICY))
        except smtplib.SMTPDataError as exc:
            raise _classify(exc.smtp_code, exc.smtp_error, "DATA") from exc
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            raise ConnectionError(f"SMTP connection lost during DATA: {exc}") from exc
        _check(code, reply, "DATA")
        return SendResult(provider_id=str(self._email["Message-ID"]), cost=COST_PER_EMAIL)

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (OSError, smtplib.SMTPException):
                self._smtp.close()
            self._smtp = None


def build_email(message: Outgoing, default_sender: str) -> EmailMessage:
    """The MIME message: text and HTML alternatives, a Message-ID derived from Nudge's message
    id (the idempotency key), so a relay or mailbox that sees it twice can tell."""
    sender = message.sender or default_sender
    email = EmailMessage()
    email["Subject"] = message.subject or ""
    email["From"] = sender
    email["To"] = message.recipient
    email["Date"] = formatdate(localtime=False)
    domain = parseaddr(sender)[1].rpartition("@")[2] or "nudge.localhost"
    email["Message-ID"] = f"<{message.message_id}@{domain}>"
    email["X-Nudge-Message"] = message.message_id
    for name, value in message.headers.items():
        email[name] = value
    email.set_content(message.text)
    if message.html is not None:
        email.add_alternative(message.html, subtype="html")
    return email


def _address(header: str) -> str:
    return parseaddr(header)[1]


def _classify(code: int, reply: bytes | str, step: str) -> Exception:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
    if 500 <= code < 600:
        return PermanentSendError(f"{step} refused: {code} {text}")
    return TransientSendError(f"{step} deferred: {code} {text}")


def _check(code: int, reply: bytes | str, step: str) -> None:
    if not 200 <= code < 400:
        raise _classify(code, reply, step)
