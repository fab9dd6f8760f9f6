"""Dramatiq actors: thin shells that run ``senders.journey`` and queue its follow-ups.

Actors take ids, never objects, and are idempotent: running one twice changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import lru_cache

import dramatiq

from experiments.runtime import StorePolicies
from optimizer import Policy
from senders import journey
from senders.broker import placeholder
from senders.errors import PermanentSendError
from settings import get_settings
from store.db import get_engine

logger = logging.getLogger(__name__)

QUEUE = "nudge"
# Actors bind to the placeholder until setup_broker() re-binds them to the real broker.
assert dramatiq.get_broker() is placeholder


@lru_cache(maxsize=4)
def _policies(url: str, refresh_seconds: float) -> StorePolicies:
    return StorePolicies(get_engine(url), refresh_seconds=refresh_seconds)


def policy_for(store_id: str) -> Policy:
    """The policy deciding this store's touches: its running experiments, then its promoted
    default arm, then the common 1 h / 24 h / 72 h email schedule."""
    settings = get_settings()
    return _policies(settings.sqlalchemy_url, settings.policy_refresh_seconds).policy_for(store_id)


def runtime() -> journey.Runtime:
    settings = get_settings()
    return journey.Runtime(
        settings=settings, engine=get_engine(settings.sqlalchemy_url), policy_for=policy_for
    )


def enqueue(follow_ups: Iterable[journey.FollowUp]) -> None:
    """Queue follow-ups; checks due at the same time travel as one message."""
    checks: dict[int, list[int]] = {}
    for f in follow_ups:
        if f.actor == "check_cart":
            checks.setdefault(f.delay_ms, []).append(int(f.arg))
        else:
            send_touch.send_with_options(args=(f.arg,), delay=f.delay_ms or None)
    for delay_ms, cart_ids in checks.items():
        schedule_checks(cart_ids, delay_ms)


def schedule_checks(cart_ids: list[int], delay_ms: int) -> None:
    for start in range(0, len(cart_ids), CHECKS_PER_MESSAGE):
        check_carts.send_with_options(
            args=(cart_ids[start : start + CHECKS_PER_MESSAGE],), delay=delay_ms or None
        )


#: How many carts one abandonment-check message carries at most.
CHECKS_PER_MESSAGE = 500


@dramatiq.actor(queue_name=QUEUE, max_retries=20, time_limit=300_000)
def check_carts(cart_ids: list[int]) -> None:
    """Are these carts abandoned yet? Scheduled when carts change (one message per batch of
    changes); a cart that changed since comes back on its own, when its idle time is up."""
    rt = runtime()
    follow_ups: list[journey.FollowUp] = []
    for cart_id in cart_ids:
        follow_ups += journey.check_cart(rt, cart_id)
    enqueue(follow_ups)


@dramatiq.actor(
    queue_name=QUEUE,
    max_retries=12,
    min_backoff=2_000,
    max_backoff=600_000,
    time_limit=120_000,
    throws=(PermanentSendError,),
)
def send_touch(decision_id: str) -> None:
    """Send one touch of a journey (at most once), then schedule the next."""
    enqueue(journey.send_touch(runtime(), decision_id))


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def noop(counter_key: str) -> None:
    """Does nothing but count itself: the broker's ceiling for ``make bench``, and a liveness
    probe (send one, watch the counter)."""
    broker = dramatiq.get_broker()
    client = getattr(broker, "client", None)
    if client is not None:
        client.incr(counter_key)
