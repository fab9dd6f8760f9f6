"""Workers: the broker, the actors, the channels and the journey of an abandoned cart."""

from senders import actors  # noqa: F401  (declares the actors on import)
