"""Golden values and closed forms: priors, the Laplace update, Lai-Robbins, path values."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize

from optimizer import Arm, Prior, ThompsonPolicy
from optimizer.bernoulli import bernoulli_kl, lai_robbins_bound
from optimizer.feedback import ConversionLag
from optimizer.scenario import load_scenario, path_values, segments_of
from optimizer.thompson import (
    NOISY_OR_PRIOR,
    _laplace_fit,
    _laplace_fit_nor,
    _newton,
    _steps_factor,
    laplace_update,
)
from tests.optimizer.world import ARMS, ECON, context


def test_logistic_prior_golden_values() -> None:
    policy = ThompsonPolicy(ARMS, ECON, seed=0, model="logistic")
    # logit(0.05) and the holdout's -send_lift, on the intercept row
    assert policy.mean[0, 0] == pytest.approx(-2.94444, abs=1e-5)
    assert policy.mean[0, 1] == pytest.approx(-0.3, abs=1e-12)
    prior = Prior()
    assert policy.precision[0, 0] == pytest.approx(1 / prior.sd_intercept**2)
    # Cold start: the posterior mean conversion of every message arm is the same, the holdout
    # lower by the prior send lift, with the prior variance folded in (probit approximation).
    p = policy.conversion_probability(context())
    assert p[-1] < p[0]
    assert p[0] == pytest.approx(p[2], abs=1e-12)


def test_noisy_or_prior_golden_values() -> None:
    policy = ThompsonPolicy(ARMS, ECON, seed=0)  # the default model
    assert policy.prior == NOISY_OR_PRIOR
    # The organic part's logit(0.05) and the message part's logit(0.02), on the intercept row
    assert policy.mean[0, 0] == pytest.approx(-2.94444, abs=1e-5)
    assert policy.mean[0, 1] == pytest.approx(-3.89182, abs=1e-5)
    # Cold start: every message arm converts 1 - 0.95 * 0.98, the holdout the organic 5 %
    p = policy.conversion_probability(context())
    assert p[-1] == pytest.approx(0.05, abs=1e-9)
    assert p[0] == pytest.approx(1 - 0.95 * 0.98, abs=1e-9)
    assert p[0] == pytest.approx(p[2], abs=1e-12)


def _small_noisy_or_problem(seed: int) -> tuple[np.ndarray, ...]:
    """(prior mean, prior precision, rows, patterns, arm_of, w_pos, w_neg) of 300 observations
    on 4 rows x 3 columns: column 0 the organic part, columns 1-2 the message part (pattern 2
    is the holdout arm, which has none), a diagonal Gaussian prior."""
    rng = np.random.default_rng(seed)
    n_rows, n_cols, n = 4, 3, 300
    mean = rng.normal(0, 0.3, (n_rows, n_cols))
    mean[0] = (-1.5, -2.0, 0.0)
    precision = np.diag(rng.uniform(1, 4, n_rows * n_cols))
    rows = np.stack([np.zeros(n, int), rng.integers(1, 4, n)], axis=1)
    patterns = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    arm_of = rng.integers(0, 3, n)
    w_pos = (rng.random(n) < 0.3).astype(float)
    return mean, precision, rows, patterns, arm_of, w_pos, 1 - w_pos


def test_noisy_or_update_matches_a_direct_map_fit() -> None:
    # Given a small noisy-OR problem: column 0 the organic part, columns 1-2 the message part
    # (pattern 2 is the holdout arm, which has none), a diagonal Gaussian prior, and weights
    # that include a provisional negative taken back (w_neg < 0)
    mean, precision, rows, patterns, arm_of, w_pos, w_neg = _small_noisy_or_problem(6)
    n_rows, n_cols = mean.shape
    n = rows.shape[0]
    w_neg[:10] = np.where(w_pos[:10] > 0, -0.4, 0.6)
    # When the Newton-Laplace update runs
    eta = precision @ mean.ravel()
    m, prec, _ = _laplace_fit_nor(
        mean, precision, eta, rows, patterns, arm_of, w_pos, w_neg, max_iter=100, tol=1e-14
    )

    def parts(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h = w.reshape(n_rows, n_cols)[rows].sum(axis=1)
        cols = patterns[arm_of]
        sent = cols.any(axis=1)
        return h[:, 0], np.einsum("ij,ij->i", h, cols), sent

    # Then its mean is the MAP of the noisy-OR likelihood found by a generic optimiser
    def loss(w: np.ndarray) -> float:
        u, v, sent = parts(w)
        q = (1 - 1 / (1 + np.exp(-u))) * np.where(sent, 1 - 1 / (1 + np.exp(-v)), 1.0)
        d = w - mean.ravel()
        return 0.5 * d @ precision @ d - np.sum(w_pos * np.log(1 - q) + w_neg * np.log(q))

    ref = scipy.optimize.minimize(loss, mean.ravel(), method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(m.ravel(), ref, atol=1e-5)
    # And its precision is the prior's plus the Fisher information at the MAP:
    # (dp/dtheta)^2 / (p (1 - p)) per unit of weight, with p = 1 - q
    u, v, sent = parts(m.ravel())
    su, sv = 1 / (1 + np.exp(-u)), np.where(sent, 1 / (1 + np.exp(-v)), 0.0)
    q = (1 - su) * (1 - sv)
    x = np.zeros((n, n_rows * n_cols))
    for k in range(n):
        for r in rows[k]:
            x[k, r * n_cols] += q[k] * su[k]
            x[k, r * n_cols : (r + 1) * n_cols] += q[k] * sv[k] * patterns[arm_of[k]]
    fisher = (w_pos + w_neg) / (q * (1 - q))
    np.testing.assert_allclose(prec, precision + x.T @ (x * fisher[:, None]), atol=1e-9)


def test_noisy_or_steps_are_newton_steps_on_the_observed_hessian() -> None:
    # Given a small noisy-OR problem (as above), its MAP, and a start near it
    mean, precision, rows, patterns, arm_of, w_pos, w_neg = _small_noisy_or_problem(8)
    n_rows, n_cols = mean.shape
    rng = np.random.default_rng(9)
    eta = precision @ mean.ravel()
    cols = patterns[arm_of]
    sent = cols.any(axis=1)

    def loss(w: np.ndarray) -> float:
        h = w.reshape(n_rows, n_cols)[rows].sum(axis=1)
        u, v = h[:, 0], np.einsum("ij,ij->i", h, cols)
        s = np.logaddexp(0, u) + np.where(sent, np.logaddexp(0, v), 0.0)
        return 0.5 * w @ precision @ w - eta @ w + np.sum(w_neg * s - w_pos * np.log(-np.expm1(-s)))

    ref = scipy.optimize.minimize(loss, mean.ravel(), method="BFGS", options={"gtol": 1e-10}).x
    start = ref + rng.normal(0, 0.2, ref.size)

    def fit(max_iter: int, observed: bool) -> np.ndarray:
        w, _, _ = _laplace_fit_nor(
            start.reshape(n_rows, n_cols),
            precision,
            eta,
            rows,
            patterns,
            arm_of,
            w_pos,
            w_neg,
            max_iter=max_iter,
            tol=0.0,
            observed_steps=observed,
        )
        return w.ravel()

    # When the fit takes one step from there, with the observed Hessian and with the Fisher
    # information
    observed, fisher = start - fit(1, True), start - fit(1, False)

    # Then the first is the Newton step of the loss, gradient and Hessian by central differences
    eye = np.eye(ref.size)
    h = 1e-3
    grad = np.array([(loss(start + 1e-6 * e) - loss(start - 1e-6 * e)) / 2e-6 for e in eye])
    hessian = np.array(
        [
            [
                (
                    loss(start + h * a + h * b)
                    - loss(start + h * a - h * b)
                    - loss(start - h * a + h * b)
                    + loss(start - h * a - h * b)
                )
                / (4 * h * h)
                for b in eye
            ]
            for a in eye
        ]
    )
    newton = np.linalg.solve(hessian, grad)
    np.testing.assert_allclose(observed, newton, atol=1e-5 * np.abs(newton).max())
    # And the Fisher step is another step, by far more than that tolerance
    assert np.abs(fisher - newton).max() > 100 * 1e-5 * np.abs(newton).max()

    # And, from there, the observed steps reach the MAP in fewer steps
    def steps_to_map(observed: bool) -> int:
        return next((k for k in range(1, 30) if np.abs(fit(k, observed) - ref).max() < 1e-6), 30)

    assert steps_to_map(True) < steps_to_map(False)


def test_newton_falls_back_to_the_hessian_where_the_step_matrix_is_not_positive_definite() -> None:
    # Given a quadratic objective, and step matrices that cannot be factored
    a = np.array([[3.0, 1.0], [1.0, 2.0]])
    b = np.array([1.0, -1.0])

    def objective(w: np.ndarray) -> float:
        return float(0.5 * w @ a @ w - b @ w)

    def solve(steps_at: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        w, hessian, _ = _newton(
            np.zeros(2), objective, lambda w: a @ w - b, lambda w: a, 10, 1e-14, steps_at=steps_at
        )
        np.testing.assert_allclose(hessian, a)
        return w

    # When Newton's method is asked to step with them, then it steps with the Hessian and
    # finds the minimiser all the same
    for bad in (-a, np.full((2, 2), np.nan), np.array([[1.0, 2.0], [2.0, 1.0]])):
        assert _steps_factor(np.zeros(2), lambda w, m=bad: m) is None
        np.testing.assert_allclose(solve(lambda w, m=bad: m), np.linalg.solve(a, b), atol=1e-12)
    assert _steps_factor(np.zeros(2), lambda w: a) is not None


@pytest.mark.parametrize("fit", [_laplace_fit, _laplace_fit_nor], ids=["logistic", "noisy_or"])
def test_a_refit_started_from_the_previous_posterior_lands_on_the_same_map(
    fit: object, calls_to: Callable[[Any, str], list[int]]
) -> None:
    # Given a posterior learned from 20,000 observations, and a new batch of 2,000
    rng = np.random.default_rng(12)
    n_rows, n_cols = 6, 4
    patterns = np.array([[1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    if fit is _laplace_fit_nor:
        patterns[:, 0] = 0.0  # column 0 is the organic part; pattern 2 is the holdout arm
    prior_mean = np.full((n_rows, n_cols), -0.5)
    prior_precision = np.eye(n_rows * n_cols)
    truth = rng.normal(-1.0, 0.7, (n_rows, n_cols))

    def batch(n: int) -> tuple[np.ndarray, ...]:
        rows = np.stack([np.zeros(n, int), rng.integers(1, 3, n), rng.integers(3, 6, n)], axis=1)
        arm_of = rng.integers(0, 3, n)
        z = np.einsum("kc,kc->k", truth[rows].sum(axis=1), patterns[arm_of])
        w_pos = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
        return rows, arm_of, w_pos, 1.0 - w_pos

    def run(mean: np.ndarray, precision: np.ndarray, data: tuple[np.ndarray, ...], **kw: object):
        rows, arm_of, w_pos, w_neg = data
        eta = precision @ mean.ravel()
        # Tight enough that the means agree far inside their posterior sds (above 0.01 here),
        # loose enough that steps stay above rounding in the objective (~1e-12).
        return fit(  # type: ignore[operator]
            mean,
            precision,
            eta,
            rows,
            patterns,
            arm_of,
            w_pos,
            w_neg,
            tol=1e-10,
            max_iter=100,
            **kw,
        )

    old_mean, old_precision, _ = run(prior_mean, prior_precision, batch(20_000))
    old_factor = scipy.linalg.cho_factor(old_precision, lower=True)[0]
    new = batch(2_000)
    factorisations = calls_to(scipy.linalg, "cho_factor")
    # When the batch is fitted from scratch, from the old posterior's factor, and from the
    # factor of a matrix far from the Hessian (the prior's, a thousandth of the data's)
    plain = run(old_mean, old_precision, new)
    plain_factorisations, factorisations[:] = len(factorisations), []
    chord = run(old_mean, old_precision, new, chord=old_factor)
    chord_factorisations, factorisations[:] = len(factorisations), []
    poor = run(old_mean, old_precision, new, chord=np.eye(n_rows * n_cols))
    # Then all land on the same MAP and the same posterior precision
    for other in (chord, poor):
        np.testing.assert_allclose(other[0], plain[0], atol=1e-5)
        np.testing.assert_allclose(other[1], plain[1], atol=1e-8 * np.abs(plain[1]).max())
    # And the close start factors no Hessian at all (the caller factors the posterior once,
    # for sampling), where Newton's method factored at least one
    assert plain_factorisations >= 1
    assert chord_factorisations == 0


def test_a_relevance_step_is_the_em_update_of_the_prior_scales() -> None:
    # Given a posterior in which the data has informed two groups of interactions (precision
    # 100 on each weight of the device and touch rows' channel columns, the "other" rows
    # left out): the device's flat at 0, the touch's far from 0 (2, against a prior sd of 0.6)
    policy = ThompsonPolicy(ARMS, ECON, seed=0, relevance=True)
    groups = {name: (rows, cols) for name, rows, cols in policy._relevance_groups}
    prior = policy.prior_precision.copy()
    data = np.zeros_like(prior)
    mean = policy.prior_mean.copy()
    for name, value in (("device x channel", 0.0), ("touch x channel", 2.0)):
        rows, cols = groups[name]
        block = np.ix_(rows[:-1], cols)  # the slot's last row is its "other" row
        data[block] = 100.0
        mean[block] = value
    precision = np.diag((prior + data).ravel())
    precision[0, 1] = precision[1, 0] = 0.5  # some correlation, for the mean's re-solve
    policy.mean, policy.precision = mean, precision.copy()
    # When one relevance step runs
    policy._learn_relevance(None)
    # Then the flat group's scale is the root of E[w^2] / sd^2 over its informed weights,
    # (0 + 1 / (1 / 0.6^2 + 100)) / 0.6^2, the far one's is capped at 1, the rest stay at 1
    scales = policy.relevance_scales
    expected = math.sqrt(1 / (1 / 0.36 + 100) / 0.36)
    assert scales["device x channel"] == pytest.approx(expected, rel=1e-9)
    assert expected < 0.2
    assert scales["touch x channel"] == 1.0
    assert {v for k, v in scales.items() if k != "device x channel"} == {1.0}
    # And the posterior moves to the new prior: the prior part of its precision is swapped
    # and its mean re-solved from the same evidence (the prior mean of those weights is 0)
    change = np.diag((policy.prior_precision - prior).ravel())
    np.testing.assert_allclose(policy.precision, precision + change, rtol=1e-12)
    np.testing.assert_allclose(
        policy.mean.ravel(),
        np.linalg.solve(precision + change, precision @ mean.ravel()),
        rtol=1e-9,
        atol=1e-12,
    )


def test_laplace_update_matches_a_direct_map_fit() -> None:
    # Given a small logistic problem with a diagonal Gaussian prior
    rng = np.random.default_rng(5)
    n_rows, n_cols, n = 4, 3, 200
    mean = rng.normal(0, 0.3, (n_rows, n_cols))
    precision = np.diag(rng.uniform(1, 4, n_rows * n_cols))
    rows = np.stack([np.zeros(n, int), rng.integers(1, 4, n)], axis=1)
    cols = np.zeros((n, n_cols))
    cols[:, 0] = 1
    cols[np.arange(n), rng.integers(1, 3, n)] = 1
    w_pos = (rng.random(n) < 0.3).astype(float)
    w_neg = 1 - w_pos
    # When the Newton-Laplace update runs
    m, prec = laplace_update(mean, precision, rows, cols, w_pos, w_neg)

    # Then its mean is the MAP found by a generic optimiser (to 5 decimals)
    def loss(w: np.ndarray) -> float:
        W = w.reshape(n_rows, n_cols)
        z = np.einsum("ij,ij->i", W[rows].sum(axis=1), cols)
        d = w - mean.ravel()
        return 0.5 * d @ precision @ d + np.sum(
            w_pos * np.logaddexp(0, -z) + w_neg * np.logaddexp(0, z)
        )

    ref = scipy.optimize.minimize(loss, mean.ravel(), method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(m.ravel(), ref, atol=1e-5)
    # And its precision is the prior's plus the Hessian at the MAP
    z = np.einsum("ij,ij->i", m[rows].sum(axis=1), cols)
    p = 1 / (1 + np.exp(-z))
    x = np.zeros((n, n_rows * n_cols))
    for k in range(n):
        for r in rows[k]:
            x[k, r * n_cols : (r + 1) * n_cols] += cols[k]
    np.testing.assert_allclose(prec, precision + x.T @ (x * (p * (1 - p))[:, None]), atol=1e-9)


def test_laplace_update_rejects_nonconvex_weights() -> None:
    with pytest.raises(ValueError, match="w_pos"):
        laplace_update(
            np.zeros((1, 1)),
            np.eye(1),
            np.zeros((1, 1), int),
            np.ones((1, 1)),
            np.zeros(1),
            -np.ones(1),
        )


def test_lai_robbins_golden_values() -> None:
    assert bernoulli_kl(0.4, 0.5) == pytest.approx(0.0201355, abs=1e-7)
    means = [0.5] + [0.4] * 9
    assert lai_robbins_bound(means, 1e6) == pytest.approx(
        9 * 0.1 / 0.0201355 * math.log(1e6), rel=1e-5
    )
    assert lai_robbins_bound(means, 1e6) == pytest.approx(617.51, abs=0.01)


def test_conversion_lag_prior_and_window() -> None:
    lag = ConversionLag(prior_mean_hours=12.0)
    share = lag.share_converted(np.array([0.0, 12.0, 200.0]), np.zeros(3), 168.0)
    # Exponential prior renormalised to the 168 h window: F(12 h) = (1 - e^-1) / (1 - e^-14)
    assert share[0] == pytest.approx(0.0, abs=1e-12)
    assert share[1] == pytest.approx(1 - math.exp(-1), abs=0.02)  # piecewise-linear bins
    assert share[2] == 1.0
    # A long delay shifts the curve: nothing is expected before the send
    late = lag.share_converted(np.array([10.0]), np.array([24.0]), 168.0)
    assert late[0] == pytest.approx(0.0, abs=1e-12)


def test_path_values_match_a_monte_carlo_of_the_generative_model() -> None:
    # Given a scenario, a segment and one three-touch path
    scenario = load_scenario("apparel")
    response = scenario.response
    ctx = {**context(), "cart_value": 70.0}
    segments = segments_of(ctx, scenario.big_cart_value)
    arms = [Arm(30, "sms", 10.0), Arm(120, "email"), Arm(1440, "email", 15.0)]
    coef, const = path_values(scenario, response, segments, arms, np.array([[0, 1, 2]]))
    expected = 70.0 * coef[0] - const[0]
    # When the same journey is simulated from its independent sources, n = 400,000 times
    rng = np.random.default_rng(1)
    n = 400_000
    organic = np.where(
        rng.random(n) < response.organic(segments),
        rng.exponential(response.organic_mean_hours, n),
        np.inf,
    )
    t_conv = organic.copy()
    cost = np.zeros(n)
    send = 0.0
    for k, arm in enumerate(arms):
        send += arm.delay_minutes / 60
        sent = t_conv > send
        cost += sent * scenario.economics.cost_of(arm)
        rate = response.rates(segments, [arm], k + 1)[0]
        fire = np.where(
            sent & (rng.random(n) < rate),
            send + rng.exponential(response.lag_hours[arm.channel], n),
            np.inf,
        )
        t_conv = np.minimum(t_conv, fire)
    # The discount used is the largest offered by a send before the conversion
    sends = np.cumsum([a.delay_minutes / 60 for a in arms])
    used = np.zeros(n)
    for s, arm in zip(sends, arms, strict=True):
        used = np.where(t_conv > s, np.maximum(used, arm.discount_pct), used)
    converted = np.isfinite(t_conv)
    profit = converted * (70.0 * 0.4 - 70.0 * used / 100) - cost
    # Then the closed form is within 4 standard errors of the simulation
    se = profit.std() / math.sqrt(n)
    assert abs(profit.mean() - expected) < 4 * se
