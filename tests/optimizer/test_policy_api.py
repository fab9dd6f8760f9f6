"""ThompsonPolicy: public API, invariants, determinism, state round trip, validation."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
import scipy.linalg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import optimizer
from optimizer import Arm, Economics, Policy, ThompsonPolicy
from optimizer.thompson import STATE_VERSION
from tests.optimizer.world import ARMS, ECON, START, context, device_world, run

GRID = [
    Arm(delay_minutes=d, channel=c, discount_pct=x)
    for c in ("email", "sms", "push")
    for d in (30, 120, 720, 1440)
    for x in (0.0, 5.0, 10.0, 15.0)
] + [Arm.holdout()]

contexts = st.fixed_dictionaries(
    {
        "cart_value": st.floats(0.0, 5000.0, allow_nan=False),
        "customer_type": st.sampled_from(["new", "returning", "vip", None]),
        "device": st.sampled_from(["mobile", "desktop", "tablet", "watch"]),
        "checkout_stage": st.sampled_from(["cart", "checkout", "payment"]),
        "previous_abandons": st.integers(0, 20),
        "channels": st.lists(st.sampled_from(["email", "sms", "push", "kakao"]), unique=True),
        "local_hour": st.integers(0, 23),
        "touch": st.integers(1, 3),
        "coupon_campaign": st.text(max_size=5),  # an unknown key: ignored, never an error
    }
)


def _policy(seed: int = 7, **kwargs: object) -> ThompsonPolicy:
    return ThompsonPolicy(GRID, ECON, seed=seed, **kwargs)  # type: ignore[arg-type]


def _learned(
    seed: int,
    *,
    decisions: int,
    every: int,
    hours: float,
    cross_features: bool = False,
    since_abandonment: bool = False,
    model: str = "noisy_or",
) -> ThompsonPolicy:
    """A policy that has decided once a minute and learned that every ``every``-th
    decision converted, all recorded ``hours`` after the start and folded in."""
    policy = _policy(
        seed,
        batch_size=10_000,
        cross_features=cross_features,
        since_abandonment=since_abandonment,
        model=model,
    )
    for i in range(decisions):
        d = policy.choose(context(), now=START + timedelta(minutes=i))
        policy.record(
            d,
            converted=i % every == 0,
            order_value=80.0,
            message_sent=True,
            at=START + timedelta(hours=hours),
        )
    policy.update()
    return policy


def test_public_api_is_exported() -> None:
    # Given the package, then the contract names are importable from it
    for name in ("Arm", "Economics", "ThompsonPolicy", "Policy", "Decision", "Prior"):
        assert name in optimizer.__all__
    policy = _policy()
    assert isinstance(policy, Policy)
    assert policy.max_touches == 3
    assert ThompsonPolicy(GRID, ECON, max_touches=5).max_touches == 5


def test_holdout_is_added_when_missing() -> None:
    policy = ThompsonPolicy([Arm(60, "email")], ECON)
    assert Arm.holdout() in policy.arms


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ctx=contexts, seed=st.integers(0, 2**32 - 1))
def test_choose_invariants(ctx: dict[str, object], seed: int) -> None:
    # Given any context and seed
    policy = _policy(seed)
    # When the policy decides, alone and in a batch
    decisions = [policy.choose(ctx, now=START), *policy.choose_many([ctx, ctx], now=START)]
    channels = set(ctx["channels"])  # type: ignore[call-overload]
    for d in decisions:
        # Then the propensity is a probability and the channel is reachable
        assert 0.0 < d.propensity <= 1.0
        assert d.arm.is_holdout or d.arm.channel in channels
        assert d.arm in policy.arms
    # And the choice distribution sums to 1 over feasible arms, with the floor respected
    probs = policy.probabilities(ctx)
    feasible = np.array([a.is_holdout or a.channel in channels for a in policy.arms])
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(probs[~feasible] == 0.0)
    assert np.all(probs[feasible] >= policy.min_propensity - 1e-15)


def test_missing_channels_means_send_nothing() -> None:
    policy = _policy()
    ctx = context()
    del ctx["channels"]
    assert all(policy.choose(ctx, now=START).arm.is_holdout for _ in range(50))


def test_propensity_matches_choice_frequency() -> None:
    # Given a fixed posterior (no records, so no refit), the reported propensity of each
    # decision is its probability given its own draws; averaged over decisions it must equal
    # the arm's marginal probability from probabilities(). With n = 20,000 decisions the
    # frequency of an arm with probability p has sd sqrt(p(1-p)/n) <= 0.0036: allow 4 sd.
    policy = _policy(3)
    ctx = context()
    n = 20_000
    decisions = policy.choose_many([ctx] * n, now=START)
    probs = policy.probabilities(ctx)
    keys = [policy.arms.index(d.arm) for d in decisions]
    freq = np.bincount(keys, minlength=len(policy.arms)) / n
    tol = 4 * np.sqrt(probs * (1 - probs) / n) + 1e-9
    assert np.all(np.abs(freq - probs) <= tol + 1e-3)
    mean_prop = np.array(
        [
            np.mean([d.propensity for d, k in zip(decisions, keys, strict=True) if k == a] or [0])
            for a in range(len(policy.arms))
        ]
    )
    # E[propensity | arm chosen] >= P(arm): size-biased, never below it on average (4 sd).
    chosen = freq > 0.02
    assert np.all(mean_prop[chosen] >= probs[chosen] - 4 * np.sqrt(probs[chosen] / n))


def test_single_choose_follows_the_choice_probabilities_of_a_learned_posterior() -> None:
    # Given a learned posterior (choose scores it as odds, probabilities() as log-odds) and a
    # context where several arms have a fair chance
    policy = _learned(5, decisions=3_000, every=9, hours=2.0)
    ctx = {**context(), "channels": ["email", "sms", "push"]}
    probs = policy.probabilities(ctx)
    assert np.count_nonzero(probs > 0.05) >= 2
    # When it decides one at a time, 20,000 times at a fixed clock (no refit)
    n = 20_000
    now = START + timedelta(hours=2)
    keys = [policy.arms.index(policy.choose(ctx, now=now).arm) for _ in range(n)]
    # Then every arm's frequency is its probability, within 4 sd (sd <= 0.0036 at n = 20,000)
    freq = np.bincount(keys, minlength=len(policy.arms)) / n
    assert np.all(np.abs(freq - probs) <= 4 * np.sqrt(probs * (1 - probs) / n) + 1e-9)


def test_profit_from_odds_is_profit_from_log_odds() -> None:
    # Given log-odds from very negative to very positive (the holdout's offset included),
    # several draws, and an infeasible arm
    from optimizer.thompson import _profit_nor, _profit_odds

    rng = np.random.default_rng(4)
    logits = rng.normal(-2.0, 3.0, (16, 6))
    logits[0, 1:] = (-60.0, -30.0, 0.0, 30.0, 80.0)
    logits[1, 0] = 80.0
    gain = rng.uniform(1.0, 40.0, 5)
    charge = np.array([0.002, 0.03, np.inf, 0.0005, 0.0])
    # When the profit is computed from the odds (each row's exp bounded as the pool's is)
    expected = _profit_nor(logits.copy(), gain, charge)
    odds = np.exp(np.clip(logits, -87.5, 87.5))
    got = _profit_odds(odds, gain, charge)
    # Then it is the same profit, and the same winner per draw
    assert np.array_equal(np.isinf(got), np.isinf(expected))
    finite = np.isfinite(expected)
    assert np.allclose(got[finite], expected[finite], rtol=1e-12, atol=1e-12)
    assert np.array_equal(got.argmax(axis=1), expected.argmax(axis=1))


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_deterministic_for_a_seed(seed: int) -> None:
    # Given two policies with the same seed fed the same calls
    runs = []
    for _ in range(2):
        policy = ThompsonPolicy(ARMS, ECON, seed=seed)
        out = []
        for i in range(40):
            d = policy.choose(context(touch=1 + i % 3), now=START + timedelta(minutes=i))
            policy.record(
                d,
                converted=i % 5 == 0,
                order_value=80.0,
                message_sent=True,
                at=START + timedelta(minutes=20 * i),
            )
            out.append((d.arm.key, d.propensity))
        policy.update()
        out.append(tuple(policy.mean.ravel().round(12)))
        runs.append(out)
    # Then they make the same decisions and learn the same posterior
    assert runs[0] == runs[1]


@pytest.mark.parametrize("model", ["noisy_or", "logistic"])
def test_refits_while_only_recording_draw_no_pool_and_change_no_decision(
    model: str, calls_to: Callable[[Any, str], list[int]]
) -> None:
    # Given two policies with the same seed and 300 pending decisions, recorded in 5 batches
    # that each trigger a refit; one draws its pool of posterior samples after every refit
    # (as a policy that also decides would), the other only records
    policies = [_policy(4, batch_size=60, model=model) for _ in range(2)]
    decisions = [
        [p.choose(context(touch=1 + i % 3), now=START + timedelta(minutes=i)) for i in range(300)]
        for p in policies
    ]
    draws = calls_to(scipy.linalg, "solve_triangular")
    drawn_by: list[int] = []
    before = [p.refits for p in policies]
    for policy, mine in zip(policies, decisions, strict=True):
        for i, d in enumerate(mine):
            policy.record(d, converted=i % 6 == 0, order_value=80.0, message_sent=True, at=START)
            if policy is policies[0] and policy._b_count == 0:
                policy.probabilities(context())
        drawn_by.append(len(draws))
        draws[:] = []
    # Then the recording-only one refitted as often without drawing once
    assert [p.refits - b for p, b in zip(policies, before, strict=True)] == [5, 5]
    assert drawn_by == [5, 0]
    # and from then on both decide identically
    now = START + timedelta(hours=1)
    a = [policies[0].choose(context(touch=1), now=now) for _ in range(30)]
    b = [policies[1].choose(context(touch=1), now=now) for _ in range(30)]
    assert [(d.arm, d.propensity) for d in a] == [(d.arm, d.propensity) for d in b]


@pytest.mark.parametrize(
    ("model", "cross", "since", "version", "forgetting"),
    [
        ("noisy_or", False, True, 5, "mean"),
        ("noisy_or", True, True, 5, "mean"),
        ("logistic", False, True, 5, "mean"),
        ("logistic", True, False, 4, "mean"),
        ("noisy_or", True, False, 4, "mean"),
        ("logistic", False, False, 2, "mean"),
        ("noisy_or", False, False, 3, "mean"),
        ("noisy_or", False, False, 3, "prior"),
    ],
)
def test_state_round_trip_is_exact_and_continues_identically(
    model: str, cross: bool, since: bool, version: int, forgetting: str
) -> None:
    # Given a policy with a learned posterior, pending decisions and buffered records
    policy = _policy(
        11,
        batch_size=10_000,
        model=model,
        cross_features=cross,
        since_abandonment=since,
        forgetting=forgetting,
    )
    decisions = [
        policy.choose(
            {**context(), "hours_since_abandonment": i / 10}, now=START + timedelta(minutes=i)
        )
        for i in range(300)
    ]
    for i, d in enumerate(decisions[:200]):
        policy.record(
            d,
            converted=i % 7 == 0,
            order_value=80.0,
            message_sent=True,
            at=START + timedelta(hours=3),
        )
    policy.update()
    for d in decisions[200:250]:
        policy.record(
            d, converted=True, order_value=80.0, message_sent=True, at=START + timedelta(hours=4)
        )
    # When it goes through JSON and back
    text = json.dumps(policy.state())
    state = json.loads(text)
    # (a policy saves the oldest version that holds it, which workers not yet upgraded can
    # read: without the hours-since-abandonment or the cross rows (the default), a logistic
    # policy saves version 2 and a noisy-OR one version 3, their priors holding only the
    # fields those versions knew)
    assert state["version"] == version
    assert STATE_VERSION == 6
    noisy_or_only = {"message_rate", "sd_response_context"}
    assert (noisy_or_only <= set(state["config"]["prior"])) == (model == "noisy_or")
    assert ("cross_scale" in state["config"]["prior"]) == cross
    assert state["config"].get("cross_features", False) == cross
    assert ("sd_since" in state["config"]["prior"]) == since
    assert state["config"].get("since_abandonment", False) == since
    assert state["config"]["model"] == model
    assert state["config"]["forgetting"] == forgetting
    assert len(state["rows"]) == 38 + 19 * cross + 6 * since
    clone = ThompsonPolicy.from_state(state)
    # Then the state is identical, and both continue identically
    assert json.dumps(clone.state()) == text
    now = START + timedelta(hours=6)
    a = [policy.choose(context(), now=now) for _ in range(20)]
    b = [clone.choose(context(), now=now) for _ in range(20)]
    assert [(d.arm, d.propensity) for d in a] == [(d.arm, d.propensity) for d in b]
    for d in decisions[250:]:
        for p in (policy, clone):
            p.record(d, converted=False, order_value=0.0, message_sent=True, at=now)
    policy.update()
    clone.update()
    np.testing.assert_array_equal(policy.mean, clone.mean)
    np.testing.assert_array_equal(policy.precision, clone.precision)


def test_a_state_with_a_prior_rescaled_by_relevance_round_trips_as_version_6() -> None:
    # Given a policy that has learned for three days, so relevance learning has rescaled its
    # prior, with outcomes still pending
    truth, draw = device_world()
    policy = ThompsonPolicy(ARMS, ECON, seed=5, relevance=True)
    made = run(
        policy,
        truth,
        draw,
        n=1500,
        rng=np.random.default_rng(5),
        per_hour=20.0,
        window_hours=24.0,
        stop_hours=75.0,
    )
    assert policy._pending
    assert min(policy.relevance_scales.values()) < 1.0
    # When it goes through JSON and back
    text = json.dumps(policy.state())
    state = json.loads(text)
    clone = ThompsonPolicy.from_state(state)
    # Then it saves version 6 with its rescaled prior, and the clone is identical and
    # continues identically, relevance steps included
    assert state["version"] == 6
    assert json.dumps(clone.state()) == text
    np.testing.assert_array_equal(clone.prior_precision, policy.prior_precision)
    later = START + timedelta(days=5)
    for d in [d for d, _ in made if d.id in policy._pending]:
        for p in (policy, clone):
            p.record(d, converted=False, order_value=0.0, message_sent=True, at=later)
    policy.update()
    clone.update()
    np.testing.assert_array_equal(policy.prior_precision, clone.prior_precision)
    np.testing.assert_array_equal(policy.mean, clone.mean)
    a = [policy.choose(context(), now=later) for _ in range(20)]
    b = [clone.choose(context(), now=later) for _ in range(20)]
    assert [(d.arm, d.propensity) for d in a] == [(d.arm, d.propensity) for d in b]
    # And a state whose rescaled prior has the wrong shape is refused by name
    state["prior_precision"] = state["prior_precision"][:-1]
    with pytest.raises(ValueError, match="prior_precision"):
        ThompsonPolicy.from_state(state)


def test_a_version_1_state_loads_with_the_discount_column_at_its_prior() -> None:
    # Given a learned state as version 1 stored it: a logistic model with no
    # discount_per_10pct column, and lag counts per channel timed from the send
    policy = _learned(12, decisions=400, every=5, hours=8)
    state = json.loads(json.dumps(policy.state()))
    slope = state["columns"].index("discount_per_10pct")
    n_rows, n_cols = policy.mean.shape
    keep = [r * n_cols + c for r in range(n_rows) for c in range(n_cols) if c != slope]
    old = {
        **state,
        "version": 1,
        "columns": [c for c in state["columns"] if c != "discount_per_10pct"],
        "mean": np.delete(policy.mean, slope, axis=1).tolist(),
        "precision": policy.precision[np.ix_(keep, keep)].tolist(),
        "lag_counts": {"email": [5.0] * 21, "sms": [1.0] * 21, "holdout": [2.0] * 21},
        "config": {k: v for k, v in state["config"].items() if k != "model"},
    }
    # When it is loaded
    loaded = ThompsonPolicy.from_state(old)
    # Then it is a logistic model, with the prior it learned under
    assert loaded.model == "logistic"
    assert loaded.prior == policy.prior
    # Then the learned weights are kept, the new column starts at its prior, independent of
    # the rest, and the lag distributions start again from their priors
    np.testing.assert_array_equal(np.delete(loaded.mean, slope, axis=1), old["mean"])
    np.testing.assert_array_equal(loaded.mean[:, slope], loaded.prior_mean[:, slope])
    np.testing.assert_array_equal(loaded.precision[np.ix_(keep, keep)], old["precision"])
    column = [r * n_cols + slope for r in range(n_rows)]
    np.testing.assert_array_equal(
        loaded.precision[np.ix_(column, column)], np.diag(loaded.prior_precision[:, slope])
    )
    assert not loaded.precision[np.ix_(column, keep)].any()
    fresh = _policy(12)
    for key, lag in loaded.lags.items():
        np.testing.assert_array_equal(lag.counts, fresh.lags[key].counts)
    # And it decides and saves as version 2, still a logistic model
    loaded.choose(context(), now=START + timedelta(hours=9))
    assert loaded.state()["version"] == 2
    assert loaded.state()["config"]["model"] == "logistic"
    # While a column it does not know is refused by name
    with pytest.raises(ValueError, match="discount=99%"):
        ThompsonPolicy.from_state({**old, "columns": [*old["columns"][:-1], "discount=99%"]})


def test_a_version_2_state_continues_as_the_logistic_model_it_learned() -> None:
    # Given a logistic policy that has learned, saved as version 2 saved it (no model or
    # forgetting key)
    policy = _learned(13, decisions=300, every=6, hours=5, model="logistic")
    state = json.loads(json.dumps(policy.state()))
    old = {
        **state,
        "version": 2,
        "config": {k: v for k, v in state["config"].items() if k not in ("model", "forgetting")},
    }
    # When it is loaded
    loaded = ThompsonPolicy.from_state(old)
    # Then it is the same logistic policy: same posterior, same next decisions
    assert loaded.model == "logistic"
    assert loaded.forgetting == "mean"  # today's default, which it was saved without
    np.testing.assert_array_equal(loaded.mean, policy.mean)
    now = START + timedelta(hours=6)
    a = [policy.choose(context(), now=now) for _ in range(20)]
    b = [loaded.choose(context(), now=now) for _ in range(20)]
    assert [(d.arm, d.propensity) for d in a] == [(d.arm, d.propensity) for d in b]
    # And it keeps its rows (no cross or hours-since-abandonment rows, which it did not learn)
    # and saves version 2
    assert not loaded.features.cross
    assert not loaded.features.since
    assert loaded.state()["version"] == 2
    # While an unknown model or version is refused by name
    with pytest.raises(ValueError, match="model"):
        ThompsonPolicy.from_state({**state, "config": {**state["config"], "model": "probit"}})
    with pytest.raises(ValueError, match="version"):
        ThompsonPolicy.from_state({**state, "version": STATE_VERSION + 1})


def test_device_by_cart_value_cross_rows() -> None:
    # Given a policy that learns the device x cart-value cross rows
    policy = _policy(3, cross_features=True)
    names = policy.features.names
    cross = policy.features.cross_rows

    def cross_row(ctx: Mapping[str, object]) -> str:
        rows = policy.features.rows(ctx)
        assert len(rows) == policy.features.n_slots
        (mine,) = [r for r in rows if r in cross]
        return names[mine]

    # Then a context activates one row of the cross: its device and cart-value tier
    for device, value, tier in (("mobile", 200.0, "150-330"), ("desktop", 20.0, "<30")):
        assert (
            cross_row({"device": device, "cart_value": value})
            == f"device×cart_value={device}|{tier}"
        )
    assert cross_row({"device": "tablet", "cart_value": 750.0}) == "device×cart_value=tablet|>=750"
    # And a missing or unknown device, or a cart value that is no number, its "other" row
    for ctx in (
        {"cart_value": 200.0},
        {"device": "watch", "cart_value": 200.0},
        {"device": "mobile", "cart_value": "lots"},
        {"device": "mobile", "cart_value": float("nan")},
    ):
        assert cross_row(ctx) == "device×cart_value=other", ctx
    # And its prior is cross_scale times as wide as the same cells of other context rows
    sd = policy.prior_precision**-0.5
    mobile = names.index("device=mobile")
    np.testing.assert_allclose(sd[cross.start], policy.prior.cross_scale * sd[mobile])
    # While by default the rows are those of earlier versions
    plain = _policy(3)
    assert not any(n.startswith("device×") for n in plain.features.names)
    assert plain.features.n_slots == policy.features.n_slots - 1


def test_hours_since_abandonment_rows() -> None:
    # Given a policy that learns the hours-since-abandonment rows
    policy = _policy(3, since_abandonment=True)
    names = policy.features.names
    since = policy.features.since_rows

    def since_row(hours: object) -> str:
        rows = policy.features.rows({"cart_value": 80.0, "hours_since_abandonment": hours})
        assert len(rows) == policy.features.n_slots
        (mine,) = [r for r in rows if r in since]
        return names[mine]

    # Then a context activates one row by the hours since its cart was abandoned
    for hours, label in ((0.0, "<1"), (0.99, "<1"), (1.0, "1-6"), (23.5, "6-24"), (47, "24-48")):
        assert since_row(hours) == f"hours_since_abandonment={label}", hours
    assert since_row(500.0) == "hours_since_abandonment=>=48"
    # And a missing, negative or non-numeric value its "other" row
    for bad in (None, -1.0, float("nan"), float("inf"), "soon"):
        assert since_row(bad) == "hours_since_abandonment=other", bad
    assert "hours_since_abandonment=other" == names[policy.features.rows({"cart_value": 1.0})[-1]]
    # And the rows move the organic part alone: their message cells are pinned at zero, and
    # so is all of the "other" row, so that a context that does not say is scored as without
    # the rows
    sd = policy.prior_precision**-0.5
    np.testing.assert_allclose(sd[since.start : since.stop - 1, 0], policy.prior.sd_since)
    assert (sd[since.start : since.stop, 1:] <= 1e-3).all()
    assert sd[since.stop - 1, 0] <= 1e-3
    np.testing.assert_array_equal(policy.prior_mean[since.start : since.stop], 0.0)
    # While by default the rows are those of version 4 and earlier
    plain = _policy(3)
    assert not any(n.startswith("hours_since") for n in plain.features.names)
    assert plain.features.n_rows == policy.features.n_rows - 6


def test_extra_features_are_learned_and_unknown_values_tolerated() -> None:
    policy = ThompsonPolicy(ARMS, ECON, seed=1, extra_features={"country": ["KR", "US"]})
    assert "country=KR" in policy.features.names
    for country in ("KR", "FR", None, 3):
        d = policy.choose({**context(), "country": country}, now=START)
        assert 0 < d.propensity <= 1


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"min_propensity": 0.5}, "min_propensity"),
        ({"max_touches": 0}, "max_touches"),
        ({"half_life": timedelta(0)}, "half_life"),
        ({"forgetting": "never"}, "forgetting"),
        ({"attribution_window": timedelta(0)}, "attribution_window"),
        ({"n_draws": 0}, "n_draws"),
        ({"pool_size": 0}, "pool_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"exploration": 0.0}, "exploration"),
        ({"holdout_share": 1.0}, "holdout_share"),
        ({"model": "probit"}, "model"),
    ],
)
def test_invalid_config_names_the_parameter(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        ThompsonPolicy(ARMS, ECON, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"cart_value": -1.0}, "cart_value"),
        ({"cart_value": "lots"}, "cart_value"),
        ({"touch": 4}, "touch"),
        ({"touch": 0}, "touch"),
    ],
)
def test_invalid_context_names_the_key(change: dict[str, object], name: str) -> None:
    policy = ThompsonPolicy(ARMS, ECON)
    with pytest.raises(ValueError, match=name):
        policy.choose({**context(), **change}, now=START)


def test_record_validates() -> None:
    policy = ThompsonPolicy(ARMS, ECON)
    d = policy.choose(context(), now=START)
    with pytest.raises(ValueError, match="order_value"):
        policy.record(d, converted=True, order_value=float("nan"), message_sent=True, at=START)
    foreign = ThompsonPolicy([Arm(5, "push")], ECON).choose(
        {**context(), "channels": ["push"]}, now=START
    )
    if not foreign.arm.is_holdout:
        with pytest.raises(ValueError, match="decision.arm"):
            policy.record(foreign, converted=True, order_value=1.0, message_sent=True, at=START)


def test_record_of_a_rebuilt_decision_learns_the_same() -> None:
    # Given two identical policies and the same decisions, one recorded as returned by choose
    # and one rebuilt from stored fields (an equal but distinct arm object, as a worker reading
    # its decisions back from the database would)
    a, b = _policy(5, batch_size=10_000), _policy(5, batch_size=10_000)
    for i in range(120):
        now = START + timedelta(minutes=i)
        da, db = a.choose(context(), now=now), b.choose(context(), now=now)
        rebuilt = dataclasses.replace(db, arm=Arm.from_key(db.arm.key))
        assert rebuilt.arm is not db.arm or db.arm.is_holdout
        outcome = {"converted": i % 5 == 0, "order_value": 80.0, "message_sent": True}
        a.record(da, at=now + timedelta(hours=2), **outcome)  # type: ignore[arg-type]
        b.record(rebuilt, at=now + timedelta(hours=2), **outcome)  # type: ignore[arg-type]
    a.update()
    b.update()
    # Then both learn exactly the same posterior
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.precision, b.precision)


def test_record_with_a_foreign_arm_on_a_pending_id_stores_nothing() -> None:
    # Given a pending decision whose arm has been replaced by one the policy does not have
    policy = _policy(6)
    d = policy.choose(context(), now=START)
    before = json.dumps(policy.state())
    forged = dataclasses.replace(d, arm=Arm(7, "email"))
    # Then recording it is refused, and nothing changed
    with pytest.raises(ValueError, match="decision.arm"):
        policy.record(forged, converted=True, order_value=80.0, message_sent=True, at=START)
    assert json.dumps(policy.state()) == before


def test_economics_with_unknown_channel_costs_nothing() -> None:
    # Arms on a channel without a listed cost are free, as Economics.cost_of defines.
    policy = ThompsonPolicy([Arm(60, "kakao")], Economics(message_cost={}), seed=1)
    d = policy.choose({**context(), "channels": ["kakao"]}, now=START)
    assert d.arm in policy.arms
