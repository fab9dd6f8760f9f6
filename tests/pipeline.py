"""Waiting for what the API accepted to be applied, as the worker's applier would."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from senders.applier import Applier, drain
from settings import Settings
from store.db import get_engine


def apply_accepted(settings: Settings) -> int:
    """Apply every event the API has accepted so far (the worker's job); how many there were.

    The API answers 202 once an event is stored; tests without a worker process call this
    before they look at carts and customers.
    """
    return drain(settings, get_engine(settings.sqlalchemy_url))


@contextmanager
def applier_running(settings: Settings) -> Iterator[Applier]:
    """The worker's applier thread, for tests that watch events arrive without a worker."""
    applier = Applier(settings, get_engine(settings.sqlalchemy_url))
    applier.start()
    try:
        yield applier
    finally:
        applier.stopping.set()
        applier.join(timeout=30)
