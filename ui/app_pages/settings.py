"""Settings: the store's messaging rules and which channels have credentials (read-only).

The experiment editor (arms, holdout share, attribution window, guardrails) comes with the
experiments issue.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from senders.compliance import Rules
from ui import context
from ui import format as fmt
from ui.i18n import t

f = context.filters()
s = f.settings
store = f.store
st.title(t("settings.title"))

st.subheader(t("settings.store"))
st.dataframe(
    pd.DataFrame(
        {
            t("col.setting"): [t("s.name"), t("s.country"), t("s.currency")],
            t("col.value"): [store.name, store.country, store.currency],
        }
    ),
    hide_index=True,
    width="stretch",
)

st.subheader(t("settings.rules"))
try:
    rules = Rules.for_store(store.country, store.rules)
    problem = None
except (ValueError, TypeError) as exc:  # rules written by hand: show them, don't crash
    rules = Rules.for_store(store.country)
    problem = str(exc)


def _hhmm(value: object) -> str:
    return value.strftime("%H:%M") if value is not None else t("r.none")  # type: ignore[attr-defined]


def _limit(value: int | None) -> str:
    return t("r.none") if value is None else str(value)


quiet = (
    f"{_hhmm(rules.quiet_start)} – {_hhmm(rules.quiet_end)}"
    if rules.quiet_start is not None and rules.quiet_end is not None
    else t("r.none")
)
st.dataframe(
    pd.DataFrame(
        {
            t("col.setting"): [
                t("r.quiet_hours"),
                t("r.night_consent"),
                t("r.sms_per_day"),
                t("r.per_week"),
                t("r.prefix"),
                t("r.opt_out"),
            ],
            t("col.value"): [
                quiet,
                t("yes") if rules.night_consent_lifts_quiet else t("no"),
                _limit(rules.sms_per_day),
                _limit(rules.messages_per_week),
                rules.advertising_prefix or t("r.none"),
                rules.opt_out_notice,
            ],
        }
    ),
    hide_index=True,
    width="stretch",
)
overrides = t("settings.overrides", keys=", ".join(sorted(store.rules))) if store.rules else ""
st.caption(t("settings.rules_note", country=store.country, overrides=overrides))
if problem:
    st.warning(problem)

st.subheader(t("settings.channels"))
CHANNELS = {
    "email": ["smtp_host", "smtp_username", "smtp_password"],
    "sms": ["twilio_account_sid", "twilio_auth_token", "twilio_from"],
    "push": ["vapid_private_key"],
    "kakao": ["alimtalk_app_key", "alimtalk_secret", "alimtalk_sender_key"],
}
REQUIRED = {
    "email": ["smtp_host"],
    "sms": ["twilio_account_sid", "twilio_auth_token", "twilio_from"],
    "push": ["vapid_private_key"],
    "kakao": ["alimtalk_app_key", "alimtalk_secret", "alimtalk_sender_key"],
}


def _is_set(name: str) -> bool:
    return bool(getattr(s, name, None))


st.dataframe(
    pd.DataFrame(
        {
            t("col.channel"): [t(f"ch.{c}") for c in CHANNELS],
            t("col.configured"): [
                "✅" if all(_is_set(n) for n in REQUIRED[c]) else "—" for c in CHANNELS
            ],
            t("col.variables"): [
                " · ".join(f"NUDGE_{n.upper()} {'✓' if _is_set(n) else '✗'}" for n in names)
                for names in CHANNELS.values()
            ],
        }
    ),
    hide_index=True,
    width="stretch",
)
st.caption(t("settings.channels_note"))

st.subheader(t("settings.journey"))
st.dataframe(
    pd.DataFrame(
        {
            t("col.setting"): [
                t("s.abandon_after"),
                t("s.window"),
                t("s.margin"),
                t("s.time_scale"),
                t("s.password"),
            ],
            t("col.value"): [
                t("minutes", n=s.abandon_after_seconds / 60),
                t("days", n=s.attribution_window_days),
                fmt.pct(s.ui_margin_rate, 0),
                f"{s.time_scale:g}×",
                t("yes") if s.ui_password else t("no"),
            ],
        }
    ),
    hide_index=True,
    width="stretch",
)
st.info(t("settings.experiments"), icon=":material/science:")
