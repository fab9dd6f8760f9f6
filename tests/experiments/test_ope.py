"""Off-policy evaluation against analytic on-policy truths.

World (tests/experiments/sim.py): 3 segments, 4 arms (holdout, two emails, an SMS with a 10%
discount), a logging policy with propensities from 0.10 to 0.50 that differs by segment, and a
different target policy. Its value is ``sum_s P(s) sum_a pi(a|s) E[reward | s, a]``, exactly.

Tolerance: on 100 000 logged decisions the estimators' standard errors are about 1.5% of the
profit value and 1.0% of the conversion value (printed by their intervals), so +/-5% is more
than 3.3 standard errors: a fixed seed passes, and so would nearly any other.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.ope import (
    WeightedSums,
    arm_value_from_sums,
    arm_value_ips,
    cross_fit_reward_model,
    doubly_robust,
    ips,
    policy_value,
    snips,
)
from experiments.stats import Outcomes
from tests.experiments.sim import (
    ARM_KEYS,
    LOGGING,
    MARGIN,
    SEGMENT_KEYS,
    TARGET,
    Log,
    policy_truth,
    simulate_log,
)

ARMS = np.array(ARM_KEYS)
SEGMENTS = np.array(SEGMENT_KEYS)


def to_outcomes(log: Log) -> Outcomes:
    return Outcomes.from_sequences(
        arm=ARMS[log.action],
        converted=log.converted,
        revenue=log.revenue,
        discount_cost=log.discount_cost,
        message_cost=log.message_cost,
        propensity=log.propensity,
        segment=SEGMENTS[log.segment],
    )


@pytest.fixture(scope="module")
def big_log() -> Log:
    return simulate_log(np.random.default_rng(20240611), 100_000)


@pytest.mark.parametrize("metric", ["profit", "conversion"])
def test_estimators_recover_the_target_policy_value(big_log: Log, metric: str) -> None:
    # Given 100k decisions logged by a non-uniform policy
    o = to_outcomes(big_log)
    truth = policy_truth(TARGET, metric)
    # When a different policy is evaluated off-policy
    rep = policy_value(
        o,
        TARGET[big_log.segment],
        arms=ARM_KEYS,
        margin_rate=MARGIN,
        metric=metric,  # type: ignore[arg-type]
        rng=np.random.default_rng(1),
    )
    # Then IPS, SNIPS and DR each land within 5% of the truth, inside their intervals
    for est in (rep.ips, rep.snips, rep.doubly_robust):
        assert est.value is not None
        assert abs(est.value - truth) <= 0.05 * abs(truth), (est.estimator, est.value, truth)
        assert est.contains(truth), est
        assert est.message is None
    # And DR, with a reward model to lean on, is tighter than IPS
    assert rep.doubly_robust.high is not None and rep.ips.high is not None
    assert rep.doubly_robust.low is not None and rep.ips.low is not None
    assert rep.doubly_robust.high - rep.doubly_robust.low < rep.ips.high - rep.ips.low


def test_raw_bandit_means_are_biased_and_ips_arm_values_are_not(big_log: Log) -> None:
    # Given a log where each arm was sent most where it looked good
    o = to_outcomes(big_log)
    profit = o.profit(MARGIN)
    for j in (2, 3):  # the SMS (favoured for small carts) and the late email (for VIPs)
        always = np.zeros_like(LOGGING)
        always[:, j] = 1.0
        truth = policy_truth(always, "profit")
        raw = float(profit[o.arm == ARM_KEYS[j]].mean())
        # Then the raw mean misses "always this arm" by over 15% ...
        assert abs(raw - truth) > 0.15 * truth
        # ... while the propensity-weighted value covers it
        est = arm_value_ips(o, ARM_KEYS[j], margin_rate=MARGIN)
        assert est.contains(truth), (ARM_KEYS[j], est, truth)
        assert abs(ips_value(o, j) - truth) <= 0.05 * truth


def ips_value(o: Outcomes, j: int) -> float:
    v = arm_value_ips(o, ARM_KEYS[j], margin_rate=MARGIN, self_normalised=False).value
    assert v is not None
    return v


def test_interval_coverage_over_2000_logs() -> None:
    # Given 2000 independent logs of 3000 decisions. Coverage band: sd sqrt(.95 .05 / 2000) =
    # 0.0049, 99.9% band 0.95 +/- 0.016 = [0.934, 0.966], inside the asserted [0.93, 0.97].
    rng = np.random.default_rng(77)
    truth = policy_truth(TARGET, "profit")
    hits = {"ips": 0, "snips": 0, "doubly_robust": 0}
    runs = 2000
    for _ in range(runs):
        log = simulate_log(rng, 3000)
        rep = policy_value(
            to_outcomes(log), TARGET[log.segment], arms=ARM_KEYS, margin_rate=MARGIN, rng=rng
        )
        for est in (rep.ips, rep.snips, rep.doubly_robust):
            hits[est.estimator] += est.contains(truth)
    # Then each estimator's 95% interval covers the truth 93-97% of the time
    for name, h in hits.items():
        assert 0.93 <= h / runs <= 0.97, (name, h / runs)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_on_policy_identities(seed: int) -> None:
    rng = np.random.default_rng(seed)
    log = simulate_log(rng, 500)
    o = to_outcomes(log)
    r = o.profit(MARGIN)
    # Evaluating the logging policy itself: all weights are 1, IPS = SNIPS = the plain mean
    mu = log.propensity
    assert ips(r, mu, mu).value == pytest.approx(r.mean())
    assert snips(r, mu, mu).value == pytest.approx(r.mean())
    # DR with a zero reward model is IPS
    pi_all = TARGET[log.segment]
    pi = pi_all[np.arange(500), log.action]
    zero = np.zeros_like(pi_all)
    assert doubly_robust(r, mu, log.action, pi_all, zero).value == pytest.approx(
        ips(r, mu, pi).value
    )
    # SNIPS of a constant reward is that constant, and effective sample size <= n
    s = snips(np.full(500, 2.5), mu, pi)
    assert s.value == pytest.approx(2.5)
    assert 0 < s.effective_sample_size <= 500
    # cross-fitted predictions never use the row's own reward: a single row per cell falls
    # back to its arm's mean over the other fold
    q = cross_fit_reward_model(
        log.action, r, n_actions=4, strata=log.segment, rng=np.random.default_rng(seed)
    )
    assert q.shape == (500, 4) and np.all(np.isfinite(q))


def test_messages_and_errors() -> None:
    assert ips([], [], []).message == "no data"
    no_overlap = snips([1.0, 2.0], [0.5, 0.5], [0.0, 0.0])
    assert no_overlap.value is None and no_overlap.message is not None
    assert ips([1.0, 2.0], [0.5, 0.5], [0.0, 0.0]).message is not None
    with pytest.raises(ValueError, match="logging_propensity"):
        ips([1.0], [0.0], [1.0])
    with pytest.raises(ValueError, match="target_propensity"):
        ips([1.0], [0.5], [1.5])
    with pytest.raises(ValueError, match="target_probs"):
        doubly_robust([1.0], [0.5], [0], [[0.5, 0.6]], [[0.0, 0.0]])
    with pytest.raises(ValueError, match="reward_hat"):
        doubly_robust([1.0], [0.5], [0], [[0.5, 0.5]], [[0.0]])
    with pytest.raises(ValueError, match="n_folds"):
        cross_fit_reward_model([0], [1.0], n_actions=1, n_folds=1, rng=np.random.default_rng(0))
    o = to_outcomes(simulate_log(np.random.default_rng(0), 50))
    with pytest.raises(ValueError, match="arms"):
        policy_value(
            o, np.ones((50, 1)), arms=["holdout"], margin_rate=MARGIN, rng=np.random.default_rng(0)
        )
    with pytest.raises(ValueError, match="metric"):
        arm_value_ips(o, "holdout", margin_rate=MARGIN, metric="revenue")  # type: ignore[arg-type]


@given(
    weights=st.lists(st.floats(1.0, 2000.0), min_size=2, max_size=300),
    reward=st.floats(-100.0, 100.0),
)
@settings(max_examples=200, deadline=None)
def test_equal_rewards_give_a_zero_width_interval_from_sums_as_from_rows(
    weights: list[float], reward: float
) -> None:
    # The sums' expansion of the variance cancels to rounding noise when every reward is the
    # same; its square root once widened the interval by ~1e-9 (a report off its rows).
    w = np.array(weights)
    r = np.full(w.size, reward)
    sums = WeightedSums(
        w=float(w.sum()),
        wr=float((w * r).sum()),
        w2=float((w * w).sum()),
        w2r=float((w * w * r).sum()),
        w2r2=float((w * w * r * r).sum()),
    )
    est = arm_value_from_sums(sums, w.size)
    assert est.value == pytest.approx(reward, rel=1e-12, abs=1e-12)
    assert est.low == est.value == est.high
