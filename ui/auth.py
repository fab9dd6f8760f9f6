"""A password in front of the dashboard: asked when NUDGE_UI_PASSWORD is set, and required
when the server listens on anything but localhost."""

from __future__ import annotations

import hmac
import time

import streamlit as st

from settings import Settings
from ui.i18n import t
from ui.server import is_local

UNLOCKED = "ui_unlocked"


def bound_address() -> str:
    """The address the Streamlit server listens on (empty: every interface)."""
    try:
        return str(st.get_option("server.address") or "")
    except RuntimeError:
        return ""


def guard(settings: Settings) -> bool:
    """True when the session may see the dashboard; otherwise draw the lock and return False."""
    password = settings.ui_password.get_secret_value() if settings.ui_password else ""
    address = bound_address()
    if not password:
        if is_local(address):
            return True
        st.error(t("auth.required", address=address or "0.0.0.0"), icon=":material/lock:")
        return False
    if st.session_state.get(UNLOCKED):
        if st.sidebar.button(t("auth.logout"), icon=":material/lock:"):
            st.session_state[UNLOCKED] = False
            st.rerun()
        return True
    st.title(t("auth.title"))
    st.write(t("auth.prompt"))
    with st.form("login"):
        entered = st.text_input(t("auth.password"), type="password")
        submitted = st.form_submit_button(t("auth.submit"))
    if submitted:
        if hmac.compare_digest(entered.encode(), password.encode()):
            st.session_state[UNLOCKED] = True
            st.rerun()
        time.sleep(0.5)  # a guess costs time
        st.error(t("auth.wrong"))
    return False
