"""A local SMTP server that keeps what it receives: the demo's inbox and the tests' peer."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    peer: Any = None  # the client's (host, port): one per SMTP connection

    @property
    def email(self) -> EmailMessage:
        parsed = message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    def part(self, subtype: str) -> str:
        body = self.email.get_body(preferencelist=(subtype,))
        assert body is not None, f"no text/{subtype} part"
        return str(body.get_content())


class SmtpSink:
    """An aiosmtpd server on loopback. ``on_message`` runs for each message received.

    ``before_rcpt`` and ``before_accept`` (tests) run before the reply to RCPT and to DATA:
    a crash test stalls a sender there. By the DATA reply a real MTA holds the message.
    ``refuse`` maps recipients to the reply their RCPT gets instead of 250, as a mailbox
    server answers for a mailbox it does not have (``550 5.1.1 …``) or that is full.

    It advertises PIPELINING (RFC 2920), as Postfix, Exim and the large providers do: aiosmtpd
    reads commands from a buffered stream and answers them in order, so a client may send
    MAIL, RCPT and DATA in one write; it just does not say so on its own.
    """

    def __init__(
        self,
        port: int | None = None,
        on_message: Callable[[Received], None] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.messages: list[Received] = []
        self.on_message = on_message
        self.before_accept: Callable[[Received], None] | None = None
        self.before_rcpt: Callable[[str], None] | None = None
        self.refuse: dict[str, str] = {}
        self._cond = threading.Condition()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_EHLO(
        self, _server: Any, session: Any, _envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        # Before the last line ("250 HELP"), which must stay last.
        return [*responses[:-1], "250-PIPELINING", *responses[-1:]]

    async def handle_RCPT(
        self, _server: Any, _session: Any, envelope: Any, address: str, _options: Any
    ) -> str:
        if self.before_rcpt is not None:
            self.before_rcpt(address)
        refusal = self.refuse.get(address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, _server: Any, session: Any, envelope: Any) -> str:
        received = Received(
            mail_from=str(envelope.mail_from),
            rcpt_tos=list(envelope.rcpt_tos),
            raw=bytes(envelope.original_content or envelope.content),
            peer=session.peer,
        )
        with self._cond:
            self.messages.append(received)
            self._cond.notify_all()
        if self.before_accept is not None:
            self.before_accept(received)
        if self.on_message is not None:
            self.on_message(received)
        return "250 Message accepted for delivery"

    def start(self) -> SmtpSink:
        self._controller.start()
        self.running = True
        return self

    def stop(self) -> None:
        """Stop listening (idempotent: a test may stop the relay before its fixture does)."""
        if getattr(self, "running", False):
            self._controller.stop()
            self.running = False

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Block until ``count`` messages have arrived; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.messages)} of {count} emails after {timeout}s")
                self._cond.wait(left)
            return list(self.messages)
