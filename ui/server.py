"""How the dashboard is started (``nudge ui``, ``nudge demo``); no Streamlit import here."""

from __future__ import annotations

import sys
from pathlib import Path

APP = Path(__file__).parent / "app.py"
LOCAL_ADDRESSES = frozenset({"127.0.0.1", "localhost", "::1"})


def is_local(address: str) -> bool:
    """Only this machine can reach a server bound to ``address``."""
    return address in LOCAL_ADDRESSES or address.startswith("127.")


def command(*, port: int, host: str = "127.0.0.1") -> list[str]:
    """The ``streamlit run`` command line of the dashboard.

    Headless (no browser opened), no usage statistics sent anywhere, no file watcher (the
    installed app does not change under it), no developer menu (no "Deploy" button).
    """
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.headless",
        "true",
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
    ]
