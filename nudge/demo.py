"""``nudge demo``: the whole product on one machine, with a simulated storefront.

Starts the embedded Redis, migrates the SQLite database, starts ``nudge api`` and
``nudge worker`` as their own processes, and runs a local peer for every channel: an SMTP
server (the shoppers' inbox), a server speaking Twilio's Messages API (with signed status
callbacks), a Web Push service (VAPID checked, payloads decrypted) and an AlimTalk provider
that falls back to LMS for numbers without KakaoTalk and reports it later, as NHN Cloud does.
It plays a storefront: shoppers fill carts, most leave (about 70 %, as Baymard measures), some
give a phone number or allow notifications, some come back when a reminder reaches them, some
buy anyway. Time runs ``--time-scale`` times faster.
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

from nudge.provider_sinks import AlimTalkSink, PushSink, TwilioSink, vapid_keys
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


#: The demo's provider accounts (local peers only; nothing here reaches a real provider).
TWILIO_SID, TWILIO_TOKEN, TWILIO_FROM = "AC" + "d" * 32, "demo-twilio-token", "+15005550006"
ALIMTALK_APP, ALIMTALK_SECRET = "demo-app-key", "demo-alimtalk-secret"


@dataclass
class Tally:
    carts: int = 0
    bought_at_once: int = 0
    emails: int = 0
    texts: int = 0  # SMS, AlimTalk and its LMS fallback, read on the phone
    pushes: int = 0
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

    def __init__(
        self,
        base: str,
        key: str,
        rng: random.Random,
        time_scale: float,
        push: PushSink | None = None,
        no_kakaotalk: set[str] | None = None,
    ) -> None:
        self.http = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        self.push = push
        self.no_kakaotalk = no_kakaotalk  # the AlimTalk provider's: these get the LMS
        self.rng = rng
        # Phones and notifications are drawn from their own stream, so the shoppers' carts
        # and choices are the same as without them.
        self.contact_rng = random.Random(rng.getstate()[1][0])
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
        locale = rng.choice(["en-US", "ko-KR"])
        customer: dict[str, Any] = {
            "id": f"cust-{n:05d}",
            "email": f"{name}.{n}@shoppers.example",
            "locale": locale,
            "timezone": rng.choice(["America/New_York", "Asia/Seoul", "Europe/Berlin"]),
            "consents": {"email": rng.random() < 0.85},
        }
        contact = self.contact_rng
        if contact.random() < 0.5:  # a phone number, and (mostly) consent to texts
            korean = locale == "ko-KR"
            customer["phone"] = (
                f"+8210{contact.randrange(10**8):08d}"
                if korean
                else f"+1555{contact.randrange(10**7):07d}"
            )
            customer["consents"]["sms"] = contact.random() < 0.7
            if korean and self.no_kakaotalk is not None and contact.random() < 0.3:
                self.no_kakaotalk.add("0" + customer["phone"].removeprefix("+82"))
        subscription = None
        if self.push is not None and contact.random() < 0.35:  # allows notifications
            subscription = self.push.subscribe()
            customer["consents"]["push"] = True
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
        if subscription is not None:  # the page's service worker registers it
            self.register_push(customer["id"], subscription.info)
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

    def register_push(self, customer_id: str, subscription: dict[str, Any]) -> None:
        try:
            r = self.http.post(
                "/v1/push/subscriptions",
                json={"customer_id": customer_id, "subscription": subscription},
            )
        except (httpx.HTTPError, RuntimeError) as exc:
            logger.warning("Storefront could not register a push subscription: %s", exc)
            return
        if r.status_code not in (200, 201):
            logger.warning("Push subscription refused: %s %s", r.status_code, r.text[:200])

    def on_email(self, mail: Received) -> None:
        """A shopper reads the email: some click, some of those buy."""
        if self.closing:
            return
        self.tally.add(emails=1)
        self.react(mail.part("plain"), click_rate=0.25)

    def on_text(self, text: str) -> None:
        """An SMS, an AlimTalk or its LMS fallback: read more often than an email."""
        self.tally.add(texts=1)
        self.react(text, click_rate=0.35)

    def on_push(self, payload: dict[str, Any]) -> None:
        self.tally.add(pushes=1)
        self.react(f"{payload.get('body', '')}\n{payload.get('url', '')}", click_rate=0.2)

    def react(self, text: str, *, click_rate: float) -> None:
        """Some shoppers follow the reminder's link; some of those buy, with the coupon."""
        if self.closing:
            return
        link = re.search(r"(https?://\S+/r/\S+)", text)
        cart_id = None
        if link is not None and self.rng.random() < click_rate:
            try:
                r = self.http.get(link.group(1), follow_redirects=False)
            except (httpx.HTTPError, RuntimeError):  # shutting down
                return
            if r.status_code == 302:
                self.tally.add(clicks=1)
                cart_id = urlsplit(r.headers["location"]).path.rsplit("/", 1)[-1]
        # A coupon makes a clicked reminder likelier to end in an order (and it is used).
        coupon = re.search(r"(N-[A-HJ-NP-Z2-9]{10})", text)
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
                " (SELECT count(*) FROM outcome WHERE converted),"
                " (SELECT count(*) FROM outcome),"
                " (SELECT count(*) FROM message WHERE channel = 'kakao'"
                "  AND detail = 'fallback:lms')"
            )
        ).one()
        sent: dict[str, int] = dict(
            conn.execute(
                sa.text("SELECT channel, count(*) FROM message WHERE status = 'sent' GROUP BY 1")
            ).all()
        )
    return {
        "abandoned": row[0],
        "converted": row[1],
        "outcomes": row[2],
        "lms": row[3],
        **{channel: int(sent.get(channel, 0)) for channel in ("email", "sms", "push", "kakao")},
    }


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
    # The other channels' providers, local: they take any free port.
    twilio = TwilioSink(TWILIO_SID, TWILIO_TOKEN, callbacks=("sent", "delivered"))
    vapid_private, vapid_public = vapid_keys()
    push = PushSink(vapid_public_key=vapid_public)
    alimtalk = AlimTalkSink(ALIMTALK_APP, ALIMTALK_SECRET, report_later=True, report_after=1.0)
    os.environ.update(
        {
            "NUDGE_TIME_SCALE": str(time_scale),
            "NUDGE_SMTP_HOST": "127.0.0.1",
            "NUDGE_SMTP_PORT": str(smtp_port),
            "NUDGE_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "NUDGE_SWEEP_INTERVAL_SECONDS": "1",
            "NUDGE_TWILIO_ACCOUNT_SID": TWILIO_SID,
            "NUDGE_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
            "NUDGE_TWILIO_FROM": TWILIO_FROM,
            "NUDGE_TWILIO_BASE_URL": twilio.base_url,
            "NUDGE_VAPID_PRIVATE_KEY": vapid_private,
            "NUDGE_ALIMTALK_BASE_URL": alimtalk.url,
            "NUDGE_ALIMTALK_APP_KEY": ALIMTALK_APP,
            "NUDGE_ALIMTALK_SECRET": ALIMTALK_SECRET,
            "NUDGE_ALIMTALK_SENDER_KEY": "demo-kakao-channel-sender-key",
            "NUDGE_ALIMTALK_RESEND_FROM": "0212345678",
            "NUDGE_ALIMTALK_CHECK_SECONDS": "2",
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
    twilio.start()
    push.start()
    alimtalk.start()
    shop = Storefront(
        f"http://127.0.0.1:{port}",
        key,
        random.Random(7),
        time_scale,
        push=push,
        no_kakaotalk=alimtalk.no_kakaotalk,
    )
    sink = SmtpSink(smtp_port, on_message=shop.on_email).start()
    stop = threading.Event()
    phones = threading.Thread(
        target=_read_phones, args=(shop, twilio, alimtalk, push, stop), daemon=True
    )
    phones.start()
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
            f"  Local providers: Twilio API {twilio.base_url}, Web Push {push.url}, "
            f"AlimTalk {alimtalk.url}\n"
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
        stop.set()
        sink.stop()
        for peer in (twilio, push, alimtalk):
            peer.stop()
        shop.close()
    return 0


def _read_phones(
    shop: Storefront,
    twilio: TwilioSink,
    alimtalk: AlimTalkSink,
    push: PushSink,
    stop: threading.Event,
) -> None:
    """The shoppers' phones and browsers: each SMS, AlimTalk (or its LMS) and notification
    that arrives is read, as the inbox reads emails."""
    seen = {"sms": 0, "kakao": 0, "push": 0}
    while not stop.wait(0.2):
        texts = twilio.messages[seen["sms"] :]
        seen["sms"] += len(texts)
        for sms in texts:
            shop.on_text(sms.form.get("Body", ""))
        talks = alimtalk.sent[seen["kakao"] :]
        seen["kakao"] += len(talks)
        for talk in talks:
            if talk.via == "lms" and talk.resend:
                shop.on_text(str(talk.resend.get("resendContent", "")))
            else:
                shop.on_text(" ".join(str(v) for v in talk.parameters.values()))
        notes = push.received[seen["push"] :]
        seen["push"] += len(notes)
        for note in notes:
            shop.on_push(note.payload)


#: Every channel, a few timings and discounts: the bandit picks among those a shopper can be
#: reached on (contact, consent, no suppression).
DEMO_ARMS = [
    "email/30m/0%",
    "email/60m/10%",
    "email/240m/15%",
    "sms/30m/0%",
    "sms/60m/10%",
    "push/15m/0%",
    "kakao/60m/0%",
]


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
        f"  ── {tally.carts} carts · {c['abandoned']} abandoned · {c['email']} emails sent · "
        f"{c['sms']} SMS · {c['push']} push · {c['kakao']} KakaoTalk ({c['lms']} as LMS) · "
        f"{tally.clicks} clicks · {tally.recovered} orders after a reminder · "
        f"{tally.bought_at_once} bought at once · {c['converted']}/{c['outcomes']} "
        "decisions converted",
        flush=True,
    )
