"""The ``nudge`` command line."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from nudge.process import settle_garbage_collector
from settings import get_settings

app = typer.Typer(
    help="Nudge: abandoned-cart recovery that learns when, how and whether to reach out.",
    no_args_is_help=True,
    add_completion=False,
)
store_app = typer.Typer(help="Manage stores and their API keys.", no_args_is_help=True)
app.add_typer(store_app, name="store")
experiment_app = typer.Typer(
    help="Run experiments: a bandit or an A/B test, measured against a holdout.",
    no_args_is_help=True,
)
app.add_typer(experiment_app, name="experiment")
bounces_app = typer.Typer(
    help="Read the bounce reports relays mail to the Return-Path.", no_args_is_help=True
)
app.add_typer(bounces_app, name="bounces")

StoreOption = Annotated[str, typer.Option("--store", help="The store's name.")]


def _logging(component: str) -> None:
    from nudge.logs import configure

    configure(get_settings().log_level, component)


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (Alembic migrations)."""
    from nudge.migrate import upgrade

    _logging("migrate")
    settings = get_settings()
    upgrade(settings.sqlalchemy_url)
    typer.echo(f"Database is up to date ({_where(settings.sqlalchemy_url)}).")


@app.command()
def api(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
) -> None:
    """Serve the HTTP API (events, tracked links, OpenAPI docs at /docs)."""
    import uvicorn

    from api.app import create_app

    _logging("api")
    served = create_app(get_settings())
    settle_garbage_collector()
    uvicorn.run(
        served,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
    )


@app.command()
def worker(
    threads: Annotated[int | None, typer.Option(help="Worker threads (default: settings).")] = None,
) -> None:
    """Run the workers: abandonment checks, sends, and the periodic sweep."""
    from senders.worker import run_worker

    _logging("worker")
    run_worker(get_settings(), threads=threads)


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8501,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
) -> None:
    """Serve the dashboard (Streamlit): experiments, A/B results and ROI."""
    import os

    from ui.server import command, is_local

    if not is_local(host) and get_settings().ui_password is None:
        typer.echo(
            f"error: the dashboard on {host} would be open to other machines; "
            "set NUDGE_UI_PASSWORD first (or use --host 127.0.0.1)",
            err=True,
        )
        raise typer.Exit(2)
    typer.echo(f"Dashboard at http://{host}:{port}", err=True)
    argv = command(port=port, host=host)
    os.execv(argv[0], argv)  # Streamlit becomes this process: signals reach it directly


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="API port.")] = 8000,
    smtp_port: Annotated[int, typer.Option(help="Port of the demo's SMTP sink.")] = 8025,
    ui_port: Annotated[int, typer.Option(help="Dashboard port (another if taken).")] = 8501,
    time_scale: Annotated[
        float, typer.Option(help="Simulated seconds per real second (1 h of journey = 3 s).")
    ] = 1200.0,
    rate: Annotated[float, typer.Option(help="New carts per real second.")] = 2.0,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: run until ^C).")
    ] = None,
) -> None:
    """Run everything on this machine: API, worker, an SMTP sink and a simulated storefront."""
    from nudge.demo import run_demo

    _logging("demo")
    raise typer.Exit(
        run_demo(
            port=port,
            smtp_port=smtp_port,
            ui_port=ui_port,
            time_scale=time_scale,
            rate=rate,
            duration=duration,
        )
    )


#: sysexits.h: what a mail server piping a message to us understands.
_EX_NOINPUT, _EX_TEMPFAIL = 66, 75
#: Bounce reports recorded per transaction (and removed after it, with --remove).
_BOUNCE_BATCH = 500


