"""Per-arm statistics, lift and SRM: golden values, invariants, hypothesis-drawn seeds, and
coverage of the 95% intervals over thousands of seeded simulated experiments.

Tolerance for coverage: over R independent runs, the observed coverage of an exactly-95%
interval has standard deviation sqrt(0.95 * 0.05 / R). With R = 4000 that is 0.0034, so the
99.9% band (z = 3.29) is 0.95 +/- 0.011 = [0.939, 0.961], well inside the asserted [0.93, 0.97]
(which leaves room for the intervals' own approximation error). With a fixed seed the test is
deterministic; the band says a different seed would pass too.
"""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.stats import (
    ArmTotals,
    Outcomes,
    arm_summary,
    arm_summary_from_totals,
    difference_interval,
    lift_from_totals,
    lift_vs_holdout,
    srm_check,
    t_interval,
    tally,
    wilson_interval,
)
from tests.experiments.sim import Arm, simulate_cells

R_COVERAGE = 4000


def random_outcomes(seed: int, n: int = 400, arms: int = 3, days: int = 1) -> Outcomes:
    """Decisions over ``arms`` arms (the last is the holdout) with made-up economics."""
    rng = np.random.default_rng(seed)
    keys = np.array([f"email/{60 * (i + 1)}m/0%" for i in range(arms - 1)] + ["holdout"])
    arm = keys[rng.integers(0, arms, n)]
    p = rng.uniform(0.02, 0.3, arms)[np.searchsorted(np.sort(keys), arm)]
    conv = rng.random(n) < p
    revenue = np.where(conv, rng.gamma(2.0, 40.0, n), 0.0)
    sent = arm != "holdout"
    return Outcomes.from_sequences(
        arm=arm,
        converted=conv,
        revenue=revenue,
        discount_cost=revenue * 0.05,
        message_cost=np.where(sent, 0.01, 0.0),
        propensity=np.full(n, 1.0 / arms),
        segment=rng.choice(np.array(["new", "returning"]), n),
        day=rng.integers(0, days, n),
    )


# --------------------------------------------------------------------------------------------
# Golden values (hand calculations in the comments)


def test_wilson_golden_values() -> None:
    # 10/100, z = 1.959964: center (0.1 + z^2/200) / (1 + z^2/100) = 0.114796,
    # half z sqrt(0.1 * 0.9 / 100 + z^2 / 40000) / (1 + z^2/100) = 0.059568
    lo, hi = wilson_interval(10, 100)
    assert float(lo) == pytest.approx(0.05523, abs=5e-6)
    assert float(hi) == pytest.approx(0.17437, abs=5e-6)
    # 0/10: the lower bound is 0 and the upper z^2 / (n + z^2) = 3.841459 / 13.841459
    lo, hi = wilson_interval(0, 10)
    assert float(lo) == pytest.approx(0.0, abs=1e-12)
    assert float(hi) == pytest.approx(0.27753, abs=5e-6)
    # no trials: undefined, not an exception
    assert np.isnan(wilson_interval(0, 0)[0])


def test_t_interval_golden_value() -> None:
    # mean 1, variance 4, n 16: 1 +/- t(15, 0.975) * 2 / 4 = 1 +/- 2.131450 * 0.5
    lo, hi = t_interval(1.0, 4.0, 16)
    assert float(lo) == pytest.approx(-0.06572, abs=5e-6)
    assert float(hi) == pytest.approx(2.06572, abs=5e-6)


def test_relative_lift_delta_method_golden_value() -> None:
    # m_T 0.12, m_C 0.10, V_T 1e-4, V_C 4e-5: r = 0.2,
    # Var(r) = 1e-4 / 0.01 + 0.0144 * 4e-5 / 1e-4 = 0.01 + 0.00576 = 0.01576
    d, d_lo, d_hi, r, r_lo, r_hi = difference_interval(0.12, 1e-4, 0.10, 4e-5)
    z = 1.959964
    assert float(d) == pytest.approx(0.02, abs=1e-12)
    assert float(d_hi - d) == pytest.approx(z * math.sqrt(1.4e-4), abs=5e-6)
    assert float(r) == pytest.approx(0.2, abs=1e-12)
    assert float(r_hi - r) == pytest.approx(z * math.sqrt(0.01576), abs=5e-6)
    assert float(r_lo) == pytest.approx(0.2 - 0.24605, abs=5e-5)
    # a non-positive baseline has no relative lift
    assert np.isnan(difference_interval(0.1, 1e-4, 0.0, 1e-4)[3])


