"""Always-valid inference: golden values, the GrowthBook equivalence, and A/A experiments under
daily peeking.

Tolerance for the A/A false-positive rate: over R = 2000 experiments, an observed rate of a
test whose true rate is 5% has sd sqrt(0.05 * 0.95 / 2000) = 0.0049. The mixture bound of
Ville's inequality is loose, so the true rate of the always-valid test is far below 5% (about
2% here); the assertion ``<= 0.05`` then sits more than 6 sd above it. The naive test's true
rate with 30 looks is about 25-30% (Armitage et al. 1969), so ``> 0.10`` has the same margin.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from experiments.sequential import (
    always_valid_p_values,
    confidence_sequence,
    default_tau2,
    msprt_log_lr,
    tuned_rho2,
)
from experiments.stats import ArmTotals, lift_from_totals
from tests.experiments.sim import Arm, CellTotals, simulate_cells

R, DAYS, CARTS_PER_DAY = 2000, 30, 200


def test_msprt_golden_values() -> None:
    # d = 0.02, V = 1e-4, tau^2 = 1e-4: Lambda = sqrt(1/2) * exp(4e-4 * 1e-4 / (2e-4 * 2e-4))
    # = 0.707107 * e = 1.922116, so p = 0.520260
    assert float(np.exp(msprt_log_lr(np.array(0.02), np.array(1e-4), 1e-4))) == pytest.approx(
        1.922116, abs=5e-6
    )
    assert float(always_valid_p_values(np.array([0.02]), np.array([1e-4]), 1e-4)[0]) == (
        pytest.approx(0.52026, abs=5e-6)
    )
    # confidence sequence half width sqrt(V (V + tau^2) / tau^2 (2 log 20 + log 2)) = 0.036564
    lo, hi = confidence_sequence(np.array([0.02]), np.array([1e-4]), 1e-4)
    assert float(hi[0] - 0.02) == pytest.approx(0.036564, abs=5e-6)
    assert float(0.02 - lo[0]) == pytest.approx(0.036564, abs=5e-6)
    # no usable variance: no evidence, whole line
    assert always_valid_p_values(np.array([0.5]), np.array([0.0]), 1.0)[0] == 1.0
    assert np.isinf(confidence_sequence(np.array([0.5]), np.array([np.nan]), 1.0)[0][0])


def test_default_mixture_is_growthbooks_asymptotic_confidence_sequence() -> None:
    # GrowthBook: d +/- sigma sqrt(2 (N rho^2 + 1) / (N^2 rho^2) log(sqrt(N rho^2 + 1) / alpha))
    n = np.array([100.0, 1000.0, 5000.0, 40000.0])
    sigma2 = 2.5
    var = sigma2 / n
    rho2 = tuned_rho2(5000, 0.05)
    lo, hi = confidence_sequence(np.zeros(4), var, default_tau2(var, n, tuning_n=5000, alpha=0.05))
    gb = np.sqrt(sigma2 * 2 * (n * rho2 + 1) / (n**2 * rho2) * np.log(np.sqrt(n * rho2 + 1) / 0.05))
    # the bounds intersect over looks, and these are non-increasing already
    np.testing.assert_allclose(hi, gb, rtol=1e-12)
    np.testing.assert_allclose(lo, -gb, rtol=1e-12)


def _daily_looks(rng: np.random.Generator, treat: Arm, hold: Arm) -> tuple[CellTotals, CellTotals]:
    t = simulate_cells(rng, treat, (R, DAYS), CARTS_PER_DAY)
    c = simulate_cells(rng, hold, (R, DAYS), CARTS_PER_DAY)
    return t, c


def _sequential(t: CellTotals, c: CellTotals, metric: str) -> tuple[np.ndarray, ...]:
    tc, cc = t.cumsum(), c.cumsum()
    if metric == "conversion":
        (mt, vt), (mc, vc) = tc.conversion_mean_var(), cc.conversion_mean_var()
    else:
        (mt, vt), (mc, vc) = tc.profit_mean_var(), cc.profit_mean_var()
    d, v = mt - mc, vt + vc
    tau2 = default_tau2(v, tc.carts + cc.carts, tuning_n=5000, alpha=0.05)
    p_av = always_valid_p_values(d, v, tau2)
    lo, hi = confidence_sequence(d, v, tau2)
    p_naive = 2 * scipy.stats.norm.sf(np.abs(d) / np.sqrt(v))
    return d, p_av, lo, hi, p_naive


@pytest.mark.parametrize("metric", ["conversion", "profit"])
def test_aa_daily_peeking_keeps_false_positives_under_5_percent(metric: str) -> None:
    # Given 2000 A/A experiments, 30 daily looks of 200 carts per arm, 6% conversion
    arm = Arm(p=0.06, message_cost=0.01)
    t, c = _daily_looks(np.random.default_rng(2024 + len(metric)), arm, arm)
    # When a team looks every day and stops at the first p < 0.05
    _, p_av, lo, hi, p_naive = _sequential(t, c, metric)
    fpr_always_valid = float((p_av < 0.05).any(axis=1).mean())
    fpr_naive = float((p_naive < 0.05).any(axis=1).mean())
    # Then the always-valid test rejects in at most 5% of them ...
    assert fpr_always_valid <= 0.05, fpr_always_valid
    # ... and the confidence sequence covers 0 at every look in at least 95% of them
    assert float(((lo <= 0) & (hi >= 0)).all(axis=1).mean()) >= 0.95
    # ... while the naive fixed-horizon test, peeked at daily, does not (the test has teeth)
    assert fpr_naive > 0.10, fpr_naive
    # ... though at a single planned look it is fine (~5%)
    assert float((p_naive[:, -1] < 0.05).mean()) <= 0.065


def test_confidence_sequence_covers_a_real_lift_at_every_look() -> None:
    # Given a real effect: 6% -> 7.5% conversion with a discount
    treat, hold = Arm(p=0.075, discount_rate=0.1, message_cost=0.03), Arm(p=0.06)
    t, c = _daily_looks(np.random.default_rng(99), treat, hold)
    for metric, truth in [
        ("conversion", treat.p - hold.p),
        ("profit", treat.profit_mean - hold.profit_mean),
    ]:
        d, p_av, lo, hi, _ = _sequential(t, c, metric)
        # Then the sequence holds the truth at all 30 looks in >= 95% of experiments
        cover_all = float(((lo <= truth) & (truth <= hi)).all(axis=1).mean())
        assert cover_all >= 0.95, (metric, cover_all)
        if metric == "conversion":
            # and the always-valid test finds the conversion lift in most experiments by day
            # 30 (6000 carts per arm; power of a fixed test there is ~0.8)
            assert float((p_av[:, -1] < 0.05).mean()) > 0.5


def test_lift_from_totals_reproduces_the_vectorised_sequence() -> None:
    # The A/A test runs the primitives on arrays; the API the wiring calls must agree with it.
    arm = Arm(p=0.06, message_cost=0.01)
    rng = np.random.default_rng(8)
    t = simulate_cells(rng, arm, (3, DAYS), CARTS_PER_DAY)
    c = simulate_cells(rng, arm, (3, DAYS), CARTS_PER_DAY)
    _, p_av, lo, hi, _ = _sequential(t, c, "profit")
    for e in range(3):

        def looks(cells: CellTotals, e: int = e) -> list[ArmTotals]:
            return [
                ArmTotals(
                    carts=int(cells.carts[e, i]),
                    conversions=int(cells.conversions[e, i]),
                    profit=float(cells.profit[e, i]),
                    profit_sq=float(cells.profit_sq[e, i]),
                )
                for i in range(DAYS)
            ]

        res = lift_from_totals(looks(t), looks(c), treatment="a", control="b")
        assert res.profit_per_cart is not None and res.looks == DAYS
        np.testing.assert_allclose(res.profit_per_cart.always_valid_p_history, p_av[e], rtol=1e-9)
        assert res.profit_per_cart.confidence_sequence.low == pytest.approx(lo[e, -1])
        assert res.profit_per_cart.confidence_sequence.high == pytest.approx(hi[e, -1])


def test_tau2_parameter_changes_where_the_sequence_is_tight() -> None:
    # The sequence is tightest where V is near tau^2 (times a log factor): a mixture for small
    # effects (small tau^2) pays early and is tighter late, when V has shrunk; a wide one the
    # other way round.
    v = 1e-4 / np.array([1.0, 100.0])
    narrow = confidence_sequence(np.zeros(2), v, 1e-6)[1]
    wide = confidence_sequence(np.zeros(2), v, 1e-2)[1]
    assert narrow[0] > wide[0]
    assert narrow[1] < wide[1]
    assert math.isclose(tuned_rho2(5000) * 5000, tuned_rho2(100) * 100)
    with pytest.raises(ValueError, match="tuning_n"):
        tuned_rho2(0)
    with pytest.raises(ValueError, match="alpha"):
        confidence_sequence(np.zeros(1), np.ones(1), 1.0, alpha=0.0)
