"""Dramatiq actors: thin shells that run ``senders.journey`` and queue its follow-ups.

Actors take ids, never objects, and are idempotent: running one twice changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import lru_cache

import dramatiq

from optimizer import FixedSchedulePolicy, Policy
from senders import journey
from senders.broker import placeholder
from senders.errors import PermanentSendError
from settings import get_settings
from store.db import get_engine

logger = logging.getLogger(__name__)

QUEUE = "nudge"
# Actors bind to the placeholder until setup_broker() re-binds them to the real broker.
assert dramatiq.get_broker() is placeholder


@lru_cache(maxsize=1)
def _default_policy() -> Policy:
    return FixedSchedulePolicy()


def policy_for(store_id: str) -> Policy:
    """The policy deciding this store's touches: the common 1 h / 24 h / 72 h email schedule
    until an experiment says otherwise."""
    del store_id
    return _default_policy()


def runtime() -> journey.Runtime:
    settings = get_settings()
    return journey.Runtime(
        settings=settings, engine=get_engine(settings.sqlalchemy_url), policy_for=policy_for
    )


def enqueue(follow_ups: Iterable[journey.FollowUp]) -> None:
    actors = {"check_cart": check_cart, "send_touch": send_touch}
    for f in follow_ups:
        actors[f.actor].send_with_options(args=(f.arg,), delay=f.delay_ms or None)


@dramatiq.actor(queue_name=QUEUE, max_retries=20, time_limit=60_000)
def check_cart(cart_id: int) -> None:
    """Is this cart abandoned yet? Scheduled when a cart changes; re-scheduled if it changed."""
    enqueue(journey.check_cart(runtime(), cart_id))


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
