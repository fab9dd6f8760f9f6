"""Formatting, rollup and SQL helpers' doctests, and `nudge ui`'s refusal to run unguarded."""

from __future__ import annotations

import doctest
from collections.abc import Callable

import pytest
from typer.testing import CliRunner

import experiments.rollups
import store.sql
import ui.format
from nudge.cli import app
from settings import Settings
from ui.format import band_labels, money, pct


@pytest.mark.parametrize("module", [ui.format, experiments.rollups, store.sql])
def test_doctests(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0


def test_money_follows_the_currency() -> None:
    assert money(1234.5, "USD") == "$1,234.50"
    assert money(45000, "KRW") == "₩45,000"
    assert money(-0.001, "USD") == "$0.00"  # no "-$0.00"
    assert money(None, "USD") == "—" and pct(None) == "—"
    assert band_labels("KRW") == ["<₩50,000", "₩50,000–₩100,000", "₩100,000–₩250,000", "₩250,000+"]


def test_nudge_ui_refuses_other_machines_without_a_password(
    env: Callable[..., Settings],
) -> None:
    env(ui_password=None)
    result = CliRunner().invoke(app, ["ui", "--host", "0.0.0.0", "--port", "18599"])
    assert result.exit_code == 2
    assert "NUDGE_UI_PASSWORD" in result.output
