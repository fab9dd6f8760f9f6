"""Settings: the experiment editor, the store's messaging rules (quiet hours, frequency caps),
and which channels have credentials (never the secrets themselves).

Edits go through the same validation as the CLI and the API (``experiments.lifecycle`` for
experiments, ``senders.compliance.Rules`` for the rules); a refusal says why and stores
nothing.
"""

from __future__ import annotations

from datetime import time
from typing import Any

import pandas as pd
import streamlit as st

from experiments import lifecycle
from optimizer.arms import CHANNELS as ARM_CHANNELS
from senders.compliance import Rules
from store.models import ExperimentStatus
from ui import context, data
from ui import format as fmt
from ui.i18n import bound, t

f = context.filters()
tr = bound()  # t() for format_func: in the language of this run
s = f.settings
store = f.store
st.title(t("settings.title"))
flash = st.session_state.pop("settings_flash", None)
if flash:
    st.success(flash, icon=":material/check_circle:")

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

# --- the experiment editor ---------------------------------------------------------------------

NEW = ""
#: Arms offered in the editor (any other valid key can be typed in).
ARM_CHOICES = [
    f"{channel}/{delay}m/{discount}%"
    for channel in ARM_CHANNELS
    for delay in (30, 60, 120, 240, 720, 1440, 4320)
    for discount in (0, 5, 10, 15, 20)
]
TOUCHES: list[int | None] = [None, 1, 2, 3]


def _weights(text: str) -> dict[str, float] | None:
    text = text.strip()
    if not text:
        return None
    try:
        return {k.strip(): float(v) for k, v in (pair.rsplit("=", 1) for pair in text.split(","))}
    except ValueError:
        raise lifecycle.ExperimentError(t("editor.bad_weights", text=text)) from None


def experiment_editor() -> None:
    st.subheader(t("settings.experiments"))
    rows = {r.name: r for r in data.experiments(f.url, store.id)}
    editing = st.selectbox(
        t("editor.pick"),
        options=[NEW, *rows],
        format_func=lambda n: (
            tr("editor.new") if n == NEW else f"{n} ({tr(f'status.{rows[n].status}')})"
        ),
        key="edit_experiment",
    )
    row = rows.get(editing)
    if st.session_state.get("editor_for") != editing:
        # Another experiment: its own values, not the last one's.
        for key in [k for k in st.session_state if str(k).startswith("ed_")]:
            del st.session_state[key]
        st.session_state["editor_for"] = editing
    if row is None:
        spec = lifecycle.Spec(name="", arms=["email/60m/0%", "email/1440m/0%"])
        st.caption(t("editor.intro"))
    else:
        spec = data.experiment_spec(f.url, store.id, row.name)
    if row is not None and row.status == ExperimentStatus.STOPPED:
        st.info(t("editor.stopped", name=row.name), icon=":material/lock:")
        return
    locked = row is not None and row.status != ExperimentStatus.DRAFT
    if locked:
        st.info(
            t("editor.locked", name=editing, status=t(f"status.{row.status}")),  # type: ignore[union-attr]
            icon=":material/lock:",
        )
    with st.form("experiment_form"):
        name = st.text_input(t("editor.name"), value=spec.name, disabled=locked, key="ed_name")
        mode = st.radio(
            t("editor.mode"),
            options=list(lifecycle.MODES),
            index=list(lifecycle.MODES).index(spec.mode),
            format_func=lambda m: tr(f"editor.mode.{m}"),
            horizontal=True,
            disabled=locked,
            key="ed_mode",
        )
        arms = st.multiselect(
            t("editor.arms"),
            options=list(dict.fromkeys([*ARM_CHOICES, *spec.arms])),
            default=list(spec.arms),
            accept_new_options=True,
            help=t("editor.arms.help"),
            disabled=locked,
            key="ed_arms",
        )
        weights = st.text_input(
            t("editor.weights"),
            value=", ".join(f"{k}={v:g}" for k, v in (spec.weights or {}).items()),
            help=t("editor.weights.help"),
            disabled=locked,
            key="ed_weights",
        )
        left, mid, right = st.columns(3)
        holdout = left.number_input(
            t("editor.holdout"),
            value=spec.holdout_share,
            step=0.01,
            format="%.2f",
            help=t("editor.holdout.help"),
            disabled=locked,
            key="ed_holdout",
        )
        window = mid.number_input(
            t("editor.window"),
            value=spec.attribution_window_days,
            step=1.0,
            disabled=locked,
            key="ed_window",
        )
        touch = right.selectbox(
            t("editor.touch"),
            options=TOUCHES,
            index=TOUCHES.index(spec.touch) if spec.touch in TOUCHES else 0,
            format_func=lambda n: (
                tr("experiments.every_touch") if n is None else tr("experiments.touch_n", n=n)
            ),
            disabled=locked,
            key="ed_touch",
        )
        margin = left.number_input(
            t("editor.margin"),
            value=spec.margin_rate,
            step=0.05,
            format="%.2f",
            disabled=locked,
            key="ed_margin",
        )
        st.markdown(f"**{t('editor.guardrails')}**")
        left, mid, right = st.columns(3)
        max_discount = left.number_input(
            t("editor.max_discount"),
            value=spec.max_discount_pct,
            step=5.0,
            placeholder=t("editor.unlimited"),
            key="ed_max_discount",
        )
        max_touches = mid.number_input(
            t("editor.max_touches"), value=spec.max_touches, step=1, key="ed_max_touches"
        )
        sms_budget = right.number_input(
            t("editor.sms_budget"),
            value=spec.daily_sms_budget,
            step=1,
            placeholder=t("editor.unlimited"),
            key="ed_sms_budget",
        )
        submitted = st.form_submit_button(
            t("editor.create") if row is None else t("editor.save"),
            type="primary",
            key="ed_submit",
        )
    if not submitted:
        return
    try:
        new = lifecycle.Spec(
            name=name.strip(),
            arms=list(arms),
            mode=str(mode),
            holdout_share=float(holdout),
            attribution_window_days=float(window),
            touch=touch,
            weights=_weights(weights) if mode == "ab" else None,
            max_discount_pct=None if max_discount is None else float(max_discount),
            max_touches=int(max_touches),
            daily_sms_budget=None if sms_budget is None else int(sms_budget),
            margin_rate=float(margin),
            seed=spec.seed if row is not None else None,
        )
        data.save_experiment(f.url, store.id, row.name if row is not None else None, new)
    except lifecycle.ExperimentError as exc:
        st.error(t("editor.invalid", reason=exc))
        return
    st.session_state["settings_flash"] = (
        t("editor.created", name=new.name) if row is None else t("editor.saved", name=new.name)
    )
    st.session_state.pop("edit_experiment", None)
    st.rerun()


