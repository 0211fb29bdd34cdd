"""Behavioural tests of the pure re-weighting maths (mixing/weights) and the strategy registry (mixing/strategies)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from versatune_mlops.errors import ConfigError
from versatune_mlops.mixing.strategies import (
    STRATEGIES,
    DomainSignals,
    WeightingStrategy,
    build_strategy,
    method_names,
    register_strategy,
)
from versatune_mlops.mixing.baselines import doremi_update, odm_exploration_rate, odm_probabilities, odm_reward_update
from versatune_mlops.mixing.weights import (
    Coefficients,
    apply_floor,
    cap_shares,
    expansion_initial_weights,
    expansion_update,
    forgetting_degree,
    learnable_potential,
    normalise,
    versatune_update,
)

REPO = Path(__file__).resolve().parent.parent
DOMAINS = ["law", "medicine", "finance", "science", "code", "general"]
PRIOR = np.array([0.05, 0.10, 0.03, 0.12, 0.50, 0.20])
SIZES = np.array([1763, 945, 1024, 733, 412, 1081])
ALL_METHODS = ["versatune", "versatune_constant", "uniform", "size_proportional", "inverse_probe", "doremi", "odm", "aioli"]
EXPANSION_BASELINES = ["target_only", "target_uniform"]  # expansion mode only: tested in test_bench.py


def assert_simplex(w: np.ndarray) -> None:
    assert np.all(np.isfinite(w)), w
    assert np.all(w >= 0), w
    assert math.isclose(float(w.sum()), 1.0, abs_tol=1e-9), w.sum()


def random_case(rng: np.random.Generator, k: int):
    """Weights (sometimes with zeros), signals spanning many orders of magnitude, extreme coefficients."""
    w = rng.random(k) * 10.0 ** rng.uniform(-300, 300)
    w[rng.random(k) < 0.2] = 0.0
    w[rng.integers(k)] = max(w.max(), 1e-300)  # at least one positive weight
    gamma = rng.random(k) * 10.0 ** rng.uniform(-5, 0)
    phi = rng.random(k) * 10.0 ** rng.uniform(-5, 300)
    coef = {name: float(10.0 ** rng.uniform(-3, 300)) * rng.integers(0, 2) for name in ("alpha", "beta", "eta")}
    coef["epsilon"] = float(rng.choice([0.0, rng.random(), 1.0]))
    return w, gamma, phi, coef


# ----------------------------------------------------------------------------------------------
# normalise / floor / signals


def test_normalise_returns_float64_distribution():
    w = normalise([1, 3])
    assert w.dtype == np.float64
    np.testing.assert_allclose(w, [0.25, 0.75])


@pytest.mark.parametrize(
    "weights, fragments",
    [
        ([0.2, -0.1, 0.9], ["negative", "domain index 1", ">= 0"]),
        ([0.2, 0.3, float("nan")], ["NaN", "domain index 2", "finite"]),
        ([0.2, float("inf")], ["infinite", "domain index 1"]),
        ([0.0, 0.0, 0.0], ["sum to zero", "positive weight"]),
        ([], ["non-empty"]),
    ],
)
def test_normalise_rejects_bad_weights_with_helpful_message(weights, fragments):
    with pytest.raises(ConfigError) as info:
        normalise(weights)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_apply_floor_raises_small_weights_and_renormalises():
    w = apply_floor([0.0, 0.25, 0.75], 0.1)
    assert_simplex(w)
    # [0.1, 0.25, 0.75] / 1.1
    np.testing.assert_allclose(w, np.array([0.1, 0.25, 0.75]) / 1.1)
    with pytest.raises(ConfigError, match="floor"):
        apply_floor([0.5, 0.5], 1.0)


def test_learnable_potential_matches_definition_and_handles_bad_losses():
    loss = [2.0, 3.0, 1.0, 0.0, float("nan"), 2.0]
    ref = [1.5, 1.5, 1.2, 0.5, 1.0, float("nan")]
    # (2-1.5)/2 = .25, (3-1.5)/3 = .5, below ref -> 0, loss 0 -> 0, NaN loss -> 0, NaN ref -> 0
    np.testing.assert_allclose(learnable_potential(loss, ref), [0.25, 0.5, 0.0, 0.0, 0.0, 0.0])


def test_forgetting_degree_matches_definition_and_is_zero_without_history():
    loss = [2.2, 1.0, 3.0]
    np.testing.assert_allclose(forgetting_degree(loss, [2.0, 1.5, 0.0]), [0.1, 0.0, 0.0])
    np.testing.assert_array_equal(forgetting_degree(loss, [float("nan")] * 3), [0.0, 0.0, 0.0])


# ----------------------------------------------------------------------------------------------
# VersaTune fostering update


def test_versatune_update_always_on_simplex_for_random_extreme_inputs():
    rng = np.random.default_rng(1234)
    for _ in range(200):
        k = int(rng.integers(1, 9))
        w, gamma, phi, coef = random_case(rng, k)
        new = versatune_update(w, gamma, phi, **coef)
        assert_simplex(new)


def test_versatune_update_survives_infinite_and_nan_signals():
    new = versatune_update([0.2, 0.3, 0.5], [np.nan, 0.0, 0.0], [np.inf, 0.0, np.nan],
                           alpha=1e300, beta=1e300, eta=1e300, epsilon=0.0)
    assert_simplex(new)
    assert new[0] == pytest.approx(1.0)  # the infinite forgetting push takes everything in the limit
    # Two pushes that both overflow cannot be ranked any more: they split the mass evenly.
    tie = versatune_update([0.2, 0.3, 0.5], [0.0, 0.1, 0.0], [1e10, 0.0, 0.0],
                           alpha=1e300, beta=1e300, eta=1e300, epsilon=0.0)
    np.testing.assert_allclose(tie, [0.5, 0.5, 0.0])


def test_zero_signals_leave_weights_unchanged():
    rng = np.random.default_rng(7)
    for _ in range(50):
        w = normalise(rng.random(5) + 1e-3)
        new = versatune_update(w, np.zeros(5), np.zeros(5), alpha=3.0, beta=5.0, eta=2.0, epsilon=0.0)
        np.testing.assert_allclose(new, w, rtol=1e-12)


def test_more_potential_never_lowers_a_domains_relative_weight():
    rng = np.random.default_rng(99)
    for _ in range(200):
        k = int(rng.integers(2, 7))
        w = normalise(rng.random(k) + 1e-3)
        gamma, phi = rng.random(k), rng.random(k)
        coef = dict(alpha=float(rng.uniform(0, 5)), beta=float(rng.uniform(0, 5)),
                    eta=float(rng.uniform(0, 3)), epsilon=0.0)
        d = int(rng.integers(k))
        more = gamma.copy()
        more[d] = min(1.0, gamma[d] + float(rng.uniform(0, 1)))
        before = versatune_update(w, gamma, phi, **coef)
        after = versatune_update(w, more, phi, **coef)
        others = np.arange(k) != d
        ratio_before = before[d] / before[others]
        ratio_after = after[d] / after[others]
        assert np.all(ratio_after >= ratio_before * (1 - 1e-12))
        assert after[d] >= before[d] - 1e-12


def test_paper_special_case_matches_hand_computation():
    # eta=1, alpha=1, beta=0, epsilon=0 (the paper's released code).
    # weights [0.5, 0.3, 0.2]; losses [2.0, 3.0, 1.0]; reference losses [1.5, 1.5, 1.2]
    # gamma = [(2-1.5)/2, (3-1.5)/3, max((1-1.2)/1, 0)] = [0.25, 0.5, 0]
    # w * exp(gamma) = [0.5*e^0.25, 0.3*e^0.5, 0.2*e^0] = [0.6420127, 0.4946164, 0.2]; sum 1.3366291
    # normalised = [0.4803223, 0.3700476, 0.1496301]
    loss, ref = [2.0, 3.0, 1.0], [1.5, 1.5, 1.2]
    gamma = learnable_potential(loss, ref)
    phi = forgetting_degree(loss, [1.0, 1.0, 1.0])  # large forgetting, but beta = 0 ignores it
    new = versatune_update([0.5, 0.3, 0.2], gamma, phi, alpha=1.0, beta=0.0, eta=1.0, epsilon=0.0)
    np.testing.assert_allclose(new, [0.4803223, 0.3700476, 0.1496301], atol=1e-7)


def test_smoothing_mixes_toward_uniform():
    w = [0.7, 0.2, 0.1]
    zeros = np.zeros(3)
    half = versatune_update(w, zeros, zeros, alpha=1, beta=1, eta=1, epsilon=0.5)
    np.testing.assert_allclose(half, 0.5 * np.array(w) + 0.5 / 3)
    full = versatune_update(w, [1.0, 0.0, 0.0], zeros, alpha=50, beta=1, eta=1, epsilon=1.0)
    np.testing.assert_allclose(full, [1 / 3] * 3)


@pytest.mark.parametrize("name, value", [("alpha", -1.0), ("eta", float("nan")), ("epsilon", 1.5), ("beta", float("inf"))])
def test_coefficients_outside_the_maths_are_a_bug_not_a_silent_nan(name, value):
    # The user-facing ranges are config.validate's (test_config); the maths only refuses values for
    # which the update is undefined, whether passed to the function or to the Coefficients object.
    coef = dict(alpha=1.0, beta=1.0, eta=1.0, epsilon=0.0)
    coef[name] = value
    with pytest.raises(ValueError, match=name):
        versatune_update([0.5, 0.5], [0.1, 0.2], [0.0, 0.0], **coef)
    with pytest.raises(ValueError, match=name):
        Coefficients(**coef)


# ----------------------------------------------------------------------------------------------
# Expansion


def test_expansion_initial_weights_give_target_its_share_and_no_zero_domain():
    w = expansion_initial_weights([0.6, 0.4, 0.0, 0.0], target=3, target_share=0.5)
    assert_simplex(w)
    assert w[3] == pytest.approx(0.5)
    assert np.all(w > 0)
    # Non-targets proportional to prior + 1e-3: [0.601, 0.401, 0.001] / 1.003 * 0.5
    np.testing.assert_allclose(w[:3], np.array([0.601, 0.401, 0.001]) / 1.003 * 0.5)


def test_expansion_target_share_grows_while_potential_positive_and_stops_at_cap():
    w = expansion_initial_weights([0.25] * 4, target=0, target_share=0.5)
    shares = [w[0]]
    for _ in range(30):
        w = expansion_update(w, [0.3, 0.1, 0.1, 0.1], np.zeros(4), 0,
                             alpha=1.0, beta=1.0, eta=1.0, epsilon=0.0, max_target_share=0.9)
        assert_simplex(w)
        shares.append(w[0])
    assert all(b >= a for a, b in zip(shares, shares[1:]))
    assert shares[1] > shares[0]
    # First step by hand: 1 - (1 - 0.5) * exp(-0.3) = 0.629591
    assert shares[1] == pytest.approx(1 - 0.5 * math.exp(-0.3))
    assert shares[-1] == pytest.approx(0.9)
    assert max(shares) <= 0.9 + 1e-12


def test_expansion_zero_potential_keeps_target_share_and_cap_clips_an_oversized_target():
    w = np.array([0.6, 0.2, 0.2])
    kw = dict(alpha=1.0, beta=1.0, eta=1.0, epsilon=0.0, max_target_share=0.9)
    same = expansion_update(w, np.zeros(3), np.zeros(3), 0, **kw)
    np.testing.assert_allclose(same, w)
    big = expansion_update([0.95, 0.03, 0.02], [1.0, 0, 0], np.zeros(3), 0, **kw)
    assert big[0] == pytest.approx(0.9)


def test_expansion_forgotten_non_target_gains_replay():
    w = np.array([0.5, 0.2, 0.2, 0.1])
    new = expansion_update(w, [0.2, 0.0, 0.0, 0.0], [0.0, 0.3, 0.0, 0.0], 0,
                           alpha=1.0, beta=2.0, eta=1.0, epsilon=0.0, max_target_share=0.9)
    assert_simplex(new)
    # Domains 1 and 2 started equal; domain 1 is being forgotten, so it must now get more.
    assert new[1] > new[2]
    assert new[1] / new[3] > w[1] / w[3]
    # The non-forgotten pair keeps its ratio.
    assert new[2] / new[3] == pytest.approx(w[2] / w[3])


def test_expansion_smoothing_is_within_the_non_target_set():
    new = expansion_update([0.5, 0.4, 0.1], np.zeros(3), np.zeros(3), 0,
                           alpha=1.0, beta=1.0, eta=1.0, epsilon=1.0, max_target_share=0.9)
    np.testing.assert_allclose(new, [0.5, 0.25, 0.25])


def test_expansion_update_on_simplex_for_random_extreme_inputs():
    rng = np.random.default_rng(4321)
    for _ in range(200):
        k = int(rng.integers(1, 9))
        w, gamma, phi, coef = random_case(rng, k)
        target = int(rng.integers(k))
        new = expansion_update(w, gamma, phi, target, max_target_share=float(rng.uniform(0.05, 1.0)), **coef)
        assert_simplex(new)


# ----------------------------------------------------------------------------------------------
# Baselines: DoReMi and ODM


def test_doremi_update_upweights_excess_loss_only():
    # excess = [max(3-1,0), max(1-2,0), NaN -> 0] = [2, 0, 0]; w*exp(0.5*excess) = [e/3, 1/3, 1/3]
    new = doremi_update([1 / 3] * 3, [3.0, 1.0, np.nan], [1.0, 2.0, 1.0], eta=0.5, epsilon=0.0)
    e = math.e
    np.testing.assert_allclose(new, [e / (e + 2), 1 / (e + 2), 1 / (e + 2)])
    same = doremi_update([0.2, 0.8], [1.0, 1.0], [2.0, 2.0], eta=10.0, epsilon=0.0)
    np.testing.assert_allclose(same, [0.2, 0.8])


def test_doremi_update_on_simplex_for_extreme_inputs():
    rng = np.random.default_rng(5)
    for _ in range(200):
        k = int(rng.integers(1, 8))
        w, _, _, coef = random_case(rng, k)
        loss = rng.random(k) * 10.0 ** rng.uniform(-3, 300)
        ref = rng.random(k)
        assert_simplex(doremi_update(w, loss, ref, eta=coef["eta"], epsilon=coef["epsilon"]))


def test_odm_exploration_rate_and_probabilities():
    assert odm_exploration_rate(4, 0) == pytest.approx(0.25)
    assert odm_exploration_rate(4, 1) == pytest.approx(0.25)  # sqrt(ln4/4) = 0.59 > 1/4
    assert odm_exploration_rate(4, 100) == pytest.approx(math.sqrt(math.log(4) / 400))
    np.testing.assert_allclose(odm_probabilities(np.zeros(4), 0), [0.25] * 4)
    pi = odm_probabilities([0.0, 1e6, 5.0, 1e308], 100)
    assert_simplex(pi)
    assert np.all(pi >= odm_exploration_rate(4, 100) - 1e-12)  # every domain keeps exploration mass


def test_odm_reward_update_importance_weights_and_skips_unsampled():
    r = odm_reward_update([1.0, 2.0, 3.0], [2.0, np.nan, 1.0], [0.5, 0.25, 0.25])
    np.testing.assert_allclose(r, [1.0 + 2.0 / 0.5, 2.0, 3.0 + 1.0 / 0.25])


def test_odm_strategy_prefers_high_loss_domain_and_resumes_exactly():
    strat = build_strategy("odm", ["a", "b", "c"])
    w = strat.initial_weights()
    np.testing.assert_allclose(w, [1 / 3] * 3)
    nan3 = np.full(3, np.nan)
    signals = DomainSignals(eval_loss=np.ones(3), prev_eval_loss=nan3, ref_loss=np.ones(3),
                            train_loss=np.array([1.0, 2.0, 3.0]))
    for _ in range(40):
        w = strat.update(w, signals).weights
        assert_simplex(w)
    assert w[2] > w[1] > w[0]

    state = json.loads(json.dumps(strat.state_dict()))
    clone = build_strategy("odm", ["a", "b", "c"])
    clone.load_state_dict(state)
    np.testing.assert_array_equal(clone.update(w, signals).weights, strat.update(w, signals).weights)


# ----------------------------------------------------------------------------------------------
# Strategies and registry


def make(method: str, **kwargs) -> WeightingStrategy:
    kwargs.setdefault("prior", PRIOR)
    kwargs.setdefault("sizes", SIZES)
    coefficients = {name: kwargs.pop(name) for name in ("alpha", "beta", "eta", "epsilon") if name in kwargs}
    return build_strategy(method, DOMAINS, coefficients=Coefficients(**coefficients), **kwargs)


def signals_for(k: int, seed: int = 0) -> DomainSignals:
    rng = np.random.default_rng(seed)
    loss = rng.uniform(1.0, 3.0, k)
    return DomainSignals(eval_loss=loss, prev_eval_loss=loss * rng.uniform(0.8, 1.2, k),
                         ref_loss=loss * 0.7, train_loss=rng.uniform(1.0, 3.0, k))


def test_registry_holds_exactly_the_documented_methods():
    assert sorted(STRATEGIES) == sorted(ALL_METHODS + EXPANSION_BASELINES)
    yaml = pytest.importorskip("yaml")  # noqa: F841  (config imports it)
    from versatune_mlops.bench.methods import EXPANSION_METHODS, FOSTERING_METHODS
    from versatune_mlops.config import EXPANSION_ONLY_METHODS, METHODS
    from versatune_mlops.training.setup import PRIOR_METHODS

    assert sorted(METHODS) == sorted(STRATEGIES)
    # Every other list is the registry filtered by the classes' attributes, in registration order.
    assert EXPANSION_ONLY_METHODS == ("target_only", "target_uniform")
    assert EXPANSION_METHODS == ("target_only", "target_uniform", "versatune")
    assert PRIOR_METHODS == ("inverse_probe", "versatune_constant", "versatune")
    assert FOSTERING_METHODS == ("uniform", "size_proportional", "inverse_probe", "versatune_constant", "doremi",
                                 "odm", "aioli", "versatune")


def test_a_registered_method_appears_in_every_derived_list():
    @register_strategy
    class GrowFirst(WeightingStrategy):
        name = "grow_first_test_only"
        dynamic = True
        needs_prior = True
        supports_expansion = True

        def initial_weights(self):
            return self.prior

    try:
        assert "grow_first_test_only" in method_names()
        assert "grow_first_test_only" in method_names(needs_prior=True)
        assert "grow_first_test_only" in method_names(supports_expansion=True, expansion_only=False)
        assert "grow_first_test_only" not in method_names(expansion_only=True)
        assert "grow_first_test_only" not in method_names(dynamic=False)
    finally:
        STRATEGIES.pop("grow_first_test_only", None)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_strategy_starts_on_simplex_and_updates_stay_there(method):
    strat = make(method, floor=0.02, epsilon=0.1)
    w = strat.initial_weights()
    assert_simplex(w)
    assert w.shape == (len(DOMAINS),)
    for t in range(5):
        report = strat.update(w, signals_for(len(DOMAINS), seed=t))
        assert_simplex(report.weights)
        assert report.potential.shape == report.forgetting.shape == (len(DOMAINS),)
        if not strat.dynamic:
            np.testing.assert_allclose(report.weights, w)
        w = report.weights
    json.dumps(strat.state_dict())


def test_initial_weights_of_each_baseline():
    np.testing.assert_allclose(make("uniform").initial_weights(), [1 / 6] * 6)
    np.testing.assert_allclose(make("size_proportional").initial_weights(), SIZES / SIZES.sum())
    np.testing.assert_allclose(make("versatune_constant").initial_weights(), PRIOR / PRIOR.sum())
    np.testing.assert_allclose(make("versatune").initial_weights(), PRIOR / PRIOR.sum())
    inverse = 1 - PRIOR / PRIOR.sum()
    np.testing.assert_allclose(make("inverse_probe").initial_weights(), inverse / inverse.sum())
    floored = make("versatune", floor=0.1).initial_weights()
    assert floored.min() >= 0.1 / (1 + 6 * 0.1) - 1e-12  # floor applied before renormalising
    assert floored[2] > PRIOR[2]


def test_versatune_strategy_applies_the_update_rule():
    strat = make("versatune", alpha=2.0, beta=0.5, eta=1.0)
    w = strat.initial_weights()
    sig = signals_for(6, seed=3)
    report = strat.update(w, sig)
    gamma = learnable_potential(sig.eval_loss, sig.ref_loss)
    phi = forgetting_degree(sig.eval_loss, sig.prev_eval_loss)
    np.testing.assert_allclose(report.potential, gamma)
    np.testing.assert_allclose(report.forgetting, phi)
    np.testing.assert_allclose(report.weights, versatune_update(w, gamma, phi, alpha=2.0, beta=0.5, eta=1.0, epsilon=0.0))


def test_cap_shares_moves_the_excess_to_the_others_in_proportion_until_none_is_above():
    # law .7 is cut to .4; its .3 goes to the rest (.3 in all) in proportion: medicine .2 -> .4 is then
    # above the cap too, so it is cut and the rest (.1) takes what is left (.2), split .05:.05 -> .1:.1.
    np.testing.assert_allclose(cap_shares([0.7, 0.2, 0.05, 0.05], 0.4), [0.4, 0.4, 0.1, 0.1])
    np.testing.assert_allclose(cap_shares([0.3, 0.3, 0.2, 0.2], 0.4), [0.3, 0.3, 0.2, 0.2])  # under it: unchanged
    np.testing.assert_allclose(cap_shares([0.9, 0.1, 0.0], 1 / 3), [1 / 3] * 3)  # at 1/|D|: uniform
    rng = np.random.default_rng(0)
    for _ in range(200):
        w = rng.dirichlet(np.full(6, 0.3))
        cap = rng.uniform(1 / 6, 1.0)
        out = cap_shares(w, cap)
        assert_simplex(out)
        assert out.max() <= cap + 1e-12
        uncapped = out < cap - 1e-12
        if uncapped.sum() > 1:  # the domains below the cap keep their ratios
            np.testing.assert_allclose(out[uncapped] / out[uncapped].sum(), w[uncapped] / w[uncapped].sum())


def test_cap_shares_below_one_over_the_domain_count_is_refused():
    with pytest.raises(ConfigError, match=r"max_domain_share=0.2 is out of range"):
        cap_shares([0.5, 0.3, 0.2, 0.0], 0.2)


def test_versatune_with_a_share_cap_never_puts_more_than_the_cap_on_a_domain():
    # A large η piles the weight onto the domain with the most potential; the cap holds it, and without
    # the cap the same updates go above it.
    capped, free = make("versatune", eta=30.0, max_domain_share=0.35), make("versatune", eta=30.0)
    assert capped.initial_weights().max() == pytest.approx(0.35)  # the prior's .50 on code is cut too
    w_capped, w_free = capped.initial_weights(), free.initial_weights()
    for t in range(5):
        w_capped = capped.update(w_capped, signals_for(6, seed=t)).weights
        w_free = free.update(w_free, signals_for(6, seed=t)).weights
        assert_simplex(w_capped)
        assert w_capped.max() <= 0.35 + 1e-12
    assert w_free.max() > 0.35
    with pytest.raises(ConfigError, match=r"below 1/6.*at least 0.1667"):
        make("versatune", max_domain_share=0.1)


def test_versatune_expansion_mode_grows_the_target():
    strat = make("versatune", mode="expansion", target="law", target_initial_share=0.5, target_max_share=0.8)
    w = strat.initial_weights()
    assert w[0] == pytest.approx(0.5)
    for t in range(10):
        w = strat.update(w, signals_for(6, seed=t)).weights
        assert_simplex(w)
    assert 0.5 < w[0] <= 0.8 + 1e-12


def test_versatune_expansion_at_its_default_share_keeps_the_target_and_moves_replay_to_the_forgotten():
    strat = make("versatune", mode="expansion", target="law")
    w = strat.initial_weights()
    assert w[0] == pytest.approx(0.9)
    rest = PRIOR[1:] + 1e-3
    np.testing.assert_allclose(w[1:], rest / rest.sum() * 0.1)
    # Every domain can still learn (potential > 0) and general (index 5) has been forgotten: the target
    # stays at its cap and general's share of the replay grows.
    loss = np.full(6, 2.0)
    prev = loss.copy()
    prev[5] = 1.8
    report = strat.update(w, DomainSignals(eval_loss=loss, prev_eval_loss=prev, ref_loss=loss * 0.7,
                                           train_loss=loss))
    assert report.weights[0] == pytest.approx(0.9)
    assert report.weights[5] / report.weights[1:].sum() > w[5] / w[1:].sum()
    assert_simplex(report.weights)


def test_unknown_method_lists_known_ones():
    with pytest.raises(ConfigError) as info:
        build_strategy("versatun", DOMAINS, prior=PRIOR)
    message = str(info.value)
    assert "versatun" in message
    for name in ALL_METHODS:
        assert name in message


def test_expansion_target_must_be_a_domain():
    with pytest.raises(ConfigError) as info:
        make("versatune", mode="expansion", target="astrology")
    assert "astrology" in str(info.value)
    assert "law, medicine, finance" in str(info.value)
    with pytest.raises(ConfigError, match="needs a target"):
        make("versatune", mode="expansion")


@pytest.mark.parametrize("method", [m for m in ALL_METHODS if m != "versatune"])
def test_expansion_with_other_methods_is_rejected(method):
    with pytest.raises(ConfigError) as info:
        make(method, mode="expansion", target="law")
    assert method in str(info.value) and "versatune" in str(info.value)


def test_unknown_mode_is_rejected():
    with pytest.raises(ConfigError, match="fostering"):
        make("versatune", mode="growth")


@pytest.mark.parametrize(
    "prior, fragment",
    [
        ([0.5, -0.1, 0.2, 0.1, 0.1, 0.2], "negative"),
        ([0.5, np.nan, 0.2, 0.1, 0.1, 0.2], "NaN"),
        ([0.0] * 6, "sum to zero"),
        ([0.5, 0.5], "6 domains"),
    ],
)
def test_bad_prior_is_rejected(prior, fragment):
    with pytest.raises(ConfigError) as info:
        make("versatune", prior=prior)
    assert fragment in str(info.value)
    assert "prior" in str(info.value)


def test_methods_that_need_a_prior_or_sizes_say_so():
    with pytest.raises(ConfigError, match="needs a prior"):
        build_strategy("versatune", DOMAINS)
    with pytest.raises(ConfigError, match="sizes"):
        build_strategy("size_proportional", DOMAINS)
    assert_simplex(build_strategy("uniform", DOMAINS).initial_weights())


def test_state_dict_method_mismatch_is_rejected():
    with pytest.raises(ConfigError, match="same method"):
        make("odm").load_state_dict(make("uniform").state_dict())


def test_register_strategy_adds_a_method_without_touching_the_factory():
    @register_strategy
    class AllOnFirst(WeightingStrategy):
        name = "all_on_first_test_only"

        def initial_weights(self):
            return np.eye(len(self.domains))[0]

    try:
        np.testing.assert_array_equal(build_strategy("all_on_first_test_only", ["x", "y"]).initial_weights(), [1, 0])
        with pytest.raises(ValueError):
            register_strategy(AllOnFirst)
    finally:
        STRATEGIES.pop("all_on_first_test_only", None)


def test_method_core_imports_no_heavy_dependencies():
    code = (
        "import sys, versatune_mlops.mixing.weights, versatune_mlops.mixing.strategies, versatune_mlops.mixing.sampler\n"
        "heavy = sorted(m for m in ('torch', 'mlflow', 'ray') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the method core imported {out.stdout.strip()}"
