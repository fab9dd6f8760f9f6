"""Messages: recent sends, failures and suppressions, the queue and the workers."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import context, data
from ui import format as fmt
from ui.i18n import t

f = context.filters()
cur = f.currency
s = f.settings
st.title(t("messages.title"))

st.subheader(t("messages.queue"))
q = data.queue_health(s.redis_url, str(s.data_dir.resolve()), s.redis_namespace)
if not q.available:
    st.warning(t("q.unavailable", error=q.error), icon=":material/cloud_off:")
else:
    c = st.columns(6)
    c[0].metric(t("q.ready"), fmt.count(q.ready))
    c[1].metric(t("q.in_progress"), fmt.count(q.in_progress))
    c[2].metric(t("q.delayed"), fmt.count(q.delayed))
    c[3].metric(t("q.dead"), fmt.count(q.dead))
    c[4].metric(t("q.workers"), fmt.count(q.live_brokers), help=t("q.workers.help"))
    c[5].metric(
        t("q.heartbeat"),
        "—" if q.last_heartbeat_s is None else t("seconds_ago", s=q.last_heartbeat_s),
    )
    if q.live_brokers == 0:
        st.warning(t("q.no_workers"), icon=":material/warning:")
    else:
        sweep = t("yes") if q.sweeping else t("no")
        st.success(f"{t('q.healthy')} {t('q.sweeping')}: {sweep}", icon=":material/check_circle:")


def _money(column: pd.Series) -> pd.Series:
    return column.map(lambda x: fmt.money(float(x or 0), cur))


by_status = data.messages_by_status(f.url, f.store.id, f.start, f.end)
if by_status.empty:
    st.info(t("empty.no_messages"), icon=":material/mail:")
else:
    st.subheader(t("messages.by_status"))
    st.dataframe(
        pd.DataFrame(
            {
                t("col.channel"): by_status["channel"],
                t("col.status"): by_status["status"],
                t("col.messages"): by_status["messages"],
                t("col.cost"): _money(by_status["cost"]),
                t("col.opened"): by_status["opened"],
                t("col.clicked"): by_status["clicked"],
            }
        ),
        hide_index=True,
        width="stretch",
    )
    st.subheader(t("messages.recent"))
    recent = data.recent_messages(f.url, f.store.id, f.start, f.end)
    st.dataframe(
        pd.DataFrame(
            {
                t("col.sent_at"): recent["created_at"],
                t("col.channel"): recent["channel"],
                t("col.recipient"): recent["recipient"],
                t("col.touch"): recent["touch"],
                t("col.arm"): recent["arm_key"],
                t("col.status"): recent["status"],
                t("col.delivery"): recent["delivery_status"],
                t("col.cost"): _money(recent["cost"]),
                t("col.opens"): recent["opens"],
                t("col.clicks"): recent["clicks"],
            }
        ),
        hide_index=True,
        width="stretch",
    )

left, right = st.columns(2)
with left:
    st.subheader(t("messages.failures"))
    failed = data.failures(f.url, f.store.id, f.start, f.end)
    if failed.empty:
        st.caption(t("messages.no_failures"))
    else:
        st.dataframe(
            pd.DataFrame(
                {
                    t("col.channel"): failed["channel"],
                    t("col.reason"): failed["reason"],
                    t("col.error_kind"): failed["error_kind"],
                    t("col.messages"): failed["messages"],
                    t("col.example"): failed["example"],
                    t("col.last"): failed["last"],
                }
            ),
            hide_index=True,
            width="stretch",
        )
    st.subheader(t("messages.skipped"))
    skipped = data.skipped(f.url, f.store.id, f.start, f.end)
    if not skipped.empty:
        st.dataframe(
            skipped.rename(
                columns={
                    "state": t("col.state"),
                    "reason": t("col.reason"),
                    "touches": t("col.touches"),
                }
            ),
            hide_index=True,
            width="stretch",
        )
with right:
    st.subheader(t("messages.suppressions"))
    counts, latest = data.suppressions(f.url, f.store.id, f.start, f.end)
    if counts.empty:
        st.caption(t("messages.no_suppressions"))
    else:
        st.dataframe(
            counts.rename(
                columns={
                    "channel": t("col.channel"),
                    "reason": t("col.reason"),
                    "addresses": t("col.addresses"),
                }
            ),
            hide_index=True,
            width="stretch",
        )
        st.dataframe(
            latest.rename(
                columns={
                    "created_at": t("col.created"),
                    "channel": t("col.channel"),
                    "address": t("col.address"),
                    "reason": t("col.reason"),
                }
            ),
            hide_index=True,
            width="stretch",
        )
