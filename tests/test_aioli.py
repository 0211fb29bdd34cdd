"""Aioli (Chen et al., ICLR 2025) as a baseline: the LearnParams estimate of the mixing-law matrix,
its normalisation and the exponentiated update (pure numpy), and one tiny run with real probe steps."""

import numpy as np
import pytest

from versatune_mlops.errors import ConfigError
from versatune_mlops.mixing.baselines import (aioli_estimate_matrix, aioli_normalise_matrix, aioli_probe_mixtures,
                                              aioli_probe_order, aioli_update)


def simulate_probes(true_a, loss_0, order, factor):
    """Losses after each probe if the linear dynamic mixing law holds exactly."""
    mixtures = aioli_probe_mixtures(true_a.shape[0], factor)
    rows, loss = [], loss_0.copy()
    for j in order:
        loss = loss - true_a @ mixtures[j]  # training on mixture m lowers domain i by sum_j A_ij m_j
        rows.append(loss.copy())
    return np.array(rows)


@pytest.mark.parametrize("factor,rounds", [(1.0, 1), (0.625, 2)])
def test_learn_params_recovers_the_mixing_law(factor, rounds):
    rng = np.random.default_rng(0)
    true_a = rng.uniform(-0.02, 0.1, (4, 4))
    order = aioli_probe_order(4, rounds, seed=3)
    assert sorted(order.tolist()) == sorted(list(range(4)) * rounds)
    losses = simulate_probes(true_a, np.full(4, 3.0), order, factor)
    assert np.allclose(aioli_estimate_matrix(np.full(4, 3.0), losses, order, factor), true_a)


def test_probe_mixtures_and_normalisation():
    m = aioli_probe_mixtures(3, 0.6)
    assert np.allclose(m.sum(axis=1), 1) and np.allclose(np.diag(m), 0.6) and np.allclose(m[0, 1:], 0.2)
    a = aioli_normalise_matrix(np.array([[0.2, -0.1], [0.0, 0.3]]))
    assert a.min() == 0 and np.isclose(a.sum(), 1)
    assert not aioli_normalise_matrix(np.zeros((2, 2))).any()


def test_update_moves_weight_toward_the_domain_that_lowers_losses_most():
    a = np.array([[0.1, 0.4, 0.0], [0.0, 0.3, 0.0], [0.0, 0.2, 0.0]])  # training on domain 1 helps everyone
    w = aioli_update([1 / 3] * 3, a, eta=1.0)
    expected = np.exp(a.sum(axis=0)) / np.exp(a.sum(axis=0)).sum()  # p_j ∝ p_j exp(eta sum_i A_ij)
    assert np.allclose(w, expected) and w.argmax() == 1
    assert np.allclose(aioli_update([1 / 3] * 3, a, eta=0.0), 1 / 3)


def test_tiny_run_takes_its_probe_steps_inside_the_budget(tiny_config, tmp_path):
    from versatune_mlops.training.loop import train

    summary = train(tiny_config(**{"method.method": "aioli", "train.max_steps": 16, "method.interval": 8}),
                    output_dir=tmp_path / "run")
    records = summary["reweighting_records"]
    # One update at step 8, after 6 probe steps (one per domain): the record sits at step 14.
    assert [r["step"] for r in records] == [14]
    assert summary["steps"] == 16
    assert not np.allclose(list(summary["final_weights"].values()), 1 / 6)
    with pytest.raises(ConfigError, match="cannot hold aioli's probes"):
        train(tiny_config(**{"method.method": "aioli", "method.interval": 4}), output_dir=tmp_path / "short")