@bounces_app.command("read")
def bounces_read(
    paths: Annotated[
        list[str] | None,
        typer.Argument(
            help="Files (one message each) or directories (every file in them, or in a "
            "Maildir's new/ and cur/). None, or '-': one message on standard input, as a "
            "mail server's pipe alias delivers it."
        ),
    ] = None,
    remove: Annotated[
        bool, typer.Option("--remove", help="Delete each file once what it says is recorded.")
    ] = False,
) -> None:
    """Record what bounce reports (RFC 3464) say: hard bounces suppress the address."""
    import sys
    from pathlib import Path

    import sqlalchemy.exc

    from senders.bounces import BounceTally, record_bounces
    from store.db import get_engine
    from store.types import utcnow

    _logging("bounces")
    files: list[Path] = []
    stdin = not paths or paths == ["-"]
    for name in [] if stdin else paths or []:
        path = Path(name)
        if path.is_dir():
            maildir = [path / "new", path / "cur"]
            folders = [d for d in maildir if d.is_dir()] or [path]
            files += sorted(f for d in folders for f in d.iterdir() if f.is_file())
        elif path.is_file():
            files.append(path)
        else:
            typer.echo(f"error: {name}: no such file or directory", err=True)
            raise typer.Exit(_EX_NOINPUT)
    engine = get_engine(get_settings().sqlalchemy_url)
    tally = BounceTally()
    try:
        if stdin:
            with engine.begin() as conn:
                record_bounces(conn, [sys.stdin.buffer.read()], utcnow(), tally)
        else:
            with typer.progressbar(
                length=len(files), label="Reading bounce reports", file=sys.stderr
            ) as progress:
                for start in range(0, len(files), _BOUNCE_BATCH):
                    batch = files[start : start + _BOUNCE_BATCH]
                    with engine.begin() as conn:
                        record_bounces(conn, (f.read_bytes() for f in batch), utcnow(), tally)
                    if remove:
                        for f in batch:
                            f.unlink(missing_ok=True)
                    progress.update(len(batch))
    except sqlalchemy.exc.SQLAlchemyError as exc:
        # Temporary for the mail server: it keeps the report and pipes it again later.
        typer.echo(f"error: the database is unavailable ({type(exc).__name__})", err=True)
        raise typer.Exit(_EX_TEMPFAIL) from None
    typer.echo(tally.summary())


