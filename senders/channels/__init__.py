"""Channel adapters, one module per channel, all behind ``senders.channels.base.Channel``."""

from __future__ import annotations

from collections.abc import Callable

from senders.channels.base import Channel, Outgoing, SendResult
from senders.channels.email import SmtpEmail
from senders.channels.kakao import AlimTalk
from senders.channels.push import WebPush
from senders.channels.sms import TwilioSms
from settings import Settings

#: channel name → adapter factory. Each adapter module adds itself here.
ADAPTERS: dict[str, Callable[[Settings], Channel]] = {
    "email": SmtpEmail,
    "sms": TwilioSms,
    "push": WebPush,
    "kakao": AlimTalk,
}


def open_channel(name: str, settings: Settings) -> Channel:
    """A fresh adapter for one send on channel ``name``."""
    try:
        factory = ADAPTERS[name]
    except KeyError:
        raise ValueError(f"no adapter for channel {name!r}; known: {sorted(ADAPTERS)}") from None
    return factory(settings)


__all__ = ["ADAPTERS", "Channel", "Outgoing", "SendResult", "open_channel"]
