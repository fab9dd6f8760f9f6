"""The real dashboard (`nudge ui`) in Debian's headless Chromium: every page renders without
an error box; screenshots go to tests/artifacts/ (not committed)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from settings import Settings
from tests.services import free_port
from tests.ui.chromium import CHROMIUM, Chromium
from tests.ui.seed import Seeded, seed

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
PAGES = {
    "overview": "Overview",
    "experiments": "Experiments",
    "segments": "Segments",
    "messages": "Messages",
    "settings": "Settings",
}
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


@pytest.fixture
def dashboard(
    env: Callable[..., Settings], tmp_path: Path, redis_url: str
) -> Iterator[tuple[str, Seeded]]:
    """`nudge ui` on a free port, over a seeded SQLite database."""
    from nudge.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'nudge.db'}"
    upgrade(url)
    settings = env(database_url=url, redis_url=redis_url)
    seeded = seed(settings)
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
        yield base, seeded
    finally:
        server.terminate()
        server.wait(timeout=15)
        log.close()


def test_chromium_is_installed() -> None:
    # Not a skip: without the browser this suite cannot see what a person sees.
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: apt-get install chromium"


def test_every_page_renders_in_chromium(dashboard: tuple[str, Seeded]) -> None:
    base, seeded = dashboard
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: apt-get install chromium"
    with Chromium() as page:
        for path, title in PAGES.items():
            # The default page lives at "/" (its url_path would answer "page not found").
            page.navigate(f"{base}/" if path == "overview" else f"{base}/{path}")
            page.wait_for(RENDERED % repr(title), timeout=45)
            page.screenshot(ARTIFACTS / f"ui-{path}.png")
            exceptions = page.evaluate(
                "[...document.querySelectorAll('[data-testid=\"stException\"]')]"
                ".map(e => e.innerText)"
            )
            assert exceptions == [], f"{path}: {exceptions}"
            errors = page.evaluate(
                "[...document.querySelectorAll('[data-testid=\"stAlertContentError\"]')]"
                ".map(e => e.innerText)"
            )
            assert errors == [], f"{path}: {errors}"
            text = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').innerText")
            assert "Traceback" not in text
            if path == "overview":
                # The metric the seed made, as the browser shows it
                assert "Abandoned carts" in text and f"\n{seeded.carts}\n" in text, text[:500]
            if path == "messages":
                assert "Workers are running" in text or "No worker has polled" in text
