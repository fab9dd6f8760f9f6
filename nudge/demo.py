"""``nudge demo``: the whole product on one machine, with a simulated storefront.

Starts the embedded Redis, migrates the SQLite database, starts ``nudge api`` and
``nudge worker`` as their own processes, runs a local SMTP server as the shoppers' inbox, and
plays a storefront: shoppers fill carts, most leave (about 70 %, as Baymard measures), some
come back when they get an email, some buy anyway. Time runs ``--time-scale`` times faster.
"""

from __future__ import annotations

import logging
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa

from nudge.smtp_sink import Received, SmtpSink
from settings import Settings, get_settings

logger = logging.getLogger("nudge.demo")

CATALOG = [
    ("TENT-2P", "Two-person tent", 189.0),
    ("BAG-DOWN", "Down sleeping bag", 249.0),
    ("MAT-AIR", "Insulated air mat", 119.0),
    ("STOVE-TI", "Titanium stove", 59.0),
    ("MUG-TI", "Titanium mug", 24.5),
    ("LAMP-HD", "Head lamp", 39.0),
    ("PACK-45", "45 L backpack", 159.0),
    ("POLES-C", "Carbon trekking poles", 129.0),
    ("JACKET-R", "Rain jacket", 179.0),
    ("SOCKS-M", "Merino socks", 22.0),
]
FIRST_NAMES = ["jane", "min-jun", "alex", "seo-yeon", "sam", "ji-ho", "maria", "tom", "yuna", "li"]


@dataclass
class Tally:
    carts: int = 0
    bought_at_once: int = 0
    emails: int = 0
    clicks: int = 0
    recovered: int = 0
    organic: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)


