"""Bounces reported later, by email: delivery status notifications (RFC 3464).

A relay often accepts a message first and finds out only later that the mailbox does not
exist; it then mails a delivery status notification (DSN) to the envelope sender, the
``Return-Path`` (``NUDGE_EMAIL_RETURN_PATH``, else the From address). Point that mailbox at
``nudge bounces read`` (a Postfix or Exim alias piping each message to it, or a cron job
over a Maildir) and each report is matched to the message it is about and recorded:

- ``Action: failed`` with a hard-bounce status (the same codes as a refusal at RCPT, see
  :data:`senders.channels.email.HARD_BOUNCES`): the message's ``delivery_status`` becomes
  ``bounced`` and the address is suppressed for the store, like an unsubscribe;
- any other ``failed`` (mailbox full, policy, …): ``failed``, nothing suppressed;
- ``delayed``, ``delivered`` or ``relayed``: recorded as such unless a final status is
  already known.

The report names the message by the headers of the original it returns (``X-Nudge-Message``,
else the ``Message-ID`` Nudge derived from it), and the recipient it names must be the one
the message was sent to: message ids are random, so a forged report cannot suppress an
address it did not receive a message for. Anything that is not such a report is counted
and ignored (an out-of-office reply to the Return-Path, say).
"""

from __future__ import annotations

import email.message
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.parser import BytesParser, HeaderParser
from email.utils import parseaddr

import sqlalchemy as sa

from senders.channels.email import HARD_BOUNCES
from senders.sql import among
from store.events import message_t
from store.models import MessageStatus
from store.suppressions import normalise, suppress

logger = logging.getLogger(__name__)

_NUDGE_ID = re.compile(r"[0-9a-f]{32}")
_STATUS = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")
#: Servers echo addresses in diagnostics; what is stored and logged goes without them.
_ADDRESS = re.compile(r"[^\s<>\"();]+@[^\s<>\"();]+")
#: A final status is not replaced by a report of something less final.
_FINAL = frozenset({"bounced", "failed"})


@dataclass(frozen=True)
class Bounce:
    """One recipient's line of a delivery status notification."""

    message_id: str | None  # Nudge's message id, from the returned headers
    recipient: str  # the address the report is about (Final- or Original-Recipient)
    action: str  # failed, delayed, delivered, relayed, expanded (lower case)
    status: str  # the enhanced status code, e.g. "5.1.1" ("" if the report gives none)
    diagnostic: str = ""  # the remote server's words, addresses removed

    @property
    def hard(self) -> bool:
        return self.action == "failed" and self.status in HARD_BOUNCES

    @property
    def delivery_status(self) -> str | None:
        if self.action == "failed":
            return "bounced" if self.hard else "failed"
        if self.action in ("delayed", "delivered", "relayed"):
            return self.action
        return None


def parse_report(raw: bytes) -> list[Bounce]:
    """The recipients' lines of a DSN (``multipart/report; report-type=delivery-status``);
    ``[]`` for anything else."""
    msg = BytesParser().parsebytes(raw)
    if msg.get_content_type() != "multipart/report":
        return []
    status_part: email.message.Message | None = None
    original: email.message.Message | None = None
    for part in msg.walk():
        kind = part.get_content_type()
        if kind in ("message/delivery-status", "message/global-delivery-status"):
            status_part = part
        elif kind in ("message/rfc822", "message/global") and original is None:
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], email.message.Message):
                original = inner[0]
        elif kind in ("text/rfc822-headers", "text/global-headers") and original is None:
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                original = HeaderParser().parsestr(text.decode("utf-8", "replace"))
    if status_part is None:
        return []
    blocks = status_part.get_payload()
    if not isinstance(blocks, list) or len(blocks) < 2:
        return []
    message_id = _nudge_id(original)
    out = []
    # The first block is about the message, the rest about one recipient each.
    for block in blocks[1:]:
        if not isinstance(block, email.message.Message):
            continue
        recipient = _address(block.get("Final-Recipient") or block.get("Original-Recipient"))
        action = str(block.get("Action") or "").strip().lower()
        if not recipient or not action:
            continue
        found = _STATUS.search(str(block.get("Status") or ""))
        diagnostic = " ".join(str(block.get("Diagnostic-Code") or "").split())
        out.append(
            Bounce(
                message_id=message_id,
                recipient=recipient,
                action=action,
                status=".".join(found.groups()) if found else "",
                diagnostic=_ADDRESS.sub("…", diagnostic)[:300],
            )
        )
    return out