def test_tally_golden_values() -> None:
    o = Outcomes.from_sequences(
        arm=["sms/30m/10%", "sms/30m/10%", "sms/30m/10%", "holdout"],
        converted=[True, False, True, False],
        revenue=[100.0, 0.0, 50.0, 0.0],
        discount_cost=[10.0, 0.0, 5.0, 0.0],
        message_cost=[0.03, 0.03, 0.0, 0.0],
        sent=[True, True, False, False],  # the third touch was voided: the cart bought first
    )
    t = tally(o, margin_rate=0.4)["sms/30m/10%"]
    # profits: 40 - 10 - 0.03 = 29.97, -0.03, 20 - 5 = 15
    assert (t.carts, t.sends, t.conversions) == (3, 2, 2)
    assert t.profit == pytest.approx(44.94, abs=1e-12)
    assert t.profit_sq == pytest.approx(29.97**2 + 0.03**2 + 15**2, abs=1e-9)
    assert t.discount_cost == pytest.approx(15.0)
    assert t.profit_var == pytest.approx(np.var([29.97, -0.03, 15.0], ddof=1), abs=1e-9)


def test_prob_best_matches_the_exact_two_arm_integral() -> None:
    # P(X > Y), X ~ Beta(13, 89), Y ~ Beta(9, 93): integrate f_X(x) F_Y(x) dx
    totals = {"a": ArmTotals(carts=100, conversions=12), "b": ArmTotals(carts=100, conversions=8)}
    exact, _ = scipy.integrate.quad(
        lambda x: scipy.stats.beta.pdf(x, 13, 89) * scipy.stats.beta.cdf(x, 9, 93), 0, 1
    )
    n_draws = 200_000
    s = arm_summary_from_totals(totals, rng=np.random.default_rng(3), n_draws=n_draws)
    # Monte Carlo standard error sqrt(p (1 - p) / n_draws) ~ 0.0008; allow 5 of them
    assert s[0].prob_best_conversion == pytest.approx(exact, abs=5 * 0.0008)
    # E[max(X, Y) - X] = E[(Y - X)+]: check the same way, by integrating over the difference
    draws = np.random.default_rng(4).beta([[13], [9]], [[89], [93]], size=(2, n_draws))
    assert s[0].expected_loss_conversion == pytest.approx(
        float(np.maximum(draws[1] - draws[0], 0).mean()), abs=3e-4
    )


def test_srm_golden_values() -> None:
    # 52/48 on 100k: chi2 = 2 * 2000^2 / 50000 = 160, p ~ 1e-36
    r = srm_check([52_000, 48_000], [0.5, 0.5])
    assert r.chi2 == pytest.approx(160.0)
    assert r.flagged and r.p_value is not None and r.p_value < 1e-30
    # a fair split, 50 050 / 49 950: chi2 = 2 * 50^2 / 50 000 = 0.1, p = P(chi2_1 > 0.1) = 0.75183
    r = srm_check({"a": 50_050, "holdout": 49_950}, {"a": 0.5, "holdout": 0.5})
    assert r.p_value == pytest.approx(0.75183, abs=5e-6)
    assert not r.flagged
    # holdout vs rest with a 10% holdout share
    assert srm_check([9_000, 91_000], [0.1, 0.9]).flagged
    assert not srm_check([10_040, 89_960], [0.1, 0.9]).flagged


