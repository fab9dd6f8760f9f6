"""`nudge demo` (what `make demo` runs) works on a fresh data directory and shows the loop."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.services import free_port

pytestmark = pytest.mark.e2e


def test_demo_shows_abandonment_emails_and_orders(tmp_path: Path, env: Any) -> None:
    env(data_dir=tmp_path / ".nudge", database_url=None, redis_url=None)
    nudge = str(Path(sys.executable).parent / "nudge")
    done = subprocess.run(
        [
            nudge,
            "demo",
            "--duration",
            "20",
            "--rate",
            "4",
            "--port",
            str(free_port()),
            "--smtp-port",
            str(free_port()),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "Cart 1 abandoned" in out
    assert "Email sent for cart" in out
    final = re.findall(r"(\d+) carts · (\d+) abandoned · (\d+) emails sent", out)[-1]
    carts, abandoned, sent = map(int, final)
    assert carts > 20 and 0 < abandoned < carts and sent > 0, final
    # The other channels go through their local providers too. Which ones a 20 s run reaches
    # is the bandit's draw (each is a few percent of the touches), so: at least one of them.
    others = re.findall(r"(\d+) SMS · (\d+) push · (\d+) KakaoTalk", out)[-1]
    assert sum(map(int, others)) > 0, others
    assert "Traceback" not in out, out
    # Personal data stays out of the terminal.
    assert "@shoppers.example" not in out
    assert (tmp_path / ".nudge" / "nudge.db").exists()
