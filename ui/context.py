"""The sidebar every page shares: language, store, date range. Pages read :func:`filters`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import streamlit as st

from settings import Settings, get_settings
from ui import data
from ui.i18n import LANGUAGES, t

DEFAULT_DAYS = 30


@dataclass(frozen=True)
class Filters:
    """What every page is about: one store, one UTC date range (``end`` exclusive)."""

    url: str
    store: data.StoreInfo
    start: datetime
    end: datetime
    margin_rate: float
    settings: Settings

    @property
    def currency(self) -> str:
        return self.store.currency


def language_switch() -> None:
    st.sidebar.radio(
        t("side.language"),
        options=list(LANGUAGES),
        format_func=LANGUAGES.__getitem__,
        key="lang",
        horizontal=True,
    )


def sidebar(settings: Settings) -> Filters | None:
    """Store and date range in the sidebar; ``None`` when there is no store yet."""
    url = settings.sqlalchemy_url
    refresh = st.sidebar.button(t("side.refresh"), icon=":material/refresh:")
    if refresh:
        data.clear_caches()
    stores = data.stores(url)
    if not stores:
        st.session_state["filters"] = None
        return None
    by_id = {s.id: s for s in stores}
    if st.session_state.get("store_id") not in by_id:
        # A link may name the store (?store=<name or id>); otherwise the first one.
        asked = st.query_params.get("store")
        named = [s.id for s in stores if asked in (s.id, s.name)]
        st.session_state["store_id"] = named[0] if named else stores[0].id
    store_id = st.sidebar.selectbox(
        t("side.store"),
        options=list(by_id),
        format_func=lambda i: f"{by_id[i].name} ({by_id[i].currency})",
        key="store_id",
    )
    today = datetime.now(UTC).date()
    picked = st.sidebar.date_input(
        t("side.dates"),
        value=(today - timedelta(days=DEFAULT_DAYS - 1), today),
        key="dates",
        format="YYYY-MM-DD",
    )
    first, last = _range(picked, today)
    window = settings.attribution_window_days
    if refresh:
        with st.spinner(t("side.refreshing")):
            data.refresh_rollups(url, store_id, window)
    as_of = data.ensure_rollups(url, store_id, window, data.rollup_max_age(settings.time_scale))
    st.sidebar.caption(t("side.as_of", time=f"{as_of:%Y-%m-%d %H:%M} UTC"))
    filters = Filters(
        url=url,
        store=by_id[store_id],
        start=datetime.combine(first, time(), UTC),
        end=datetime.combine(last + timedelta(days=1), time(), UTC),
        margin_rate=settings.ui_margin_rate,
        settings=settings,
    )
    st.session_state["filters"] = filters
    return filters


def _range(picked: object, today: date) -> tuple[date, date]:
    if isinstance(picked, tuple | list):
        if len(picked) == 2:
            first, last = picked
            return (first, last) if first <= last else (last, first)
        if len(picked) == 1:  # the user picked the start and not yet the end
            st.sidebar.caption(t("side.pick_end"))
            return picked[0], picked[0]
    if isinstance(picked, date):
        return picked, picked
    return today - timedelta(days=DEFAULT_DAYS - 1), today


def filters() -> Filters:
    """The sidebar's filters, or an empty state that says what to do (and the page stops)."""
    f: Filters | None = st.session_state.get("filters")
    if f is None:
        st.info(t("empty.no_store"), icon=":material/storefront:")
        st.stop()
    return f


def settings() -> Settings:
    f: Filters | None = st.session_state.get("filters")
    return f.settings if f is not None else get_settings()