def _nudge_id(original: email.message.Message | None) -> str | None:
    if original is None:
        return None
    named = str(original.get("X-Nudge-Message") or "").strip().lower()
    if _NUDGE_ID.fullmatch(named):
        return named
    local = str(original.get("Message-ID") or "").strip().strip("<>").partition("@")[0]
    return local.lower() if _NUDGE_ID.fullmatch(local.lower()) else None


def _address(field_value: object) -> str:
    """``rfc822; someone@example.com`` → ``someone@example.com``."""
    text = str(field_value or "")
    kind, _, address = text.partition(";")
    if not address:
        address = kind
    return parseaddr(address.strip())[1].strip()


@dataclass
class BounceTally:
    """What :func:`record_bounces` made of the reports it was given."""

    reports: int = 0  # messages read
    not_reports: int = 0  # of which not a delivery status notification
    hard: int = 0  # hard bounces recorded (address suppressed)
    failed: int = 0  # other failures recorded
    other: int = 0  # delayed / delivered / relayed recorded
    unmatched: int = 0  # lines naming no message of ours, or another recipient
    messages: list[str] = field(default_factory=list)  # the messages updated

    def summary(self) -> str:
        return (
            f"{self.reports} message(s) read: {self.hard} hard bounce(s) (address suppressed), "
            f"{self.failed} other failure(s), {self.other} delay/delivery report(s), "
            f"{self.unmatched} line(s) matching no message, "
            f"{self.not_reports} not a delivery report"
        )


def record_bounces(
    conn: sa.Connection, raws: Iterable[bytes], now: datetime, tally: BounceTally | None = None
) -> BounceTally:
    """Parse each raw message and record what its report says, in the caller's transaction."""
    tally = tally if tally is not None else BounceTally()
    bounces: list[Bounce] = []
    for raw in raws:
        tally.reports += 1
        found = parse_report(raw)
        if not found:
            tally.not_reports += 1
        bounces.extend(found)
    _record(conn, bounces, now, tally)
    return tally


def _record(
    conn: sa.Connection, bounces: Sequence[Bounce], now: datetime, tally: BounceTally
) -> None:
    ids = sorted({b.message_id for b in bounces if b.message_id})
    rows = (
        {
            r.id: r
            for r in conn.execute(
                sa.select(
                    message_t.c.id,
                    message_t.c.store_id,
                    message_t.c.channel,
                    message_t.c.recipient,
                    message_t.c.status,
                    message_t.c.delivery_status,
                ).where(among(conn, message_t.c.id, ids))
            )
        }
        if ids
        else {}
    )
    for b in bounces:
        row = rows.get(b.message_id or "")
        status = b.delivery_status
        if (
            row is None
            or status is None
            or row.channel != "email"
            or row.status == MessageStatus.PREPARED  # never handed to a relay
            or normalise("email", row.recipient) != normalise("email", b.recipient)
        ):
            tally.unmatched += 1
            continue
        if row.delivery_status in _FINAL and status not in _FINAL:
            tally.other += 1  # a late "delayed" after the failure: nothing to change
            continue
        values: dict[str, object] = {
            "delivery_status": status,
            "detail": f"bounce report {b.status}".strip() if b.status else "bounce report",
        }
        if status in _FINAL:
            values["error"] = f"{b.action} {b.status} {b.diagnostic}".strip()[:500]
        conn.execute(sa.update(message_t).where(message_t.c.id == row.id).values(values))
        tally.messages.append(row.id)
        if b.hard:
            suppress(
                conn,
                store_id=row.store_id,
                channel="email",
                address=row.recipient,
                reason="hard_bounce",
                at=now,
            )
            tally.hard += 1
        elif status == "failed":
            tally.failed += 1
        else:
            tally.other += 1
        logger.info("Message %s: bounce report says %s %s", row.id, b.action, b.status)
