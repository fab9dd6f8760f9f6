"""Every label of the dashboard in English and Korean. ``t("key")`` in the chosen language.

Keys are grouped by page. A key missing in Korean falls back to English, a key missing in
both shows itself (so a typo is visible, never an exception).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

LANGUAGES = {"en": "English", "ko": "한국어"}
DEFAULT = "en"

LABELS: dict[str, dict[str, str]] = {
    # app and sidebar
    "app.title": {"en": "Nudge", "ko": "Nudge"},
    "nav.overview": {"en": "Overview", "ko": "개요"},
    "nav.experiments": {"en": "Experiments", "ko": "실험"},
    "nav.segments": {"en": "Segments", "ko": "세그먼트"},
    "nav.messages": {"en": "Messages", "ko": "메시지"},
    "nav.settings": {"en": "Settings", "ko": "설정"},
    "side.language": {"en": "Language", "ko": "언어"},
    "side.store": {"en": "Store", "ko": "스토어"},
    "side.dates": {"en": "Date range (UTC)", "ko": "기간 (UTC)"},
    "side.refresh": {"en": "Refresh data", "ko": "데이터 새로고침"},
    "side.pick_end": {"en": "Pick the end date too.", "ko": "종료일도 선택하세요."},
    "side.refreshing": {"en": "Recomputing the figures…", "ko": "수치를 다시 계산하는 중…"},
    "side.as_of": {
        "en": "Figures as of {time}; recomputed every few minutes.",
        "ko": "{time} 기준 수치이며 몇 분마다 다시 계산됩니다.",
    },
    "empty.no_store": {
        "en": 'No store yet — create one with `nudge store create "My Shop"` and point your '
        "storefront at the API, or run `nudge demo` to see the dashboard with simulated "
        "shoppers.",
        "ko": '아직 스토어가 없습니다 — `nudge store create "My Shop"`으로 만들고 스토어프런트를 '
        "API에 연결하거나, `nudge demo`로 시뮬레이션 고객과 함께 대시보드를 확인하세요.",
    },
    "empty.no_carts": {
        "en": "No abandoned carts in this date range — widen the range in the sidebar, or check "
        "that your storefront posts cart events (API docs at /docs).",
        "ko": "이 기간에 이탈한 장바구니가 없습니다 — 사이드바에서 기간을 넓히거나, "
        "스토어프런트가 장바구니 이벤트를 보내는지 확인하세요 (API 문서: /docs).",
    },
    "empty.no_messages": {
        "en": "No messages in this date range. Touches go out after a cart is abandoned; "
        "check that `nudge worker` is running.",
        "ko": "이 기간에 보낸 메시지가 없습니다. 장바구니 이탈 후 메시지가 발송됩니다; "
        "`nudge worker`가 실행 중인지 확인하세요.",
    },
    "app.migrate": {
        "en": "The database's schema is older than this dashboard: run `nudge migrate`, then "
        "reload.",
        "ko": "데이터베이스 스키마가 이 대시보드보다 오래되었습니다: `nudge migrate`를 실행한 뒤 "
        "새로고침하세요.",
    },
    # auth
    "auth.title": {"en": "Nudge dashboard", "ko": "Nudge 대시보드"},
    "auth.password": {"en": "Password", "ko": "비밀번호"},
    "auth.submit": {"en": "Unlock", "ko": "잠금 해제"},
    "auth.wrong": {"en": "Wrong password.", "ko": "비밀번호가 틀렸습니다."},
    "auth.prompt": {
        "en": "This dashboard is protected. Enter the password (NUDGE_UI_PASSWORD).",
        "ko": "보호된 대시보드입니다. 비밀번호(NUDGE_UI_PASSWORD)를 입력하세요.",
    },
    "auth.required": {
        "en": "This dashboard is reachable from other machines ({address}) but has no "
        "password: set NUDGE_UI_PASSWORD and restart it, or bind it to 127.0.0.1.",
        "ko": "이 대시보드는 다른 컴퓨터에서 접근할 수 있지만({address}) 비밀번호가 없습니다: "
        "NUDGE_UI_PASSWORD를 설정하고 다시 시작하거나 127.0.0.1에 바인딩하세요.",
    },
    "auth.logout": {"en": "Lock", "ko": "잠그기"},
    # overview
    "overview.title": {"en": "Overview", "ko": "개요"},
    "m.abandoned": {"en": "Abandoned carts", "ko": "이탈 장바구니"},
    "m.abandoned.help": {
        "en": "Carts whose latest abandonment falls in the range.",
        "ko": "마지막 이탈 시각이 기간 안에 있는 장바구니.",
    },
    "m.reached": {"en": "Carts reached", "ko": "도달한 장바구니"},
    "m.reached.help": {
        "en": "Journeys (abandonments) with at least one message that went out.",
        "ko": "메시지가 한 번 이상 발송된 여정(이탈) 수.",
    },
    "m.recovered": {"en": "Recovered", "ko": "회수"},
    "m.recovered.help": {
        "en": "Orders after a message went out, counted once per journey — what other "
        "recovery tools report. Many would have bought anyway: see the incremental figures.",
        "ko": "메시지 발송 후 들어온 주문(여정당 한 번). 다른 도구들이 보고하는 수치이며, "
        "상당수는 메시지 없이도 구매했을 것입니다: 증분 수치를 보세요.",
    },
    "m.recovered_revenue": {"en": "Recovered revenue", "ko": "회수 매출"},
    "m.inc_orders": {"en": "Incremental orders", "ko": "증분 주문"},
    "m.inc_revenue": {"en": "Incremental revenue", "ko": "증분 매출"},
    "m.inc_profit": {"en": "Incremental profit", "ko": "증분 이익"},
    "m.roi": {"en": "ROI", "ko": "ROI"},
    "m.roi.help": {
        "en": "Incremental profit ÷ (discount + message cost). Undefined when nothing was spent.",
        "ko": "증분 이익 ÷ (할인 + 메시지 비용). 지출이 없으면 정의되지 않습니다.",
    },
    "m.spend": {"en": "Spend", "ko": "지출"},
    "m.spend.help": {
        "en": "Message cost plus discounts given on orders.",
        "ko": "메시지 비용과 주문에 적용된 할인의 합.",
    },
    "m.interval": {"en": "95% interval: {low} … {high}", "ko": "95% 구간: {low} … {high}"},
    "overview.holdout_note": {
        "en": "Incremental = treated vs holdout (send nothing): {treated} treated journeys "
        "converted at {t_rate}, {holdout} holdout journeys at {h_rate}. Valid when the holdout "
        "is assigned at random; the default schedule holds out only customers it cannot reach.",
        "ko": "증분 = 처치군 대 홀드아웃(미발송): 처치 여정 {treated}개의 전환율 {t_rate}, "
        "홀드아웃 여정 {holdout}개의 전환율 {h_rate}. 홀드아웃이 무작위로 배정될 때 유효합니다; "
        "기본 일정은 연락할 수 없는 고객만 홀드아웃합니다.",
    },
    "overview.note": {
        "en": "Note: {reason}.",
        "ko": "참고: {reason}.",
    },
    "overview.no_spend": {
        "en": "Nothing spent yet: these messages cost nothing and no discount was redeemed.",
        "ko": "아직 지출이 없습니다: 메시지 비용이 없고 사용된 할인도 없습니다.",
    },
    "overview.funnel": {"en": "Funnel", "ko": "퍼널"},
    "overview.trend": {"en": "Daily trend", "ko": "일별 추이"},
    "overview.spend": {"en": "Spend by channel", "ko": "채널별 지출"},
    "funnel.abandoned": {"en": "Abandoned", "ko": "이탈"},
    "funnel.messaged": {"en": "Messaged", "ko": "메시지 발송"},
    "funnel.opened": {"en": "Opened", "ko": "열람"},
    "funnel.clicked": {"en": "Clicked", "ko": "클릭"},
    "funnel.ordered": {"en": "Ordered", "ko": "주문"},
    "col.step": {"en": "Step", "ko": "단계"},
    "col.journeys": {"en": "Journeys", "ko": "여정"},
    "col.day": {"en": "Day", "ko": "날짜"},
    "col.count": {"en": "Count", "ko": "건수"},
    "col.series": {"en": "Series", "ko": "항목"},
    "col.channel": {"en": "Channel", "ko": "채널"},
    "col.status": {"en": "Status", "ko": "상태"},
    "col.sends": {"en": "Sends", "ko": "발송"},
    "col.messages": {"en": "Messages", "ko": "메시지"},
    "col.cost": {"en": "Cost", "ko": "비용"},
    "col.message_cost": {"en": "Message cost", "ko": "메시지 비용"},
    "col.discount_cost": {"en": "Discounts", "ko": "할인"},
    "col.kind": {"en": "Kind", "ko": "종류"},
    "col.amount": {"en": "Amount", "ko": "금액"},
    "col.opened": {"en": "Opened", "ko": "열람"},
    "col.clicked": {"en": "Clicked", "ko": "클릭"},
    "col.opens": {"en": "Opens", "ko": "열람 수"},
    "col.clicks": {"en": "Clicks", "ko": "클릭 수"},
    "col.sent_at": {"en": "Created", "ko": "생성 시각"},
    "col.recipient": {"en": "Recipient", "ko": "수신자"},
    "col.touch": {"en": "Touch", "ko": "회차"},
    "col.arm": {"en": "Arm", "ko": "암"},
    "col.delivery": {"en": "Delivery", "ko": "전달 상태"},
    "col.error": {"en": "Error", "ko": "오류"},
    "col.reason": {"en": "Reason", "ko": "사유"},
    "col.error_kind": {"en": "Kind", "ko": "종류"},
    "col.example": {"en": "Example", "ko": "예시"},
    "col.last": {"en": "Last", "ko": "최근"},
    "col.state": {"en": "State", "ko": "상태"},
    "col.touches": {"en": "Touches", "ko": "터치"},
    "col.addresses": {"en": "Addresses", "ko": "주소 수"},
    "col.address": {"en": "Address", "ko": "주소"},
    "col.created": {"en": "Since", "ko": "등록 시각"},
    "col.segment": {"en": "Segment", "ko": "세그먼트"},
    "col.treated": {"en": "Treated", "ko": "처치"},
    "col.holdout": {"en": "Holdout", "ko": "홀드아웃"},
    "col.treated_rate": {"en": "Treated conv.", "ko": "처치 전환율"},
    "col.holdout_rate": {"en": "Holdout conv.", "ko": "홀드아웃 전환율"},
    "col.recovered": {"en": "Recovered", "ko": "회수"},
    "col.recovered_revenue": {"en": "Recovered revenue", "ko": "회수 매출"},
    "col.inc_orders": {"en": "Incr. orders", "ko": "증분 주문"},
    "col.inc_profit": {"en": "Incr. profit", "ko": "증분 이익"},
    "col.preferred": {"en": "Arm chosen most", "ko": "가장 많이 선택된 암"},
    "col.share": {"en": "Share", "ko": "비중"},
    "col.rate": {"en": "Conversion", "ko": "전환율"},
    "col.rate_ci": {"en": "95% interval", "ko": "95% 구간"},
    "col.carts": {"en": "Carts", "ko": "장바구니"},
    "col.conversions": {"en": "Conversions", "ko": "전환"},
    "col.profit_per_cart": {"en": "Profit / cart", "ko": "장바구니당 이익"},
    "col.prob_best": {"en": "P(best)", "ko": "최고일 확률"},
    "col.expected_loss": {"en": "Expected loss", "ko": "기대 손실"},
    "col.setting": {"en": "Setting", "ko": "항목"},
    "col.value": {"en": "Value", "ko": "값"},
    "col.variables": {"en": "Variables", "ko": "환경 변수"},
    "col.configured": {"en": "Configured", "ko": "설정됨"},
    # experiments
    "experiments.title": {"en": "Experiments", "ko": "실험"},
    "experiments.empty": {
        "en": "No experiments yet — create one in Settings (experiment editor) or with "
        "`nudge experiment create …`, then start it. Until then the store's policy decides "
        "alone; the arms it used are below.",
        "ko": "아직 실험이 없습니다 — 설정의 실험 편집기나 `nudge experiment create …`로 만든 "
        "뒤 시작하세요. 그때까지는 스토어의 정책이 단독으로 결정하며, 사용된 암은 아래와 같습니다.",
    },
    "experiments.arms": {"en": "Arms in use", "ko": "사용 중인 암"},
    "experiments.arms_note": {
        "en": "Per decision (touch), as experiments.stats counts them; intervals are Wilson.",
        "ko": "결정(터치) 단위이며 experiments.stats 기준입니다; 구간은 Wilson 구간입니다.",
    },
    "experiments.no_decisions": {
        "en": "No decisions in this date range yet.",
        "ko": "이 기간에 아직 결정이 없습니다.",
    },
    "experiments.list": {"en": "All experiments", "ko": "전체 실험"},
    "experiments.pick": {"en": "Experiment", "ko": "실험"},
    "experiments.head": {
        "en": "{mode} · holdout {holdout} · attribution window {window:g} days · {touch} · "
        "started {started}",
        "ko": "{mode} · 홀드아웃 {holdout} · 기여 기간 {window:g}일 · {touch} · 시작 {started}",
    },
    "experiments.every_touch": {"en": "every touch", "ko": "모든 터치"},
    "experiments.touch_n": {"en": "touch {n}", "ko": "{n}회차 터치"},
    "experiments.not_started": {"en": "not yet", "ko": "아직 안 함"},
    "experiments.winner": {
        "en": "Promoted: **{arm}** is the store's default.",
        "ko": "승격됨: **{arm}**이(가) 스토어의 기본값입니다.",
    },
    "experiments.no_decisions_yet": {
        "en": "This experiment has not decided any touch yet. Start it (above) and make sure "
        "`nudge worker` is running; decisions appear as carts are abandoned.",
        "ko": "이 실험은 아직 결정한 터치가 없습니다. 위에서 시작하고 `nudge worker`가 실행 "
        "중인지 확인하세요; 장바구니가 이탈하면 결정이 나타납니다.",
    },
    "experiments.no_outcomes": {
        "en": "{decisions} touches decided, none with a final outcome yet: an outcome is final "
        "when the cart orders or its {days:g}-day attribution window closes. Come back then.",
        "ko": "{decisions}개 터치가 결정되었지만 아직 확정된 결과가 없습니다: 장바구니가 "
        "주문되거나 {days:g}일 기여 기간이 끝나면 확정됩니다.",
    },
    "exp.srm": {
        "en": "Sample ratio mismatch: the holdout has {observed} of the carts, {expected} "
        "expected (p = {p}). Assignment or logging is broken — do not trust this "
        "experiment's lift until it is fixed.",
        "ko": "표본 비율 불일치: 홀드아웃이 장바구니의 {observed}를 차지합니다 (기대 {expected}, "
        "p = {p}). 배정이나 기록에 문제가 있으니 고칠 때까지 이 실험의 상승효과를 믿지 마세요.",
    },
    "exp.srm_ab": {
        "en": "Sample ratio mismatch between the A/B arms (p = {p}): the split is not the "
        "configured weights. Check assignment and logging before reading the results.",
        "ko": "A/B 암 사이 표본 비율 불일치 (p = {p}): 설정한 가중치와 다르게 나뉘었습니다. "
        "결과를 보기 전에 배정과 기록을 확인하세요.",
    },
    "exp.srm_ok": {
        "en": "Holdout split as configured (sample ratio check p = {p}).",
        "ko": "홀드아웃 비율이 설정대로입니다 (표본 비율 검정 p = {p}).",
    },
    "exp.arms": {"en": "Arms", "ko": "암"},
    "exp.arms_note": {
        "en": "Per decision (touch) with a final outcome. 'holdout' is the persistent holdout "
        "(never messaged); 'send-nothing' is the bandit choosing to send nothing. Conversion "
        "intervals are Wilson 95%, profit intervals Student-t 95%; P(best) and expected loss "
        "are on profit per cart.",
        "ko": "확정된 결과가 있는 결정(터치) 단위. 'holdout'은 영구 홀드아웃(발송 안 함), "
        "'send-nothing'은 밴딧이 발송하지 않기로 한 선택입니다. 전환율 구간은 Wilson 95%, 이익 "
        "구간은 Student-t 95%이며, 최고일 확률과 기대 손실은 장바구니당 이익 기준입니다.",
    },
    "exp.posterior": {"en": "Posterior per arm", "ko": "암별 사후분포"},
    "exp.metric": {"en": "Metric", "ko": "지표"},
    "exp.metric.profit": {"en": "Profit per cart", "ko": "장바구니당 이익"},
    "exp.metric.conversion": {"en": "Conversion", "ko": "전환율"},
    "exp.traffic": {"en": "Traffic share over time", "ko": "시간별 트래픽 비중"},
    "exp.traffic_note": {
        "en": "Every decision per day, including those still waiting for their outcome.",
        "ko": "일별 모든 결정 (결과를 기다리는 결정 포함).",
    },
    "exp.incremental": {
        "en": "Cumulative incremental profit vs the holdout",
        "ko": "홀드아웃 대비 누적 증분 이익",
    },
    "exp.incremental_note": {
        "en": "Light band: the always-valid 95% confidence sequence (safe to look at daily); "
        "darker band: the 95% interval valid for one planned look.",
        "ko": "옅은 띠: 언제 봐도 유효한 95% 신뢰 수열; 진한 띠: 한 번의 계획된 확인에만 "
        "유효한 95% 구간.",
    },
    "exp.sequential": {"en": "Sequential test", "ko": "순차 검정"},
    "exp.sequential_note": {
        "en": "Always-valid p-value (mSPRT) of profit per cart against the holdout, at each "
        "daily look: it stays valid however often you look. Below {alpha} the difference is "
        "significant.",
        "ko": "매일 확인한 홀드아웃 대비 장바구니당 이익의 항상 유효한 p-값(mSPRT): 얼마나 "
        "자주 보든 유효합니다. {alpha} 미만이면 차이가 유의합니다.",
    },
    "exp.ope": {
        "en": "Off-policy estimates: profit per cart of always choosing one arm",
        "ko": "오프폴리시 추정: 한 암만 계속 고를 때의 장바구니당 이익",
    },
    "exp.ope_note": {
        "en": "Self-normalised IPS on the logged propensities corrects the bias of the bandit's "
        "adaptive allocation (raw means favour arms it sent where they looked good). ESS: how "
        "many on-policy decisions the reweighted log is worth.",
        "ko": "기록된 선택 확률로 자기정규화 IPS를 적용해 밴딧의 적응적 배분 편향을 보정합니다. "
        "ESS: 재가중된 기록이 온폴리시 결정 몇 건에 해당하는지.",
    },
    "exp.roi": {"en": "ROI in the selected dates", "ko": "선택 기간의 ROI"},
    "exp.roi_note": {
        "en": "By decision day in the sidebar's range; the statistics above cover the whole "
        "experiment. Same numbers as `nudge experiment report {name} --since … --until …`.",
        "ko": "사이드바 기간의 결정일 기준이며, 위의 통계는 실험 전체를 다룹니다. "
        "`nudge experiment report {name} --since … --until …`와 같은 수치입니다.",
    },
    "exp.actions_note": {
        "en": "Each action asks for confirmation.",
        "ko": "모든 작업은 확인을 거칩니다.",
    },
    "act.start": {"en": "Start", "ko": "시작"},
    "act.pause": {"en": "Pause", "ko": "일시정지"},
    "act.stop": {"en": "Stop", "ko": "종료"},
    "act.promote": {"en": "Promote winner", "ko": "승자 승격"},
    "confirm.start": {
        "en": "Start **{name}**? It decides its touches from now on.",
        "ko": "**{name}**을(를) 시작할까요? 지금부터 터치를 결정합니다.",
    },
    "confirm.pause": {
        "en": "Pause **{name}**? Its touches go back to the store's default until you start it "
        "again.",
        "ko": "**{name}**을(를) 일시정지할까요? 다시 시작할 때까지 터치는 스토어 기본값을 "
        "따릅니다.",
    },
    "confirm.stop": {
        "en": "Stop **{name}** for good? A stopped experiment cannot be started again.",
        "ko": "**{name}**을(를) 완전히 종료할까요? 종료한 실험은 다시 시작할 수 없습니다.",
    },
    "confirm.promote": {
        "en": "Promote **{arm}** and end **{name}**? The arm becomes the store's default for "
        "first touches, and the experiment stops for good.",
        "ko": "**{arm}**을(를) 승격하고 **{name}**을(를) 끝낼까요? 이 암이 첫 터치의 스토어 "
        "기본값이 되고 실험은 완전히 종료됩니다.",
    },
    "confirm.yes": {"en": "Confirm", "ko": "확인"},
    "confirm.no": {"en": "Cancel", "ko": "취소"},
    "promote.arm": {"en": "Arm to promote", "ko": "승격할 암"},
    "promote.best": {"en": "{arm} (most likely best)", "ko": "{arm} (최고일 가능성 가장 높음)"},
    "act.done": {"en": "{name} is now {status}.", "ko": "{name}: 이제 {status} 상태입니다."},
    "act.promoted": {
        "en": "{arm} is now the store's default; {name} is stopped.",
        "ko": "{arm}이(가) 이제 스토어 기본값이며 {name}은(는) 종료되었습니다.",
    },
    "status.draft": {"en": "draft", "ko": "초안"},
    "status.running": {"en": "running", "ko": "실행 중"},
    "status.paused": {"en": "paused", "ko": "일시정지"},
    "status.stopped": {"en": "stopped", "ko": "종료"},
    "mode.bandit": {"en": "bandit", "ko": "밴딧"},
    "mode.ab": {"en": "A/B", "ko": "A/B"},
    "m.decisions": {"en": "Decisions", "ko": "결정"},
    "m.decisions.help": {
        "en": "Touches the experiment decided; 'with outcome' have a final one.",
        "ko": "실험이 결정한 터치; '결과 확정'은 결과가 확정된 터치입니다.",
    },
    "m.resolved": {"en": "With outcome", "ko": "결과 확정"},
    "m.exp_inc_profit": {"en": "Incremental profit", "ko": "증분 이익"},
    "m.cs": {"en": "always-valid 95%: {low} … {high}", "ko": "항상 유효 95%: {low} … {high}"},
    "m.avp": {"en": "Always-valid p", "ko": "항상 유효 p"},
    "m.avp.help": {
        "en": "Profit per cart of every treated arm against the holdout (mSPRT); valid at "
        "every daily look.",
        "ko": "홀드아웃 대비 처치 암 전체의 장바구니당 이익 (mSPRT); 매일 확인해도 유효합니다.",
    },
    "m.best": {"en": "Most likely best", "ko": "최고일 가능성"},
    "col.experiment": {"en": "Experiment", "ko": "실험"},
    "col.mode": {"en": "Mode", "ko": "방식"},
    "col.arms": {"en": "Arms", "ko": "암"},
    "col.window": {"en": "Window (days)", "ko": "기여 기간 (일)"},
    "col.started": {"en": "Started", "ko": "시작"},
    "col.decisions": {"en": "Decisions", "ko": "결정"},
    "col.winner": {"en": "Winner", "ko": "승자"},
    "col.profit_ci": {"en": "Profit 95% interval", "ko": "이익 95% 구간"},
    "col.density": {"en": "Density", "ko": "밀도"},
    "col.traffic_share": {"en": "Share of decisions", "ko": "결정 비중"},
    "col.always_valid_p": {"en": "Always-valid p", "ko": "항상 유효 p"},
    "col.raw_mean": {"en": "Raw profit / cart", "ko": "단순 장바구니당 이익"},
    "col.ope_value": {"en": "If always chosen", "ko": "항상 선택 시"},
    "col.ess": {"en": "ESS", "ko": "유효 표본"},
    "col.group": {"en": "Group", "ko": "그룹"},
    "col.treated_carts": {"en": "Treated", "ko": "처치"},
    "col.holdout_carts": {"en": "Holdout", "ko": "홀드아웃"},
    "col.attributed_orders": {"en": "Attributed orders", "ko": "기여 주문"},
    "col.attributed_revenue": {"en": "Attributed revenue", "ko": "기여 매출"},
    "col.inc_revenue": {"en": "Incr. revenue", "ko": "증분 매출"},
    "col.roi": {"en": "ROI", "ko": "ROI"},
    "col.note": {"en": "Note", "ko": "비고"},
    "chart.interval_low": {"en": "95% low", "ko": "95% 하한"},
    "chart.interval_high": {"en": "95% high", "ko": "95% 상한"},
    "chart.cs_low": {"en": "always-valid low", "ko": "항상 유효 하한"},
    "chart.cs_high": {"en": "always-valid high", "ko": "항상 유효 상한"},
    # segments
    "segments.title": {"en": "Segments", "ko": "세그먼트"},
    "segments.dimension": {"en": "Break down by", "ko": "분류 기준"},
    "dim.device": {"en": "Device", "ko": "기기"},
    "dim.customer_type": {"en": "New / returning", "ko": "신규 / 재방문"},
    "dim.cart_value": {"en": "Cart value", "ko": "장바구니 금액"},
    "dim.checkout_stage": {"en": "Checkout stage", "ko": "결제 단계"},
    "dim.channel": {"en": "Channel", "ko": "채널"},
    "segments.note": {
        "en": "Each segment's treated journeys are compared with its own holdout (per channel: "
        "with the whole holdout). 'Arm chosen most' is what the policy picked for the first "
        "touch in the segment — for a running bandit, what it has learned pays there.",
        "ko": "각 세그먼트의 처치 여정은 같은 세그먼트의 홀드아웃과 비교합니다(채널별은 전체 "
        "홀드아웃과 비교). '가장 많이 선택된 암'은 정책이 그 세그먼트의 첫 터치에 고른 암이며, "
        "실행 중인 밴딧이라면 그곳에서 성과가 좋다고 학습한 암입니다.",
    },
    "segments.chart": {"en": "Conversion by segment", "ko": "세그먼트별 전환율"},
    # messages
    "messages.title": {"en": "Messages", "ko": "메시지"},
    "messages.queue": {"en": "Queue and workers", "ko": "큐와 워커"},
    "q.ready": {"en": "Ready", "ko": "대기"},
    "q.in_progress": {"en": "In progress", "ko": "처리 중"},
    "q.delayed": {"en": "Delayed", "ko": "지연 예약"},
    "q.dead": {"en": "Dead-lettered", "ko": "실패 보관"},
    "q.workers": {"en": "Live brokers", "ko": "활성 브로커"},
    "q.workers.help": {
        "en": "Processes that talked to the queue in the last 60 s (workers poll every second; "
        "the API only when it enqueues).",
        "ko": "최근 60초 동안 큐와 통신한 프로세스 (워커는 매초, API는 작업 추가 시).",
    },
    "q.heartbeat": {"en": "Last heartbeat", "ko": "최근 하트비트"},
    "q.sweeping": {"en": "Sweep leader active", "ko": "스윕 리더 활성"},
    "q.healthy": {"en": "Workers are running.", "ko": "워커가 실행 중입니다."},
    "q.no_workers": {
        "en": "No worker has polled the queue in the last minute — start one with `nudge worker`.",
        "ko": "최근 1분 동안 큐를 확인한 워커가 없습니다 — `nudge worker`로 시작하세요.",
    },
    "q.unavailable": {
        "en": "Queue not reachable ({error}). Set NUDGE_REDIS_URL, or start `nudge worker` "
        "(it starts the embedded Redis).",
        "ko": "큐에 연결할 수 없습니다 ({error}). NUDGE_REDIS_URL을 설정하거나 "
        "`nudge worker`를 시작하세요 (내장 Redis를 시작합니다).",
    },
    "messages.by_status": {"en": "By channel and status", "ko": "채널·상태별"},
    "messages.recent": {"en": "Recent sends", "ko": "최근 발송"},
    "messages.failures": {"en": "Failures", "ko": "실패"},
    "messages.no_failures": {
        "en": "No failed sends in this range.",
        "ko": "이 기간에 실패한 발송이 없습니다.",
    },
    "messages.skipped": {"en": "Touches not sent", "ko": "발송되지 않은 터치"},
    "messages.suppressions": {
        "en": "Suppressions (opt-outs, bounces)",
        "ko": "수신 차단 (수신거부, 반송)",
    },
    "messages.no_suppressions": {
        "en": "No address was suppressed in this range.",
        "ko": "이 기간에 차단된 주소가 없습니다.",
    },
    "yes": {"en": "yes", "ko": "예"},
    "no": {"en": "no", "ko": "아니요"},
    "seconds_ago": {"en": "{s:.0f} s ago", "ko": "{s:.0f}초 전"},
    # settings
    "settings.title": {"en": "Settings", "ko": "설정"},
    "settings.store": {"en": "Store", "ko": "스토어"},
    "settings.rules": {"en": "Messaging rules", "ko": "발송 규칙"},
    "settings.rules_note": {
        "en": "Country preset {country}{overrides}. Change them below.",
        "ko": "국가 기본값 {country}{overrides}. 아래에서 변경하세요.",
    },
    "settings.overrides": {"en": ", overridden: {keys}", "ko": ", 재정의: {keys}"},
    "settings.channels": {"en": "Channel credentials", "ko": "채널 자격 증명"},
    "settings.channels_note": {
        "en": "Which NUDGE_* settings are set — never their values.",
        "ko": "설정된 NUDGE_* 항목만 표시합니다 — 값은 절대 표시하지 않습니다.",
    },
    "settings.journey": {"en": "Journey and attribution", "ko": "여정과 기여"},
    "settings.experiments": {"en": "Experiment editor", "ko": "실험 편집기"},
    "editor.pick": {"en": "Experiment to edit", "ko": "편집할 실험"},
    "editor.new": {"en": "+ New experiment", "ko": "+ 새 실험"},
    "editor.intro": {
        "en": "A new experiment starts as a draft: start it on the Experiments page. One "
        "experiment runs per store and touch.",
        "ko": "새 실험은 초안으로 시작합니다: 실험 페이지에서 시작하세요. 스토어와 터치마다 하나의 "
        "실험만 실행됩니다.",
    },
    "editor.locked": {
        "en": "{name} is {status}: only its guardrails can change. Arms, split, holdout and "
        "window define what it measures — to change them, stop it and create a new one.",
        "ko": "{name}은(는) {status} 상태입니다: 가드레일만 바꿀 수 있습니다. 암, 비율, 홀드아웃, "
        "기여 기간을 바꾸려면 종료하고 새 실험을 만드세요.",
    },
    "editor.stopped": {
        "en": "{name} is stopped: it is final. Create a new experiment instead.",
        "ko": "{name}은(는) 종료되어 바꿀 수 없습니다. 새 실험을 만드세요.",
    },
    "editor.name": {"en": "Name", "ko": "이름"},
    "editor.mode": {"en": "Mode", "ko": "방식"},
    "editor.mode.bandit": {
        "en": "Bandit (Thompson sampling: traffic moves to what pays)",
        "ko": "밴딧 (톰슨 샘플링: 성과 좋은 암으로 트래픽 이동)",
    },
    "editor.mode.ab": {"en": "A/B (fixed split)", "ko": "A/B (고정 비율)"},
    "editor.arms": {"en": "Arms (channel/delay/discount)", "ko": "암 (채널/지연/할인)"},
    "editor.arms.help": {
        "en": "e.g. email/60m/0% = email one hour after abandonment, no discount. Type a key "
        "to add one that is not listed. Sending nothing is always an arm.",
        "ko": "예: email/60m/0% = 이탈 1시간 후 이메일, 할인 없음. 목록에 없는 키는 직접 "
        "입력하세요. '발송 안 함'은 항상 암에 포함됩니다.",
    },
    "editor.weights": {"en": "A/B weights", "ko": "A/B 가중치"},
    "editor.weights.help": {
        "en": "A/B only: arm=weight, separated by commas (e.g. email/60m/0%=3, sms/30m/0%=1); "
        "empty: an equal split.",
        "ko": "A/B 전용: 암=가중치를 쉼표로 구분 (예: email/60m/0%=3, sms/30m/0%=1); 비우면 균등.",
    },
    "editor.holdout": {"en": "Holdout share", "ko": "홀드아웃 비율"},
    "editor.holdout.help": {
        "en": "Customers never messaged, to measure what would have happened anyway (0 to 0.5).",
        "ko": "효과 측정을 위해 메시지를 보내지 않는 고객 비율 (0 이상 0.5 미만).",
    },
    "editor.window": {"en": "Attribution window (days)", "ko": "기여 기간 (일)"},
    "editor.touch": {"en": "Touch it decides", "ko": "결정하는 터치"},
    "editor.margin": {"en": "Gross margin of an order", "ko": "주문의 매출총이익률"},
    "editor.guardrails": {"en": "Guardrails", "ko": "가드레일"},
    "editor.max_discount": {"en": "Largest discount (%)", "ko": "최대 할인 (%)"},
    "editor.max_touches": {"en": "Touches per journey at most", "ko": "여정당 최대 터치"},
    "editor.sms_budget": {
        "en": "SMS/KakaoTalk touches per day at most",
        "ko": "하루 최대 SMS/알림톡 터치",
    },
    "editor.unlimited": {"en": "no limit", "ko": "제한 없음"},
    "editor.create": {"en": "Create draft", "ko": "초안 만들기"},
    "editor.save": {"en": "Save", "ko": "저장"},
    "editor.created": {
        "en": "Draft {name} created — start it on the Experiments page.",
        "ko": "초안 {name}을(를) 만들었습니다 — 실험 페이지에서 시작하세요.",
    },
    "editor.saved": {"en": "{name} saved.", "ko": "{name}을(를) 저장했습니다."},
    "editor.invalid": {"en": "Not saved: {reason}.", "ko": "저장하지 않음: {reason}."},
    "editor.bad_weights": {
        "en": "weights must be arm=number pairs separated by commas, not {text!r}",
        "ko": "가중치는 쉼표로 구분한 암=숫자 쌍이어야 합니다 ({text!r})",
    },
    "rules.edit": {"en": "Change the messaging rules", "ko": "발송 규칙 변경"},
    "rules.quiet_on": {"en": "Quiet hours", "ko": "야간 발송 제한"},
    "rules.quiet_start": {"en": "Quiet from (local)", "ko": "제한 시작 (현지)"},
    "rules.quiet_end": {"en": "Quiet until (local)", "ko": "제한 종료 (현지)"},
    "rules.caps_help": {"en": "Empty: no cap.", "ko": "비우면 제한 없음."},
    "rules.save": {"en": "Save rules", "ko": "규칙 저장"},
    "rules.reset": {"en": "Back to the country preset", "ko": "국가 기본값으로"},
    "rules.saved": {"en": "Messaging rules saved.", "ko": "발송 규칙을 저장했습니다."},
    "rules.invalid": {"en": "Not saved: {reason}.", "ko": "저장하지 않음: {reason}."},
    "r.quiet_hours": {"en": "Quiet hours (recipient's time)", "ko": "야간 발송 제한 (수신자 시간)"},
    "r.night_consent": {
        "en": "Night consent lifts quiet hours",
        "ko": "야간 수신 동의 시 제한 해제",
    },
    "r.sms_per_day": {"en": "SMS/KakaoTalk per customer per day", "ko": "고객당 하루 SMS/알림톡"},
    "r.per_week": {"en": "Messages per customer per week", "ko": "고객당 주간 메시지"},
    "r.prefix": {"en": "Advertising prefix", "ko": "광고 표기"},
    "r.opt_out": {"en": "Opt-out notice", "ko": "수신거부 안내"},
    "r.none": {"en": "none", "ko": "없음"},
    "s.name": {"en": "Name", "ko": "이름"},
    "s.country": {"en": "Country", "ko": "국가"},
    "s.currency": {"en": "Currency", "ko": "통화"},
    "s.abandon_after": {"en": "Abandoned after", "ko": "이탈 판정 시간"},
    "s.window": {"en": "Attribution window", "ko": "기여 기간"},
    "s.margin": {"en": "Margin (profit, ROI)", "ko": "마진 (이익, ROI)"},
    "s.time_scale": {"en": "Time scale", "ko": "시간 배율"},
    "s.password": {"en": "Dashboard password set", "ko": "대시보드 비밀번호 설정됨"},
    "minutes": {"en": "{n:g} min", "ko": "{n:g}분"},
    "days": {"en": "{n:g} days", "ko": "{n:g}일"},
    "ch.email": {"en": "Email (SMTP)", "ko": "이메일 (SMTP)"},
    "ch.sms": {"en": "SMS (Twilio)", "ko": "SMS (Twilio)"},
    "ch.push": {"en": "Web Push (VAPID)", "ko": "웹 푸시 (VAPID)"},
    "ch.kakao": {"en": "KakaoTalk AlimTalk", "ko": "카카오 알림톡"},
}


def language() -> str:
    lang = st.session_state.get("lang", DEFAULT)
    return lang if lang in LANGUAGES else DEFAULT


def t(key: str, /, **values: Any) -> str:
    """The label ``key`` in the session's language, formatted with ``values``."""
    return _label(language(), key, values)


def bound() -> Callable[..., str]:
    """:func:`t` fixed to the session's current language, for a widget's ``format_func``:
    Streamlit may format options again outside the script run (AppTest does), where the
    session's language is not at hand."""
    lang = language()
    return lambda key, /, **values: _label(lang, key, values)


def _label(lang: str, key: str, values: dict[str, Any]) -> str:
    entry = LABELS.get(key)
    if entry is None:
        return key
    text = entry.get(lang) or entry["en"]
    return text.format(**values) if values else text