@store_app.command("create")
def store_create(name: Annotated[str, typer.Argument(help="The store's name.")]) -> None:
    """Create a store and print its API key (shown once; only a hash is kept)."""
    from store.db import get_engine
    from store.stores import StoreExists, create_store

    engine = get_engine(get_settings().sqlalchemy_url)
    try:
        with engine.begin() as conn:
            store_id, key = create_store(conn, name=name)
    except (StoreExists, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Store {name!r} created (id {store_id}).")
    typer.echo(f"API key (shown once, keep it secret): {key}")


@store_app.command("webhook-secret")
def store_webhook_secret(
    name: Annotated[str, typer.Argument(help="The store's name.")],
    set_: Annotated[
        str | None,
        typer.Option(
            "--set",
            help="Use this secret (Shopify's signing key); '-' reads it from standard input. "
            "Default: generate one to paste into WooCommerce.",
        ),
    ] = None,
) -> None:
    """Set the secret that signs the store's Shopify/WooCommerce webhooks; print the URLs."""
    import sys

    from store.db import get_engine
    from store.stores import set_webhook_secret

    settings = get_settings()
    secret = sys.stdin.readline().strip() if set_ == "-" else set_
    try:
        with get_engine(settings.sqlalchemy_url).begin() as conn:
            store_id, secret = set_webhook_secret(conn, name=name, secret=secret)
    except (LookupError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    base = settings.public_url.rstrip("/")
    typer.echo(f"Webhook secret of {name!r} (keep it secret): {secret}")
    typer.echo(f"Shopify webhook URL:     {base}/v1/webhooks/shopify/{store_id}")
    typer.echo(f"WooCommerce webhook URL: {base}/v1/webhooks/woocommerce/{store_id}")


@store_app.command("coupons")
def store_coupons(
    name: Annotated[str, typer.Argument(help="The store's name.")],
    platform: Annotated[
        str,
        typer.Option(help="shopify, woocommerce, or none (stop pushing codes)."),
    ],
    url: Annotated[
        str | None,
        typer.Option(help="The shop: https://my-shop.myshopify.com, or the WordPress site."),
    ] = None,
) -> None:
    """Create each coupon code in the store's checkout before a message offers it.

    The API credential is read from standard input (or asked for, hidden): a Shopify Admin
    API access token with the write_discounts scope, or WooCommerce's
    consumer_key:consumer_secret with write access."""
    import sys

    from store.db import get_engine
    from store.stores import set_coupon_push

    chosen = None if platform == "none" else platform
    token = None
    if chosen is not None:
        if sys.stdin.isatty():
            token = typer.prompt("API credential", hide_input=True)
        else:
            token = sys.stdin.readline().strip()
    try:
        with get_engine(get_settings().sqlalchemy_url).begin() as conn:
            set_coupon_push(conn, name=name, platform=chosen, url=url, token=token)
    except (LookupError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if chosen is None:
        typer.echo(f"Coupon codes of {name!r} are no longer pushed to a store.")
    else:
        typer.echo(f"Coupon codes of {name!r} will be created in {chosen} ({url}) before sending.")


@store_app.command("publishable-key")
def store_publishable_key(
    name: Annotated[str, typer.Argument(help="The store's name.")],
    origin: Annotated[
        list[str] | None,
        typer.Option(
            help="An origin whose pages may use the key, e.g. https://shop.example "
            "(repeat for several; replaces the list)."
        ),
    ] = None,
    rotate: Annotated[bool, typer.Option(help="Replace the key (the old one stops).")] = False,
) -> None:
    """Print the store's publishable key for the JS snippet (created on first use)."""
    from store.db import get_engine
    from store.stores import publishable_key

    settings = get_settings()
    try:
        with get_engine(settings.sqlalchemy_url).begin() as conn:
            _, key, allowed = publishable_key(conn, name=name, origins=origin, rotate=rotate)
    except (LookupError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    base = settings.public_url.rstrip("/")
    typer.echo(f"Publishable key of {name!r} (public, for the snippet): {key}")
    typer.echo(f"Allowed origins: {', '.join(allowed) or '(none yet: add --origin)'}")
    typer.echo("Paste into every page, before </head>:")
    typer.echo(f'<script src="{base}/v1/snippet.js" data-key="{key}" async></script>')


def _store_id(conn: Any, name: str) -> str:
    import sqlalchemy as sa

    from store.models import Store

    t = Store.__table__  # type: ignore[attr-defined]
    store_id = conn.execute(sa.select(t.c.id).where(t.c.name == name)).scalar()
    if store_id is None:
        typer.echo(f"error: no store named {name!r}", err=True)
        raise typer.Exit(1)
    return str(store_id)


def _experiment_call(store: str, fn: Any, **kwargs: Any) -> Any:
    from datetime import UTC, datetime

    from experiments.lifecycle import ExperimentError
    from store.db import get_engine

    try:
        with get_engine(get_settings().sqlalchemy_url).begin() as conn:
            return fn(conn, store_id=_store_id(conn, store), now=datetime.now(UTC), **kwargs)
    except ExperimentError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@experiment_app.command("create")
def experiment_create(
    name: Annotated[str, typer.Argument(help="A name, unique in the store.")],
    store: StoreOption,
    arm: Annotated[
        list[str],
        typer.Option(help="An arm as channel/delay/discount, e.g. email/60m/0% (repeat)."),
    ],
    mode: Annotated[str, typer.Option(help="bandit (Thompson sampling) or ab.")] = "bandit",
    holdout: Annotated[float, typer.Option(help="Share of customers never messaged.")] = 0.10,
    touch: Annotated[int | None, typer.Option(help="The touch it decides (default: all).")] = None,
    window_days: Annotated[float, typer.Option(help="Attribution window in days.")] = 7.0,
    max_discount: Annotated[
        float | None, typer.Option(help="Largest discount allowed (%).")
    ] = None,
    max_touches: Annotated[int, typer.Option(help="Touches per journey at most.")] = 3,
    margin: Annotated[float, typer.Option(help="Gross margin rate of an order.")] = 0.35,
    weight: Annotated[
        list[str] | None, typer.Option(help="ab mode: ARM=WEIGHT (repeat; default equal).")
    ] = None,
) -> None:
    """Create a draft experiment (start it with `nudge experiment start`)."""
    from experiments.lifecycle import Spec, create

    weights = None
    if weight:
        try:
            weights = {k: float(v) for k, v in (w.rsplit("=", 1) for w in weight)}
        except ValueError:
            typer.echo("error: --weight takes ARM=NUMBER, e.g. email/60m/0%=2", err=True)
            raise typer.Exit(1) from None
    spec = Spec(
        name=name,
        arms=arm,
        mode=mode,
        holdout_share=holdout,
        attribution_window_days=window_days,
        touch=touch,
        weights=weights,
        max_discount_pct=max_discount,
        max_touches=max_touches,
        margin_rate=margin,
        message_cost=get_settings().message_costs(),
    )
    row = _experiment_call(store, create, spec=spec)
    typer.echo(f"Experiment {name!r} created ({row['mode']}, arms: {', '.join(row['arms'])}).")


def _transition(action: str) -> Any:
    def command(
        name: Annotated[str, typer.Argument(help="The experiment's name.")], store: StoreOption
    ) -> None:
        from experiments.lifecycle import transition

        row = _experiment_call(store, transition, name=name, action=action)
        typer.echo(f"Experiment {name!r} is {row['status']}.")

    command.__doc__ = f"{action.capitalize()} an experiment."
    return command


for _action in ("start", "pause", "stop"):
    experiment_app.command(_action)(_transition(_action))


@experiment_app.command("promote")
def experiment_promote(
    name: Annotated[str, typer.Argument(help="The experiment's name.")],
    store: StoreOption,
    arm: Annotated[
        str | None, typer.Option(help="The arm to promote (default: the most likely best).")
    ] = None,
) -> None:
    """End the experiment and make its winner the store's default."""
    from experiments.lifecycle import promote
    from experiments.report import best_arm, report

    def _promote(conn: Any, *, store_id: str, now: Any) -> Any:
        chosen = arm or best_arm(report(conn, store_id=store_id, name=name))
        if chosen is None:
            typer.echo("error: no outcomes yet to pick a winner from; pass --arm", err=True)
            raise typer.Exit(1)
        return promote(conn, store_id=store_id, name=name, arm_key=chosen, now=now)

    row = _experiment_call(store, _promote)
    typer.echo(f"Experiment {name!r} stopped; {row['winner']} is now the store's default.")


@experiment_app.command("report")
def experiment_report(
    name: Annotated[str, typer.Argument(help="The experiment's name.")],
    store: StoreOption,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    since: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%d"], help="ROI from this day.")
    ] = None,
    until: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%d"], help="ROI up to this day.")
    ] = None,
) -> None:
    """Per-arm statistics, lift against the holdout (always-valid), SRM check and ROI."""
    import json

    from experiments.report import report

    def _report(conn: Any, *, store_id: str, now: Any) -> Any:
        del now
        return report(
            conn,
            store_id=store_id,
            name=name,
            start=since.date() if since else None,
            end=until.date() if until else None,
        )

    data = _experiment_call(store, _report)
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    typer.echo(f"{data['experiment']} ({data['mode']}, {data['status']})")
    if not data["arms"]:
        typer.echo(f"  {data.get('message', 'no data')}")
        return
    typer.echo(
        f"  {'arm':<18} {'carts':>6} {'sends':>6} {'conv':>5} {'rate':>14} "
        f"{'profit/cart':>12} {'P(best)':>8}"
    )
    for a in data["arms"]:
        rate = a["conversion_rate"]
        ppc = a["profit_per_cart"]
        rate_s = f"{rate['value']:.3f} ±{(rate['high'] - rate['low']) / 2:.3f}" if rate else "-"
        ppc_s = f"{ppc['value']:.2f}" if ppc else "-"
        best = a.get("prob_best_profit")
        typer.echo(
            f"  {a['arm']:<18} {a['carts']:>6} {a['sends']:>6} {a['conversions']:>5} "
            f"{rate_s:>14} {ppc_s:>12} {best if best is None else round(best, 3)!s:>8}"
        )
    srm = data["srm"]
    if srm.get("flagged"):
        typer.echo(f"  WARNING: sample ratio mismatch (p = {srm['p_value']:.2g})")
    lift = data.get("lift_vs_holdout")
    if lift and lift.get("profit_per_cart"):
        p = lift["profit_per_cart"]
        typer.echo(f"  profit/cart lift vs holdout: {_fmt_lift(p)}")
    for r in data["roi"]:
        inc = r["incremental_profit"]
        typer.echo(
            f"  ROI ({r['group']}): attributed revenue {r['attributed_revenue']:.2f}, "
            f"incremental profit {inc['value']:.2f} [{inc['low']:.2f}, {inc['high']:.2f}]"
            if inc
            else f"  ROI ({r['group']}): {r.get('message')}"
        )


def _fmt_lift(metric: dict[str, Any]) -> str:
    absolute = metric.get("absolute") or {}
    p = metric.get("always_valid_p")
    text = f"{absolute.get('value', float('nan')):+.3f}"
    if absolute:
        text += f" [{absolute['low']:+.3f}, {absolute['high']:+.3f}]"
    if p is not None:
        text += f", always-valid p = {p:.3g}"
    return text


def _where(url: str) -> str:
    return url.split("@")[-1] if "@" in url else url


def _register_simulate() -> None:
    from nudge.simulate_cmd import simulate

    app.command("simulate", help="Run policies on a simulated scenario (the offline simulator).")(
        simulate
    )


_register_simulate()


if __name__ == "__main__":
    app()
