"""Debian's Chromium, headless, driven over the Chrome DevTools Protocol (websockets).

No browser is downloaded: the tests use the ``chromium`` package (``apt-get install
chromium``) and fail, naming it, when it is missing. One module for every browser test (the
snippet's and the dashboard's): start a browser, open a page, navigate, evaluate JavaScript,
wait until something is true, take a screenshot.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

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
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "Chromium is needed for the browser tests and is not installed: "
            "run `apt-get install chromium` (Debian's package)",
            pytrace=False,
        )
    return found


class Page:
    """One tab: send commands, wait for events."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._id = 0
        self.events: list[dict[str, Any]] = []
        self.console: list[str] = []

    def _receive(self, timeout: float) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(self.ws.recv(timeout=timeout))
        if message.get("method") == "Runtime.consoleAPICalled":
            args = message["params"].get("args", [])
            self.console.append(" ".join(str(a.get("value", a.get("description"))) for a in args))
        elif message.get("method") == "Runtime.exceptionThrown":
            self.console.append(str(message["params"]["exceptionDetails"]))
        return message

    def send(self, method: str, timeout: float = 15, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive(max(0.01, deadline - time.monotonic()))
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            if "method" in message:
                self.events.append(message)

    def wait_for(self, event: str, timeout: float = 15) -> dict[str, Any]:
        for i, message in enumerate(self.events):
            if message["method"] == event:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive(max(0.01, deadline - time.monotonic()))
            if message.get("method") == event:
                return message
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str, *, await_promise: bool = False) -> Any:
        result = self.send(
            "Runtime.evaluate",
            expression=expression,
            awaitPromise=await_promise,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def navigate(self, url: str) -> None:
        self.events.clear()
        self.send("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def wait_until(self, expression: str, *, timeout: float = 30.0, stable: int = 3) -> None:
        """Until ``expression`` is true ``stable`` polls in a row (250 ms apart)."""
        deadline = time.monotonic() + timeout
        streak = 0
        while time.monotonic() < deadline:
            streak = streak + 1 if self.evaluate(expression) else 0
            if streak >= stable:
                return
            self.events.clear()  # polling: what happened meanwhile is not waited for
            time.sleep(0.25)
        raise TimeoutError(f"not true after {timeout}s: {expression}")

    def screenshot(self, path: Path, *, full_page: bool = False, width: int = 1440) -> None:
        """The window, or with ``full_page`` the whole page: apps that scroll inside a
        container (Streamlit) need the window as tall as the content first, since what is
        outside the window is not painted."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if full_page:
            height = self.evaluate(
                "Math.max(document.body.scrollHeight,"
                " document.querySelector('[data-testid=stMain]')?.scrollHeight || 0)"
            )
            self.send(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=max(900, int(height or 0)),
                deviceScaleFactor=1,
                mobile=False,
            )
            time.sleep(0.5)  # charts re-lay out to the new size
        try:
            data = self.send("Page.captureScreenshot", format="png", timeout=30)["data"]
        finally:
            if full_page:
                self.send("Emulation.clearDeviceMetricsOverride")
        path.write_bytes(base64.b64decode(data))


class Chromium:
    """A headless Chromium with a fresh profile, stopped (and its profile removed) on exit."""

    def __init__(self, *, width: int = 1280, height: int = 800) -> None:
        self.profile = tempfile.mkdtemp(prefix="nudge-chromium-")
        self._stack = ExitStack()
        self._drainer: threading.Thread | None = None
        self.proc = subprocess.Popen(
            [
                chromium_path(),
                *FLAGS,
                f"--window-size={width},{height}",
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.port = self._devtools_port()

    def _devtools_port(self) -> int:
        assert self.proc.stderr is not None
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                break
            seen.append(line)
            if "DevTools listening on ws://" in line:
                # Keep reading its log, or a full pipe would stall the browser.
                self._drainer = threading.Thread(target=self._drain, daemon=True)
                self._drainer.start()
                return int(line.split("ws://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        self.close()
        raise RuntimeError("Chromium did not start:\n" + "".join(seen))

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for _ in self.proc.stderr:
            pass

    def page(self) -> Page:
        targets = httpx.get(f"http://127.0.0.1:{self.port}/json/list", timeout=10).json()
        target = next(t for t in targets if t["type"] == "page")
        ws = self._stack.enter_context(connect(target["webSocketDebuggerUrl"], max_size=None))
        page = Page(ws)
        page.send("Page.enable")
        page.send("Runtime.enable")
        return page

    def close(self) -> None:
        self._stack.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._drainer is not None:
            self._drainer.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