def test_srm_false_flag_rate_on_fair_splits() -> None:
    # Given 20 000 fair three-way splits of 30 000 units with weights 0.2/0.3/0.5
    rng = np.random.default_rng(11)
    counts = rng.multinomial(30_000, [0.2, 0.3, 0.5], size=20_000)
    # When each is checked
    flagged = np.array([srm_check(c.tolist(), [0.2, 0.3, 0.5]).flagged for c in counts[:2000]])
    p = scipy.stats.chisquare(counts, 30_000 * np.array([0.2, 0.3, 0.5]), axis=1).pvalue
    # Then about 1 in 1000 is flagged. Binomial(20 000, 0.001): mean 20, sd 4.5; a rate at or
    # under 0.0025 (mean + 6.7 sd) is what the threshold promises.
    assert (p < 0.001).mean() <= 0.0025
    assert flagged.mean() == pytest.approx((p[:2000] < 0.001).mean())


# --------------------------------------------------------------------------------------------
# Invariants


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), arms=st.integers(2, 5))
def test_arm_summary_invariants(seed: int, arms: int) -> None:
    o = random_outcomes(seed, n=300, arms=arms)
    s = arm_summary(o, margin_rate=0.35, rng=np.random.default_rng(seed), n_draws=2000)
    assert sum(a.carts for a in s) == len(o)
    pb_c = [a.prob_best_conversion for a in s if a.prob_best_conversion is not None]
    pb_p = [a.prob_best_profit for a in s if a.prob_best_profit is not None]
    assert sum(pb_c) == pytest.approx(1.0) and sum(pb_p) == pytest.approx(1.0)
    for a in s:
        assert a.sends <= a.carts and a.conversions <= a.carts
        assert a.expected_loss_conversion is None or a.expected_loss_conversion >= 0
        assert a.expected_loss_profit is None or a.expected_loss_profit >= 0
        if a.conversion_rate is not None:
            cr = a.conversion_rate
            assert 0 <= cr.low <= cr.value <= cr.high <= 1
        if a.profit_per_cart is not None:
            assert a.profit_per_cart.contains(a.profit_per_cart.value)
        assert a.profit == pytest.approx(
            a.revenue * 0.35 - a.discount_cost - a.message_cost, abs=1e-6
        )


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cut=st.floats(0.05, 0.95))
def test_pooling_is_addition(seed: int, cut: float) -> None:
    o = random_outcomes(seed, n=200)
    first = np.arange(len(o)) < int(cut * len(o))
    whole = tally(o, margin_rate=0.3)
    a, b = tally(o.select(first), margin_rate=0.3), tally(o.select(~first), margin_rate=0.3)
    for arm, t in whole.items():
        pooled = a.get(arm, ArmTotals()) + b.get(arm, ArmTotals())
        assert (pooled.carts, pooled.sends, pooled.conversions) == (
            t.carts,
            t.sends,
            t.conversions,
        )
        assert pooled.profit == pytest.approx(t.profit)
        assert pooled.profit_sq == pytest.approx(t.profit_sq)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), days=st.integers(1, 12))
def test_always_valid_p_is_monotone_and_daily_lift_matches_pooled(seed: int, days: int) -> None:
    o = random_outcomes(seed, n=1500, days=days)
    res = lift_vs_holdout(o, treatment="email/60m/0%", margin_rate=0.35)
    assert o.day is not None
    assert res.looks == len(np.unique(o.day))
    for m in (res.conversion, res.profit_per_cart):
        assert m is not None
        hist = np.array(m.always_valid_p_history)
        assert np.all(np.diff(hist) <= 0) and 0 <= hist[-1] <= 1
        assert m.always_valid_p == hist[-1]
        assert m.absolute.contains(m.absolute.value)
        assert m.confidence_sequence.low <= m.confidence_sequence.high
    # the fixed-horizon numbers depend only on the pooled data, not on how it was split
    one_look = lift_vs_holdout(
        Outcomes.from_sequences(
            arm=o.arm,
            converted=o.converted,
            revenue=o.revenue,
            discount_cost=o.discount_cost,
            message_cost=o.message_cost,
        ),
        treatment="email/60m/0%",
        margin_rate=0.35,
    )
    assert one_look.conversion is not None and res.conversion is not None
    assert one_look.conversion.absolute == res.conversion.absolute
    assert one_look.profit_per_cart is not None and res.profit_per_cart is not None
    assert one_look.profit_per_cart.absolute.value == pytest.approx(
        res.profit_per_cart.absolute.value
    )


