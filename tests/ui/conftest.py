"""Fixtures of the dashboard tests: a seeded database, an AppTest of the entry script."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit import config
from streamlit.testing.v1 import AppTest

import ui
from settings import Settings
from tests.ui.seed import Seeded, seed

APP = str(Path(ui.__file__).parent / "app.py")


@pytest.fixture(autouse=True)
def _fresh_cache_and_address() -> Iterator[None]:
    """Each test starts with empty query caches (PostgreSQL's URL is the same across tests)
    and a server bound to localhost, as `nudge ui` binds it."""
    st.cache_data.clear()
    before = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")
    yield
    config.set_option("server.address", before)
    st.cache_data.clear()


@pytest.fixture
def seeded(settings: Settings) -> Seeded:
    return seed(settings)


@pytest.fixture
def app() -> Callable[[], AppTest]:
    def _make() -> AppTest:
        return AppTest.from_file(APP, default_timeout=30)

    return _make