experiment_editor()

# --- messaging rules -------------------------------------------------------------------------

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


def rules_editor() -> None:
    """Quiet hours and frequency caps; what differs from the country's preset is stored."""
    quiet_on = rules.quiet_start is not None and rules.quiet_end is not None
    with st.expander(t("rules.edit"), icon=":material/edit:"), st.form("rules_form"):
        on = st.checkbox(t("rules.quiet_on"), value=quiet_on, key="rules_quiet_on")
        left, right = st.columns(2)
        start = left.time_input(
            t("rules.quiet_start"), value=rules.quiet_start or time(21, 0), key="rules_start"
        )
        end = right.time_input(
            t("rules.quiet_end"), value=rules.quiet_end or time(8, 0), key="rules_end"
        )
        night = st.checkbox(
            t("r.night_consent"), value=rules.night_consent_lifts_quiet, key="rules_night"
        )
        left, right = st.columns(2)
        sms = left.number_input(
            t("r.sms_per_day"),
            value=rules.sms_per_day,
            min_value=0,
            step=1,
            placeholder=t("editor.unlimited"),
            help=t("rules.caps_help"),
            key="rules_sms",
        )
        week = right.number_input(
            t("r.per_week"),
            value=rules.messages_per_week,
            min_value=0,
            step=1,
            placeholder=t("editor.unlimited"),
            help=t("rules.caps_help"),
            key="rules_week",
        )
        saved = st.form_submit_button(t("rules.save"), key="rules_save", type="primary")
        reset = st.form_submit_button(t("rules.reset"), key="rules_reset")
    if not (saved or reset):
        return
    overrides: dict[str, Any] = (
        {}
        if reset
        else {
            "quiet_start": start if on else None,
            "quiet_end": end if on else None,
            "night_consent_lifts_quiet": night,
            "sms_per_day": None if sms is None else int(sms),
            "messages_per_week": None if week is None else int(week),
        }
    )
    try:
        data.save_rules(f.url, store.id, store.country, overrides)
    except (ValueError, TypeError) as exc:
        st.error(t("rules.invalid", reason=exc))
        return
    st.session_state["settings_flash"] = t("rules.saved")
    st.rerun()


rules_editor()

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