# --------------------------------------------------------------------------------------------
# Expected failures come back as data; programmer errors raise ValueError naming the parameter


def test_no_data_and_zero_variance_are_messages() -> None:
    empty = Outcomes.from_sequences(arm=[], converted=[], revenue=[])
    assert arm_summary(empty, margin_rate=0.3, rng=np.random.default_rng(0)) == []
    s = arm_summary(empty, margin_rate=0.3, rng=np.random.default_rng(0), arms=["a", "holdout"])
    assert [a.message for a in s] == ["no data yet", "no data yet"]
    assert s[0].conversion_rate is None and s[0].prob_best_conversion is None

    flat = Outcomes.from_sequences(
        arm=["a"] * 5 + ["holdout"] * 5, converted=[False] * 10, revenue=[0.0] * 10
    )
    s = arm_summary(flat, margin_rate=0.3, rng=np.random.default_rng(0))
    assert s[0].message is not None and "zero variance" in s[0].message
    assert s[0].prob_best_profit == pytest.approx(0.5)  # a tie is shared, not handed to one
    lift = lift_vs_holdout(flat, treatment="a", margin_rate=0.3)
    assert lift.message is not None and "zero variance" in lift.message
    assert lift.conversion is not None and lift.conversion.always_valid_p == 1.0

    no_holdout = lift_vs_holdout(flat.select(flat.arm == "a"), treatment="a", margin_rate=0.3)
    assert no_holdout.conversion is None and no_holdout.message == "no data yet for the holdout"
    assert lift_from_totals([], []).message is not None
    assert srm_check([0, 0], [0.5, 0.5]).message == "no data yet"
    assert srm_check([5, 3], [1.0, 0.0]).flagged


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: wilson_interval(1, 10, alpha=1.5), "alpha"),
        (lambda: srm_check([1, 2], [0.5]), "expected_weights"),
        (lambda: srm_check([1, -2], [0.5, 0.5]), "observed_counts"),
        (lambda: srm_check([1, 2], [-0.5, 1.5]), "expected_weights"),
        (lambda: Outcomes.from_sequences(arm=["a"], converted=[True], revenue=[-1.0]), "revenue"),
        (lambda: Outcomes.from_sequences(arm=["a"], converted=[False], revenue=[5.0]), "revenue"),
        (
            lambda: Outcomes.from_sequences(arm=["a", "b"], converted=[True], revenue=[1.0]),
            "converted",
        ),
        (
            lambda: Outcomes.from_sequences(
                arm=["a"], converted=[False], revenue=[0.0], propensity=[0.0]
            ),
            "propensity",
        ),
        (lambda: random_outcomes(0).profit(1.5), "margin_rate"),
        (
            lambda: Outcomes.from_sequences(arm=["a"], converted=[False], revenue=[0.0]).in_days(0),
            "day",
        ),
        (lambda: lift_from_totals([ArmTotals()], [], treatment="a"), "treatment_looks"),
        (lambda: lift_from_totals([ArmTotals()], [ArmTotals()], tau2_profit=0.0), "tau2_profit"),
        (
            lambda: arm_summary(
                random_outcomes(0), margin_rate=0.3, rng=np.random.default_rng(0), n_draws=0
            ),
            "n_draws",
        ),
    ],
)
def test_programmer_errors_name_the_parameter(call: object, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()  # type: ignore[operator]


def test_days_accept_dates() -> None:
    o = Outcomes.from_sequences(
        arm=["a", "holdout", "a"],
        converted=[False, False, True],
        revenue=[0.0, 0.0, 10.0],
        day=[date(2025, 3, 1), date(2025, 3, 2), date(2025, 3, 9)],
    )
    assert len(o.in_days(date(2025, 3, 1), date(2025, 3, 2))) == 2
    assert len(o.in_days(start=date(2025, 3, 2))) == 2


# --------------------------------------------------------------------------------------------
# Coverage of the 95% intervals (see the module docstring for the band)


def _covers(lo: np.ndarray, hi: np.ndarray, truth: float) -> float:
    return float(np.mean((lo <= truth) & (truth <= hi)))


def test_coverage_of_conversion_and_profit_per_cart_intervals() -> None:
    # Given 4000 arms of 2000 carts, 6% conversion, skewed order values, a message cost
    arm = Arm(p=0.06, discount_rate=0.05, message_cost=0.01)
    cells = simulate_cells(np.random.default_rng(20250101), arm, (R_COVERAGE,), 2000)
    # When each gets its Wilson and t intervals
    lo, hi = wilson_interval(cells.conversions, cells.carts)
    mean, var_mean = cells.profit_mean_var()
    p_lo, p_hi = t_interval(mean, var_mean * cells.carts, cells.carts)
    # Then about 95% of them cover the truth
    conv_cov, prof_cov = _covers(lo, hi, arm.p), _covers(p_lo, p_hi, arm.profit_mean)
    assert 0.93 <= conv_cov <= 0.97, conv_cov
    assert 0.93 <= prof_cov <= 0.97, prof_cov


def test_coverage_of_lift_intervals() -> None:
    # Given 4000 experiments: treatment 7.5% with a 10% discount, holdout 5%, 3000 carts each
    rng = np.random.default_rng(7)
    treat = Arm(p=0.075, discount_rate=0.10, message_cost=0.03)
    hold = Arm(p=0.05)
    t = simulate_cells(rng, treat, (R_COVERAGE,), 3000)
    c = simulate_cells(rng, hold, (R_COVERAGE,), 3000)
    covs = {}
    for name, (mt, vt), (mc, vc), truth_t, truth_c in [
        ("conversion", t.conversion_mean_var(), c.conversion_mean_var(), treat.p, hold.p),
        ("profit", t.profit_mean_var(), c.profit_mean_var(), treat.profit_mean, hold.profit_mean),
    ]:
        # When each gets its absolute and relative (delta-method) intervals
        d, d_lo, d_hi, r, r_lo, r_hi = difference_interval(mt, vt, mc, vc)
        covs[name] = _covers(d_lo, d_hi, truth_t - truth_c)
        covs[name + "_relative"] = _covers(r_lo, r_hi, truth_t / truth_c - 1)
    # Then each covers the true lift about 95% of the time
    for name, cov in covs.items():
        assert 0.93 <= cov <= 0.97, (name, cov)


def test_lift_from_totals_agrees_with_the_vectorised_primitives() -> None:
    # The coverage tests exercise the primitives; this ties them to the API the wiring calls.
    rng = np.random.default_rng(5)
    t = simulate_cells(rng, Arm(p=0.08, message_cost=0.01), (1, 7), 300)
    c = simulate_cells(rng, Arm(p=0.05), (1, 7), 300)

    def looks(cells: object) -> list[ArmTotals]:
        return [
            ArmTotals(
                carts=int(cells.carts[0, i]),  # type: ignore[attr-defined]
                conversions=int(cells.conversions[0, i]),  # type: ignore[attr-defined]
                profit=float(cells.profit[0, i]),  # type: ignore[attr-defined]
                profit_sq=float(cells.profit_sq[0, i]),  # type: ignore[attr-defined]
            )
            for i in range(7)
        ]

    res = lift_from_totals(looks(t), looks(c), treatment="email")
    tc, cc = t.cumsum(), c.cumsum()
    mt, vt = tc.profit_mean_var()
    mc, vc = cc.profit_mean_var()
    d, lo, hi, *_ = difference_interval(mt[0, -1], vt[0, -1], mc[0, -1], vc[0, -1])
    assert res.profit_per_cart is not None
    assert res.profit_per_cart.absolute.low == pytest.approx(float(lo))
    assert res.profit_per_cart.absolute.high == pytest.approx(float(hi))
