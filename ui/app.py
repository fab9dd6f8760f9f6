"""The Nudge dashboard: ``nudge ui`` (or ``streamlit run ui/app.py``).

The entry script draws what every page shares (language, password, store and date range) and
routes to the page; pages only query (``ui.data``) and render.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
import streamlit as st

from settings import get_settings
from ui import auth, context
from ui.i18n import t

PAGES = Path(__file__).parent / "app_pages"

st.set_page_config(page_title="Nudge", page_icon=":material/shopping_cart:", layout="wide")
settings = get_settings()
context.language_switch()
if not auth.guard(settings):
    st.stop()
try:
    context.sidebar(settings)
except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
    # The code moved on and the schema did not: say how to fix it, not a traceback.
    if "rollup" not in str(exc):
        raise
    st.error(t("app.migrate"), icon=":material/database:")
    st.stop()
page = st.navigation(
    [
        st.Page(
            PAGES / "overview.py",
            title=t("nav.overview"),
            icon=":material/dashboard:",
            url_path="overview",
            default=True,
        ),
        st.Page(
            PAGES / "experiments.py",
            title=t("nav.experiments"),
            icon=":material/science:",
            url_path="experiments",
        ),
        st.Page(
            PAGES / "segments.py",
            title=t("nav.segments"),
            icon=":material/pie_chart:",
            url_path="segments",
        ),
        st.Page(
            PAGES / "messages.py",
            title=t("nav.messages"),
            icon=":material/mail:",
            url_path="messages",
        ),
        st.Page(
            PAGES / "settings.py",
            title=t("nav.settings"),
            icon=":material/settings:",
            url_path="settings",
        ),
    ]
)
page.run()
