"""The one small interface every channel adapter implements.

A send has two steps, so the journey can record the hand-off between them:

1. ``prepare(message)`` — everything before the point of no return: connect, authenticate,
   validate the recipient. Nothing can reach the customer yet, so a crash or an error here is
   safe to retry.
2. ``deliver()`` — hand the message to the provider. From here the provider may hold it.

Errors (``senders.errors``): ``PermanentSendError`` (never retried; ``suppress`` says whether
the recipient must be suppressed, e.g. an opted-out number), ``TransientSendError`` (retried
later with the same idempotency key; raised from ``deliver`` only when the provider certainly
holds no copy, e.g. an HTTP 429 or a 4xx SMTP reply), and ``ConnectionError`` from
``deliver`` when the outcome is unknown (the journey then never re-sends: at most once).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Outgoing:
    """One rendered message, ready for a channel."""

    message_id: str  # Nudge's message id: the idempotency key at the provider, where it has one
    channel: str
    recipient: str  # email address, E.164 phone number, or a push subscription's JSON
    text: str  # the plain-text body (email text part, SMS body, push body, AlimTalk message)
    subject: str | None = None  # email subject / push title
    html: str | None = None  # email only
    sender: str | None = None  # email From / SMS sender number
    headers: Mapping[str, str] = field(default_factory=dict)  # extra email headers
    url: str | None = None  # the tracked link (push click target, AlimTalk button)
    template: str | None = None  # AlimTalk: the provider's pre-registered template code
    variables: Mapping[str, str] = field(default_factory=dict)  # AlimTalk #{var} values
    status_callback: str | None = None  # where the provider reports delivery (SMS)


@dataclass(frozen=True)
class SendResult:
    provider_id: str  # the provider's id for the message (Message-ID, Twilio SID, …)
    cost: float  # what this message cost, in USD
    status: str = "sent"  # the provider's first status (sent, queued, accepted, …)
    detail: str | None = None  # e.g. "fallback:lms" when AlimTalk fell back to SMS
    # The provider tells how the message ended later: ask it this many seconds from now
    # (the adapter's ``check``). None: the answer was final.
    check_after: float | None = None


@dataclass(frozen=True)
class Delivery:
    """How a message ended, as its provider reports it after the send."""

    final: bool  # False: not known yet, ask again later
    status: str = "pending"  # "delivered" or "failed" once final
    cost: float | None = None  # what the message cost after all (None: as recorded)
    detail: str | None = None  # e.g. "fallback:lms"
    error: str | None = None


class Channel(Protocol):
    """A channel adapter; use it as a context manager. One instance serves any number of sends
    in turn (prepare, deliver, prepare, …) over one connection or HTTP session; a message
    prepared but not delivered is dropped by the next ``prepare``."""

    name: str

    def prepare(self, message: Outgoing) -> None: ...

    def deliver(self) -> SendResult: ...

    def close(self) -> None: ...

    def __enter__(self) -> Channel: ...

    def __exit__(self, *exc: object) -> None: ...
