"""Debian's headless Chromium, driven over the Chrome DevTools Protocol (websockets).

Just enough CDP for page tests: navigate, evaluate JavaScript, take a screenshot.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1440,1100",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


class Chromium:
    """One browser with a fresh profile and one page: ``with Chromium() as page: ...``."""

    def __init__(self) -> None:
        if not Path(CHROMIUM).exists():
            raise RuntimeError(
                f"{CHROMIUM} not found: install Debian's Chromium (apt-get install chromium)"
            )
        self.profile = Path(tempfile.mkdtemp(prefix="nudge-chromium-"))
        self.process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._ids = itertools.count(1)
        self._stack = ExitStack()
        self._stack.callback(self._stop)
        try:
            self.ws: ClientConnection = self._stack.enter_context(
                connect(self._page_socket(), max_size=None, open_timeout=10)
            )
        except BaseException:
            self._stack.close()
            raise
        self.call("Page.enable")
        self.call("Runtime.enable")

    def _page_socket(self, timeout: float = 30.0) -> str:
        # With --remote-debugging-port=0 Chromium writes the port it chose into the profile.
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.process.returncode}")
            if active.exists() and active.read_text().strip():
                port = int(active.read_text().split()[0])
                try:
                    targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=2).json()
                except httpx.HTTPError:
                    targets = []
                for target in targets:
                    if target.get("type") == "page":
                        return str(target["webSocketDebuggerUrl"])
            time.sleep(0.1)
        raise RuntimeError("chromium did not open its DevTools port")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one CDP command and return its result (events in between are skipped)."""
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=30))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait_for(self, expression: str, *, timeout: float = 30.0, stable: int = 3) -> None:
        """Until ``expression`` is true ``stable`` polls in a row (250 ms apart)."""
        deadline = time.monotonic() + timeout
        streak = 0
        while time.monotonic() < deadline:
            streak = streak + 1 if self.evaluate(expression) else 0
            if streak >= stable:
                return
            time.sleep(0.25)
        raise TimeoutError(f"not true after {timeout}s: {expression}")

    def screenshot(self, path: Path, *, width: int = 1440) -> None:
        """The whole page. Streamlit scrolls inside its main container, so the window is made
        as tall as the content first (what is outside the window is not painted)."""
        height = self.evaluate(
            "Math.max(document.body.scrollHeight,"
            " document.querySelector('[data-testid=stMain]')?.scrollHeight || 0)"
        )
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=max(900, int(height or 0)),
            deviceScaleFactor=1,
            mobile=False,
        )
        time.sleep(0.5)  # charts re-lay out to the new size
        shot = self.call("Page.captureScreenshot", format="png")
        self.call("Emulation.clearDeviceMetricsOverride")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        self._stack.close()

    def _stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
