"""The real dashboard (`nudge ui`) in Debian's headless Chromium: every page renders without
an error box, the experiment's detail with its four charts; screenshots go to tests/artifacts/
(not committed)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from settings import Settings
from tests.browser import Chromium, Page, chromium_path
from tests.services import free_port
from tests.simulated import SimSeeded, seed_experiment
from tests.ui.seed import Seeded, seed

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
#: Streamlit has finished the run: the script is idle, nothing is a skeleton or spinning, and
#: the page's title is on screen.
RENDERED = """(() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app) return false;
  const state = app.getAttribute('data-test-script-state');
  if (state === 'initial' || state === 'running' || state === 'rerunRequested') return false;
  if (document.querySelector('[data-testid="stStatusWidgetRunningIcon"],'
      + '[data-testid="stAppSkeleton"], [data-testid="stSkeleton"], [data-testid="stSpinner"]'))
    return false;
  const h1 = document.querySelector('h1');
  return !!h1 && h1.innerText.trim().startsWith(%s);
})()"""
#: Charts drawn (Vega renders into an svg or a canvas).
CHARTS = """document.querySelectorAll(
  '[data-testid="stVegaLiteChart"] svg, [data-testid="stVegaLiteChart"] canvas').length"""


@pytest.fixture
def dashboard(
    env: Callable[..., Settings], tmp_path: Path, redis_url: str
) -> Iterator[tuple[str, Seeded, SimSeeded]]:
    """`nudge ui` on a free port, over a SQLite database with two seeded stores: the
    journeys' (the default one) and the simulated experiment's."""
    from nudge.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'nudge.db'}"
    upgrade(url)
    settings = env(database_url=url, redis_url=redis_url)
    seeded = seed(settings)
    simulated = seed_experiment(settings)
    port = free_port()
    nudge = str(Path(sys.executable).parent / "nudge")
    log = (tmp_path / "ui.log").open("wb")
    server = subprocess.Popen(
        [nudge, "ui", "--port", str(port)],
        env=os.environ.copy(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/_stcore/health", timeout=1).text == "ok":
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`nudge ui` did not start: {(tmp_path / 'ui.log').read_text()}")
            time.sleep(0.2)
        yield base, seeded, simulated
    finally:
        server.terminate()
        server.wait(timeout=15)
        log.close()


def test_chromium_is_installed() -> None:
    # Not a skip: without the browser this suite cannot see what a person sees.
    assert Path(chromium_path()).exists()


def visit(page: Page, url: str, title: str, shot: str, *, charts: int = 0) -> str:
    """Open ``url``, wait until it rendered (and drew ``charts`` charts), screenshot it, check
    that no exception or error box is on it; returns the main area's text."""
    page.navigate(url)
    page.wait_until(RENDERED % repr(title), timeout=60)
    if charts:
        page.wait_until(f"{CHARTS} >= {charts}", timeout=60)
    page.screenshot(ARTIFACTS / f"ui-{shot}.png", full_page=True)
    exceptions = page.evaluate(
        "[...document.querySelectorAll('[data-testid=\"stException\"]')].map(e => e.innerText)"
    )
    assert exceptions == [], f"{shot}: {exceptions}"
    errors = page.evaluate(
        "[...document.querySelectorAll('[data-testid=\"stAlertContentError\"]')]"
        ".map(e => e.innerText)"
    )
    assert errors == [], f"{shot}: {errors}"
    text = str(page.evaluate("document.querySelector('[data-testid=\"stMain\"]').innerText"))
    assert "Traceback" not in text
    return text


def test_every_page_renders_in_chromium(dashboard: tuple[str, Seeded, SimSeeded]) -> None:
    base, seeded, simulated = dashboard
    with Chromium(width=1440, height=1100) as browser:
        page = browser.page()
        # The default store (journeys of the real send path): every page
        text = visit(page, f"{base}/", "Overview", "overview", charts=2)
        assert "Abandoned carts" in text and f"\n{seeded.carts}\n" in text, text[:500]
        text = visit(page, f"{base}/experiments", "Experiments", "experiments-empty")
        assert "nudge experiment create" in text
        visit(page, f"{base}/segments", "Segments", "segments", charts=1)
        text = visit(page, f"{base}/messages", "Messages", "messages")
        assert "Workers are running" in text or "No worker has polled" in text
        visit(page, f"{base}/settings", "Settings", "settings")

        # The simulated store's running experiment, linked by name: the detail and its charts
        sim = f"store={quote(simulated.store_name)}&experiment={simulated.experiment}"
        text = visit(page, f"{base}/experiments?{sim}", "Experiments", "experiment", charts=4)
        for heading in (
            "Arms",
            "Posterior per arm",
            "Traffic share over time",
            "Cumulative incremental profit vs the holdout",
            "Sequential test",
            "Off-policy estimates",
            "ROI in the selected dates",
        ):
            assert heading in text, heading
        assert "Sample ratio mismatch" not in text
        assert f"{simulated.decisions:,}" in text  # the decisions metric
        visit(page, f"{base}/?store={quote(simulated.store_name)}", "Overview", "sim", charts=3)