class Storefront:
    """Simulated shoppers posting real events to the real API."""

    def __init__(self, base: str, key: str, rng: random.Random, time_scale: float) -> None:
        self.http = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        self.rng = rng
        self.time_scale = time_scale
        self.tally = Tally()
        self.carts: dict[str, dict[str, Any]] = {}
        self.timers: list[threading.Timer] = []
        self.closing = False

    def post(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", uuid.uuid4().hex)
        event.setdefault("occurred_at", datetime.now(UTC).isoformat())
        try:
            r = self.http.post("/v1/events", json=event)
        except (httpx.HTTPError, RuntimeError) as exc:  # the API (or this client) is going away
            logger.warning("Storefront could not post an event: %s", exc)
            return
        if r.status_code != 202:
            logger.warning("Storefront event refused: %s %s", r.status_code, r.text[:200])

    def later(self, simulated_seconds: float, fn: Any, *args: Any) -> None:
        if self.closing:
            return
        timer = threading.Timer(simulated_seconds / self.time_scale, fn, args)
        timer.daemon = True
        timer.start()
        self.timers.append(timer)

    def new_shopper(self) -> None:
        rng = self.rng
        n = len(self.carts) + 1
        cart_id = f"cart-{n:05d}-{uuid.uuid4().hex[:6]}"
        picks = rng.sample(CATALOG, k=rng.choice([1, 1, 2, 2, 3]))
        quantities = [rng.choice([1, 1, 1, 2]) for _ in picks]
        items = [
            {"sku": sku, "name": name, "price": price, "quantity": qty}
            for (sku, name, price), qty in zip(picks, quantities, strict=True)
        ]
        value = round(
            sum(price * qty for (_, _, price), qty in zip(picks, quantities, strict=True)), 2
        )
        name = rng.choice(FIRST_NAMES)
        customer = {
            "id": f"cust-{n:05d}",
            "email": f"{name}.{n}@shoppers.example",
            "locale": rng.choice(["en-US", "ko-KR"]),
            "timezone": rng.choice(["America/New_York", "Asia/Seoul", "Europe/Berlin"]),
            "consents": {"email": rng.random() < 0.85},
        }
        cart = {
            "id": cart_id,
            "currency": "USD",
            "value": value,
            "items": items,
            "restore_url": f"https://demo-shop.example/cart/{cart_id}",
        }
        device = rng.choice(["mobile", "mobile", "desktop", "tablet"])
        self.carts[cart_id] = {"value": value, "ordered": False}
        self.post(
            {
                "type": "cart.updated",
                "cart": cart,
                "customer": customer,
                "context": {"device": device},
            }
        )
        self.tally.add(carts=1)
        if rng.random() < 0.5:
            self.post({"type": "checkout.started", "cart": cart, "customer": customer})
        if rng.random() < 0.30:  # ~70 % of carts are abandoned (Baymard)
            self.later(rng.uniform(60, 900), self.order, cart_id, "bought_at_once")
        elif rng.random() < 0.04:  # some come back on their own, days later
            self.later(rng.uniform(3600, 5 * 86400), self.order, cart_id, "organic")

    def order(self, cart_id: str, kind: str, coupon: str | None = None) -> None:
        if self.closing:
            return
        cart = self.carts[cart_id]
        if cart["ordered"]:
            return
        cart["ordered"] = True
        self.post(
            {
                "type": "order.completed",
                "cart": {"id": cart_id},
                "order": {
                    "id": f"order-{cart_id}",
                    "value": cart["value"],
                    **({"coupon_code": coupon} if coupon else {}),
                },
            }
        )
        self.tally.add(**{kind: 1})
        if kind == "recovered":
            logger.info("Order  ← %s (%.2f USD) after a reminder", cart_id, cart["value"])

    def on_email(self, mail: Received) -> None:
        """A shopper reads the reminder: some click, some of those buy."""
        if self.closing:
            return
        self.tally.add(emails=1)
        text = mail.part("plain")
        link = re.search(r"(https?://\S+/r/\S+)", text)
        cart_id = None
        restore = None
        if link is not None and self.rng.random() < 0.25:
            try:
                r = self.http.get(link.group(1), follow_redirects=False)
            except (httpx.HTTPError, RuntimeError):  # shutting down
                return
            if r.status_code == 302:
                self.tally.add(clicks=1)
                restore = urlsplit(r.headers["location"]).path
                cart_id = restore.rsplit("/", 1)[-1]
        # A coupon makes a clicked reminder likelier to end in an order (and it is used).
        coupon = re.search(r"coupon: (N-[A-Z0-9]+)", text)
        buy = 0.65 if coupon else 0.45
        if cart_id in self.carts and self.rng.random() < buy:
            code = coupon.group(1) if coupon else None
            self.later(self.rng.uniform(120, 1800), self.order, cart_id, "recovered", code)

    def close(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.http.close()


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _counts(settings: Settings) -> dict[str, int]:
    from store.db import get_engine

    with get_engine(settings.sqlalchemy_url).connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM cart WHERE journey > 0),"
                " (SELECT count(*) FROM message WHERE status = 'sent'),"
                " (SELECT count(*) FROM outcome WHERE converted),"
                " (SELECT count(*) FROM outcome)"
            )
        ).one()
    return {"abandoned": row[0], "sent": row[1], "converted": row[2], "outcomes": row[3]}


