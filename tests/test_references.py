"""Reference strategies that carry signal: the released code's raw-loss score and the online
curve-fit asymptote (pure maths on synthetic curves, plus the step loop's refit)."""

from types import SimpleNamespace

import numpy as np
import pytest

from versatune_mlops.config import load_config
from versatune_mlops.mixing.curves import curve_fit_reference, fit_power_law
from versatune_mlops.mixing.strategies import DomainSignals, build_strategy
from versatune_mlops.mixing.weights import Coefficients, released_code_potential
from versatune_mlops.training.steps import refit_reference


@pytest.mark.parametrize("l_inf,b,c", [(1.5, 2.0, 0.7), (0.3, 1.0, 0.3), (2.2, 0.5, 1.5)])
def test_power_law_fit_recovers_the_asymptote(l_inf, b, c):
    t = np.arange(0, 200, 16) + 1.0
    noise = np.random.default_rng(0).normal(0, 0.002, t.size)
    fit = fit_power_law(t, l_inf + b * t ** -c + noise)
    assert fit is not None
    assert abs(fit[0] - l_inf) < 0.05 * max(l_inf, 1.0)


def test_curve_fit_reference_fallbacks():
    # Fewer than 4 evaluations (one more than the law's parameters): the caller's fallback.
    assert curve_fit_reference([0, 8, 16], [2.0, 1.8, 1.7], fallback=1.6) == 1.6
    # A rising curve has no falling fit: the lowest loss seen (gamma = distance above its own best).
    assert curve_fit_reference([0, 8, 16, 24], [2.0, 2.1, 2.3, 2.4], fallback=1.6) == 2.0
    # A falling curve: the asymptote, never above a loss already reached, never negative.
    ref = curve_fit_reference([0, 8, 16, 24], [2.0, 1.6, 1.45, 1.38], fallback=1.6)
    assert 0 <= ref < 1.38
    # More points of the same curve move the estimate toward the true asymptote (monotone in data).
    t = np.arange(0, 81, 8)
    y = 1.0 + 1.0 * (t + 1.0) ** -0.5
    refs = [curve_fit_reference(t[:n], y[:n], fallback=0.0) for n in range(4, t.size + 1)]
    assert all(r <= y[:n].min() + 1e-12 for r, n in zip(refs, range(4, t.size + 1)))
    assert abs(refs[-1] - 1.0) < 0.02


def test_released_code_score_is_the_raw_loss():
    loss = np.array([2.5, 1.0, 3.0])
    assert np.allclose(released_code_potential(loss, np.zeros(3)), loss)
    strategy = build_strategy("versatune", ["a", "b", "c"], prior=[0.5, 0.25, 0.25], potential="absolute",
                              coefficients=Coefficients(beta=0.0))
    w = np.array([0.5, 0.25, 0.25])
    report = strategy.update(w, DomainSignals(loss, np.full(3, np.nan), np.zeros(3), np.full(3, np.nan)))
    expected = w * np.exp(loss) / (w * np.exp(loss)).sum()  # the released domain_reweighting
    assert np.allclose(report.weights, expected)


def test_step_loop_refits_the_reference_from_the_eval_history():
    config = load_config("tiny", overrides={"method.reference": "curve_fit"})
    domains = ["a", "b"]
    state = SimpleNamespace(step=24, eval_loss_before={"a": 2.0, "b": 2.0}, reference_loss={"a": 1.6, "b": 1.6},
                            trajectory=[{"step": 8, "eval_loss": {"a": 1.6, "b": 2.1}},
                                        {"step": 16, "eval_loss": {"a": 1.45, "b": 2.2}}])
    run = SimpleNamespace(state=state, domains=domains, ref_loss=np.array([1.6, 1.6]))
    refit_reference(config, run, {"a": 1.38, "b": 2.3})
    assert state.reference_loss["a"] < 1.38  # falling: its asymptote
    assert state.reference_loss["b"] == 2.0  # rising: its best so far
    assert np.allclose(run.ref_loss, [state.reference_loss["a"], 2.0])
