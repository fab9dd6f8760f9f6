"""Running Nudge's own processes (``nudge api``, ``nudge worker``) for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.services import free_port

NUDGE = str(Path(sys.executable).parent / "nudge")
T = TypeVar("T")


def nudge(*args: str, timeout: float = 60) -> str:
    """Run a ``nudge`` command to completion; return its output."""
    done = subprocess.run(
        [NUDGE, *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )
    assert done.returncode == 0, f"nudge {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


class Proc:
    """A long-running ``nudge`` process whose output goes to a log file."""

    def __init__(self, log: Path, *args: str) -> None:
        self.log = log
        self.args = args
        self._out = log.open("ab")
        self.popen = subprocess.Popen(
            [NUDGE, *args], stdout=self._out, stderr=subprocess.STDOUT, env=os.environ.copy()
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no clean-up, as a crash."""
        self.popen.kill()
        self.popen.wait(timeout=30)
        self._out.close()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._out.close()


def start_api(log: Path) -> tuple[Proc, str]:
    port = free_port()
    proc = Proc(log, "api", "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    eventually(
        lambda: httpx.get(f"{base}/healthz", timeout=1).status_code == 200,
        30,
        lambda: f"API did not come up:\n{proc.output()}",
    )
    return proc, base


def start_worker(log: Path) -> Proc:
    proc = Proc(log, "worker", "--threads", "2")
    eventually(
        lambda: "Worker ready" in proc.output(),
        30,
        lambda: f"worker did not come up:\n{proc.output()}",
    )
    return proc


def eventually(
    check: Callable[[], T], timeout: float, describe: Callable[[], str] | str = "condition"
) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``describe`` otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last  # type: ignore[no-any-return]
        time.sleep(0.1)
    message = describe() if callable(describe) else describe
    raise AssertionError(f"timed out after {timeout}s waiting for: {message} (last: {last!r})")