def run_demo(
    *,
    port: int,
    smtp_port: int,
    time_scale: float,
    rate: float,
    duration: float | None,
    ui_port: int = 8501,
) -> int:
    for p, what in ((port, "API"), (smtp_port, "SMTP sink")):
        if not _port_free(p):
            print(f"error: port {p} for the {what} is taken; pass another with --help's options")
            return 2
    os.environ.update(
        {
            "NUDGE_TIME_SCALE": str(time_scale),
            "NUDGE_SMTP_HOST": "127.0.0.1",
            "NUDGE_SMTP_PORT": str(smtp_port),
            "NUDGE_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "NUDGE_SWEEP_INTERVAL_SECONDS": "1",
        }
    )
    get_settings.cache_clear()
    settings = get_settings()

    from nudge.migrate import upgrade
    from senders.broker import redis_client
    from store.db import get_engine
    from store.stores import StoreExists, create_store, rotate_key

    if not settings.redis_url:
        # Started here, so it outlives the API and worker processes that share it.
        redis_client(settings)
    upgrade(settings.sqlalchemy_url)
    with get_engine(settings.sqlalchemy_url).begin() as conn:
        try:
            _, key = create_store(conn, name="Demo Store")
        except StoreExists:
            _, key = rotate_key(conn, name="Demo Store")
    _demo_experiment(settings)

    nudge = str(Path(sys.executable).parent / "nudge")
    if not _port_free(ui_port):  # the dashboard is a convenience: any free port will do
        from nudge.smtp_sink import free_port

        ui_port = free_port()
    children = [
        subprocess.Popen([nudge, "api", "--port", str(port)]),
        subprocess.Popen([nudge, "worker"]),
        subprocess.Popen([nudge, "ui", "--port", str(ui_port)], stdout=subprocess.DEVNULL),
    ]
    shop = Storefront(f"http://127.0.0.1:{port}", key, random.Random(7), time_scale)
    sink = SmtpSink(smtp_port, on_message=shop.on_email).start()
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not stop.is_set():
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        print(
            f"\n  Nudge demo — API http://127.0.0.1:{port} (docs at /docs), SMTP sink on "
            f":{smtp_port}, data in {settings.data_dir}/\n"
            f"  Dashboard: http://127.0.0.1:{ui_port}\n"
            f"  Time runs {time_scale:g}× faster: a 30 min abandonment takes "
            f"{1800 / time_scale:.1f} s, the 24 h reminder {86400 / time_scale:.0f} s.\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )
        started = time.monotonic()
        next_report = started + 10
        while not stop.is_set():
            if duration is not None and time.monotonic() - started >= duration:
                break
            shop.new_shopper()
            stop.wait(random.expovariate(rate))
            if time.monotonic() >= next_report:
                next_report += 10
                _report(settings, shop.tally)
        _report(settings, shop.tally)
    finally:
        # Shoppers stop first (no new events), then the processes that send, then the inbox:
        # an email arriving while the storefront is gone is simply not read.
        shop.closing = True
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        sink.stop()
        shop.close()
    return 0


DEMO_ARMS = ["email/30m/0%", "email/60m/0%", "email/60m/10%", "email/240m/0%", "email/240m/15%"]


def _demo_experiment(settings: Settings) -> None:
    """A bandit over email timings and discounts, with a 10% holdout, running on the demo
    store (`nudge experiment report demo-bandit --store "Demo Store"` shows what it learns)."""
    from experiments.lifecycle import ExperimentError, Spec, create, transition
    from store.db import get_engine

    engine = get_engine(settings.sqlalchemy_url)
    with engine.begin() as conn:
        store_id = conn.execute(
            sa.text("SELECT id FROM store WHERE name = 'Demo Store'")
        ).scalar_one()
        now = datetime.now(UTC)
        try:
            create(
                conn,
                store_id=store_id,
                spec=Spec(
                    "demo-bandit",
                    DEMO_ARMS,
                    holdout_share=0.10,
                    max_discount_pct=15,
                    message_cost=settings.message_costs(),
                ),
                now=now,
            )
        except ExperimentError:
            pass  # created by an earlier demo run
        try:
            transition(conn, store_id=store_id, name="demo-bandit", action="start", now=now)
        except ExperimentError:
            pass  # running already


def _report(settings: Settings, tally: Tally) -> None:
    c = _counts(settings)
    print(
        f"  ── {tally.carts} carts · {c['abandoned']} abandoned · {c['sent']} emails sent · "
        f"{tally.clicks} clicks · {tally.recovered} orders after a reminder · "
        f"{tally.bought_at_once} bought at once · {c['converted']}/{c['outcomes']} "
        "decisions converted",
        flush=True,
    )
