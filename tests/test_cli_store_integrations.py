"""``nudge store webhook-secret`` and ``nudge store publishable-key``: what a shop owner runs."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from nudge.cli import app
from settings import Settings
from tests.webhook_helpers import rows


@pytest.mark.usefixtures("store_key")
def test_webhook_secret_and_publishable_key_commands(settings: Settings) -> None:
    runner = CliRunner()

    # When the owner generates a webhook secret (WooCommerce) for the store
    out = runner.invoke(app, ["store", "webhook-secret", "Acme Outdoor"])

    # Then it is printed with the URLs to paste, and stored as printed
    assert out.exit_code == 0, out.output
    secret = re.search(r"keep it secret\): (\S+)", out.output)
    assert secret is not None
    (store,) = rows(settings, "SELECT id, webhook_secret FROM store")
    assert store.webhook_secret == secret.group(1)
    assert f"{settings.public_url}/v1/webhooks/shopify/{store.id}" in out.output
    assert f"{settings.public_url}/v1/webhooks/woocommerce/{store.id}" in out.output

    # When the owner pastes Shopify's signing key instead, on standard input
    out = runner.invoke(
        app,
        ["store", "webhook-secret", "Acme Outdoor", "--set", "-"],
        input="shpss_abc123def456ghi\n",
    )
    assert out.exit_code == 0, out.output
    assert rows(settings, "SELECT webhook_secret FROM store")[0][0] == "shpss_abc123def456ghi"

    # When the owner asks for the snippet key for the shop's origin
    out = runner.invoke(
        app, ["store", "publishable-key", "Acme Outdoor", "--origin", "https://Shop.Example/"]
    )

    # Then the one line to paste is printed, and asking again gives the same key
    assert out.exit_code == 0, out.output
    key = re.search(r'data-key="(pk_[^"]+)"', out.output)
    assert key is not None
    assert f'<script src="{settings.public_url}/v1/snippet.js"' in out.output
    assert "https://shop.example" in out.output
    again = runner.invoke(app, ["store", "publishable-key", "Acme Outdoor"])
    assert key.group(1) in again.output and "https://shop.example" in again.output

    # And mistakes are refused with a reason
    bad = runner.invoke(app, ["store", "publishable-key", "Acme Outdoor", "--origin", "shop"])
    assert bad.exit_code == 1 and "origin" in bad.output
    missing = runner.invoke(app, ["store", "webhook-secret", "No Such Shop"])
    assert missing.exit_code == 1 and "no store named" in missing.output
