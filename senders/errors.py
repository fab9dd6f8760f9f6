"""The errors of sending: one hierarchy, so actors know what to retry."""


class SendError(Exception):
    """A message could not be sent."""


class TransientSendError(SendError):
    """Worth retrying later with the same idempotency key: 4xx replies, timeouts, refusals."""


class PermanentSendError(SendError):
    """Never retried: the provider refused this recipient or message for good."""
