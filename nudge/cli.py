"""The ``nudge`` command line."""

from __future__ import annotations

from typing import Annotated

import typer

from settings import get_settings

app = typer.Typer(
    help="Nudge: abandoned-cart recovery that learns when, how and whether to reach out.",
    no_args_is_help=True,
    add_completion=False,
)
store_app = typer.Typer(help="Manage stores and their API keys.", no_args_is_help=True)
app.add_typer(store_app, name="store")


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
    uvicorn.run(
        create_app(get_settings()),
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
def demo(
    port: Annotated[int, typer.Option(help="API port.")] = 8000,
    smtp_port: Annotated[int, typer.Option(help="Port of the demo's SMTP sink.")] = 8025,
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
            port=port, smtp_port=smtp_port, time_scale=time_scale, rate=rate, duration=duration
        )
    )


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


def _where(url: str) -> str:
    return url.split("@")[-1] if "@" in url else url


def _simulate_command() -> None:
    try:
        from nudge.simulate_cmd import simulate
    except ImportError:  # the optimizer's simulator is optional while it is being built
        return
    app.command("simulate")(simulate)


_simulate_command()


if __name__ == "__main__":
    app()
