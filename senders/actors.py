"""Dramatiq actors: thin shells that run ``senders.journey`` and queue its follow-ups.

Actors take ids, never objects, and are idempotent: running one twice changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import TypeVar

import dramatiq

from experiments.runtime import StorePolicies
from optimizer import Policy
from senders import delivery, journey, sending
from senders.broker import placeholder
from settings import get_settings
from store.db import get_engine

logger = logging.getLogger(__name__)

QUEUE = "nudge"
T = TypeVar("T")
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


def enqueue(follow_ups: Iterable[journey.FollowUp], *, spread: int | None = None) -> None:
    """Queue follow-ups. Those due within a second of each other travel as one message
    (up to ``CHECKS_PER_MESSAGE`` carts or ``SENDS_PER_MESSAGE`` touches), which leaves with
    the latest of them: nothing is checked or sent early.

    Touches too many for one message are shared out evenly, in a multiple of ``spread``
    messages (default: ``NUDGE_WORKER_THREADS``) where that keeps them at least half full:
    2,000 due at once go as 24 messages of 83-84, three full rounds of 8 threads, rather than
    20 of 100, whose third round would leave half the threads idle.
    """
    if spread is None:
        spread = get_settings().worker_threads
    checks: list[tuple[int, int]] = []
    sends: list[tuple[int, str]] = []
    deliveries: list[tuple[int, str]] = []
    for f in follow_ups:
        if f.actor == "check_cart":
            checks.append((f.delay_ms, int(f.arg)))
        elif f.actor == "check_delivery":
            deliveries.append((f.delay_ms, str(f.arg)))
        else:
            sends.append((f.delay_ms, str(f.arg)))
    for delay_ms, cart_ids in _together(checks, CHECKS_PER_MESSAGE):
        check_carts.send_with_options(args=(cart_ids,), delay=delay_ms or None)
    for delay_ms, decision_ids in _together(sends, SENDS_PER_MESSAGE, spread):
        send_touches.send_with_options(args=(decision_ids,), delay=delay_ms or None)
    for delay_ms, message_ids in _together(deliveries, SENDS_PER_MESSAGE):
        check_deliveries.send_with_options(args=(message_ids,), delay=delay_ms or None)


def _together(
    items: list[tuple[int, T]], most: int, spread: int = 1
) -> Iterator[tuple[int, list[T]]]:
    """(delay, args) groups of items due within ``WINDOW_MS`` of the group's first: as few
    groups of equal size (± 1) as hold at most ``most`` each, their number rounded up to a
    multiple of ``spread`` if the groups stay at least half full. A group's delay is that of
    its latest item.

    >>> [(d, len(g)) for d, g in _together([(0, i) for i in range(250)], 100)]
    [(0, 84), (0, 83), (0, 83)]
    >>> [len(g) for _, g in _together([(0, i) for i in range(2000)], 100, spread=8)][:3]
    [84, 84, 84]
    >>> len(list(_together([(0, i) for i in range(2000)], 100, spread=8)))
    24
    """
    window: list[tuple[int, T]] = []
    for item in sorted(items):
        if window and item[0] - window[0][0] > WINDOW_MS:
            yield from _share(window, most, spread)
            window = []
        window.append(item)
    if window:
        yield from _share(window, most, spread)


def _share(window: list[tuple[int, T]], most: int, spread: int) -> Iterator[tuple[int, list[T]]]:
    n = len(window)
    groups = -(-n // most)
    if groups > 1 and spread > 1:
        rounded = -(-groups // spread) * spread
        if 2 * n >= rounded * most:  # each still at least half full
            groups = rounded
    start = 0
    for g in range(groups):
        end = start + n // groups + (1 if g < n % groups else 0)
        chunk = window[start:end]
        yield chunk[-1][0], [arg for _, arg in chunk]
        start = end


def schedule_checks(cart_ids: list[int], delay_ms: int) -> None:
    for start in range(0, len(cart_ids), CHECKS_PER_MESSAGE):
        check_carts.send_with_options(
            args=(cart_ids[start : start + CHECKS_PER_MESSAGE],), delay=delay_ms or None
        )


#: How many carts one abandonment-check message carries at most.
CHECKS_PER_MESSAGE = 500
#: How many touches one send message carries at most: enough to spread a claim's queries and
#: a connection's set-up over many sends (a batch's fixed cost is ~10 ms of CPU: at 100 it
#: adds ~0.1 ms a send, at 50 ~0.2), few enough that a batch finishes well inside its leases
#: (``NUDGE_SEND_LEASE_SECONDS``); a provider that is down or hangs stops a batch early.
SENDS_PER_MESSAGE = 100
#: Follow-ups due within this many milliseconds of each other travel together (each at most
#: this much after its time; Dramatiq's own delays are up to a second late anyway).
WINDOW_MS = 1000


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
    time_limit=600_000,
)
def send_touches(decision_ids: list[str]) -> None:
    """Send these touches (each at most once), then schedule the journeys' next ones.

    Touches a provider answered "later" make the message fail, so Dramatiq retries it with
    backoff (or after the provider's Retry-After): the retry finds those touches' records
    waiting and the others done.
    """
    report = sending.send_touches(runtime(), decision_ids)
    enqueue(report.follow_ups)
    if report.transient:
        wait = report.retry_after
        if wait is not None:
            raise dramatiq.Retry(f"a provider asked to wait {wait:g} s", delay=int(wait * 1000))
        raise report.transient[0]


@dramatiq.actor(
    queue_name=QUEUE,
    max_retries=12,
    min_backoff=2_000,
    max_backoff=600_000,
    time_limit=120_000,
)
def send_touch(decision_id: str) -> None:
    """Send one touch: :func:`send_touches` of one (messages queued by earlier versions)."""
    send_touches.fn([decision_id])


@dramatiq.actor(queue_name=QUEUE, max_retries=3, time_limit=300_000)
def check_deliveries(message_ids: list[str]) -> None:
    """Ask the providers how these sent messages ended (AlimTalk: as itself, or as its
    SMS/LMS fallback, or not at all); those still unknown are asked again later."""
    delivery.check_deliveries(runtime(), message_ids)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def noop(counter_key: str) -> None:
    """Does nothing but count itself: the broker's ceiling for ``make bench``, and a liveness
    probe (send one, watch the counter)."""
    broker = dramatiq.get_broker()
    client = getattr(broker, "client", None)
    if client is not None:
        client.incr(counter_key)
