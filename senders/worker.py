"""``nudge worker``: Dramatiq worker threads plus the periodic sweep, in one process."""

from __future__ import annotations

import logging
import os
import signal
import threading
from datetime import UTC, datetime
from types import FrameType

import dramatiq

from experiments import rollups
from experiments.runtime import fold, running_bandits
from nudge.process import settle_garbage_collector
from senders import actors, journey
from senders.applier import Applier, drain
from senders.broker import setup_broker
from settings import Settings
from store.db import get_engine

logger = logging.getLogger(__name__)


class _Periodic(threading.Thread):
    """A job every ``interval`` seconds, run by one worker in the cluster at a time: the one
    that takes the job's Redis lock, which lapses just before the next round."""

    lock = "periodic"
    what = "A periodic job"

    def __init__(self, settings: Settings, broker: dramatiq.Broker, interval: float) -> None:
        super().__init__(name=f"nudge-{self.lock}", daemon=True)
        self.settings = settings
        self.interval = interval
        self.client = getattr(broker, "client", None)
        self.stopping = threading.Event()

    def _leader(self) -> bool:
        if self.client is None:
            return True
        key = f"{self.settings.redis_namespace}:{self.lock}-lock"
        ttl_ms = max(int(self.interval * 900), 100)  # 0.9 of the interval
        return bool(self.client.set(key, os.getpid(), nx=True, px=ttl_ms))

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.run_once()
            except Exception:
                logger.exception("%s failed; trying again next interval", self.what)
            self.stopping.wait(self.interval)

    def run_once(self) -> object:
        raise NotImplementedError


class Sweeper(_Periodic):
    """Runs :func:`senders.journey.sweep` every interval; one worker in the cluster at a time."""

    lock, what = "sweep", "Sweep"

    def __init__(self, settings: Settings, broker: dramatiq.Broker) -> None:
        super().__init__(settings, broker, settings.sweep_interval_seconds)

    def run_once(self) -> journey.SweepReport | None:
        if not self._leader():
            return None
        rt = actors.runtime()
        report = journey.sweep(rt)
        actors.enqueue(report.follow_ups)
        for experiment_id in running_bandits(rt.engine):
            folded = fold(rt.engine, experiment_id)
            if folded:
                logger.info("Experiment %s learned from %d outcomes", experiment_id, folded)
        counts = (report.checks, report.sends, report.reclaimed, report.uncertain, report.closed)
        if any(counts) or report.deliveries:
            logger.info(
                "Sweep: %d overdue carts, %d due touches, %d sends retried, %d uncertain, "
                "%d windows closed, %d deliveries to check",
                *counts,
                report.deliveries,
            )
        return report


class RollupKeeper(_Periodic):
    """Keeps the dashboard's daily rollups (``experiments.rollups``) of every store with
    decisions younger than :func:`experiments.rollups.max_age`, so a dashboard opened on a
    large store reads them at once instead of building them while its user waits. A thread
    of its own, as a refresh of a big store takes seconds that the sweep must not wait for."""

    lock, what = "rollup", "Refreshing rollups"

    def __init__(self, settings: Settings, broker: dramatiq.Broker) -> None:
        self.max_age = rollups.max_age(settings.time_scale)
        super().__init__(settings, broker, self.max_age.total_seconds())
        self.engine = get_engine(settings.sqlalchemy_url)

    def run_once(self) -> list[str]:
        """Refresh the stale stores' rollups; returns their ids."""
        if not self._leader():
            return []
        now = datetime.now(UTC)
        with self.engine.connect() as conn:
            stale = rollups.stale_stores(conn, now=now, older_than=self.max_age)
        for store_id in stale:
            if self.stopping.is_set():
                break
            with self.engine.begin() as conn:  # rollups.refresh logs what it did
                rollups.refresh(
                    conn,
                    store_id=store_id,
                    now=datetime.now(UTC),
                    window_days=self.settings.attribution_window_days,
                )
        return stale


def run_worker(settings: Settings, *, threads: int | None = None) -> None:
    """Serve until SIGINT/SIGTERM."""
    broker = setup_broker(settings)
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(
        broker,
        queues={actors.QUEUE},
        worker_threads=threads or settings.worker_threads,
        worker_timeout=250,
    )
    sweeper = Sweeper(settings, broker)
    keeper = RollupKeeper(settings, broker)
    applier = Applier(settings, get_engine(settings.sqlalchemy_url))
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("Worker stopping (signal %d)", signum)
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    settle_garbage_collector()
    # Events a crash left accepted but unapplied come first: a send must not go out for a cart
    # whose order is still waiting to be applied.
    backlog = drain(settings, applier.engine)
    if backlog:
        logger.info("Applied %d events accepted before this worker started", backlog)
    worker.start()
    applier.start()
    sweeper.start()
    keeper.start()
    logger.info("Worker ready: %d threads on queue %r", worker.worker_threads, actors.QUEUE)
    stop.wait()
    sweeper.stopping.set()
    keeper.stopping.set()
    applier.stopping.set()
    worker.stop(timeout=10_000)
    applier.join(timeout=10)
    broker.close()
