"""The errors of sending: one hierarchy, so actors know what to retry."""


class SendError(Exception):
    """A message could not be sent."""


class TransientSendError(SendError):
    """Worth retrying later with the same idempotency key: 4xx replies, timeouts, refusals.

    ``retry_after`` (seconds) is the provider's own hint, e.g. from a 429's Retry-After.
    ``this_message_only`` says the refusal concerns this message alone (a mailbox that
    defers), not the provider (down, overloaded, rate limiting): a batch goes on with the rest
    of its messages only then.
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, this_message_only: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.this_message_only = this_message_only


class PermanentSendError(SendError):
    """Never retried: the provider refused this recipient or message for good.

    ``suppress`` says the recipient must not be contacted on this channel again (an opted-out
    or invalid number, a gone push subscription); ``reason`` is a short code for records.
    """

    def __init__(self, message: str, *, reason: str = "refused", suppress: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.suppress = suppress
