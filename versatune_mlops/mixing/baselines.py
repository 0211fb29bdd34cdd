"""The baselines' update maths (pure numpy, like weights.py, whose helpers they use): online DoReMi,
Online Data Mixing (EXP3) and Aioli. Every array is indexed by domain position."""

from __future__ import annotations

import math

import numpy as np

from .weights import ArrayLike, _check_range, _require_coefficients, _tilt, as_signal, normalise, smooth


def doremi_update(weights: ArrayLike, loss: ArrayLike, ref_loss: ArrayLike, *, eta: float,
                  epsilon: float) -> np.ndarray:
    """Online DoReMi-style excess-loss update: w * exp(eta * max(l - l_ref, 0)), renormalise, smooth."""
    _require_coefficients(0.0, 0.0, eta, epsilon)
    w = normalise(weights)
    loss_a = as_signal(loss, w.size, "loss")
    ref = as_signal(ref_loss, w.size, "ref_loss")
    excess = np.zeros(w.size)
    valid = np.isfinite(loss_a) & np.isfinite(ref)
    excess[valid] = np.maximum(loss_a[valid] - ref[valid], 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        exponent = eta * excess
    return smooth(_tilt(w, exponent), epsilon)


# Online Data Mixing (Albalak et al. 2023): EXP3 over domains, the training loss as reward.


def odm_exploration_rate(num_domains: int, step: int) -> float:
    """epsilon_t = min(1/K, sqrt(ln K / (K * t))); 1/K (pure exploration) before the first update."""
    k = int(num_domains)
    if step < 1:
        return 1.0 / k
    return min(1.0 / k, math.sqrt(math.log(k) / (k * step)))


def odm_probabilities(cumulative_reward: ArrayLike, step: int) -> np.ndarray:
    """pi = (1 - K * eps_t) * softmax(eps_t * R) + eps_t."""
    r = np.asarray(cumulative_reward, dtype=np.float64)
    k = r.size
    eps = odm_exploration_rate(k, step)
    with np.errstate(over="ignore", invalid="ignore"):
        soft = _tilt(np.full(k, 1.0 / k), eps * np.nan_to_num(r, nan=0.0))
    pi = (1.0 - k * eps) * soft + eps
    return pi / pi.sum()  # removes rounding drift only


def odm_reward_update(cumulative_reward: ArrayLike, reward: ArrayLike, probabilities: ArrayLike) -> np.ndarray:
    """Add the importance-weighted reward reward_d / pi_d for every domain whose reward is finite.

    ``reward`` is that domain's mean training loss since the last update; NaN means the domain was not
    sampled, and its estimate is left unchanged.
    """
    r = np.array(cumulative_reward, dtype=np.float64, copy=True)
    rew = as_signal(reward, r.size, "reward")
    pi = as_signal(probabilities, r.size, "probabilities")
    seen = np.isfinite(rew) & (pi > 0)
    r[seen] += rew[seen] / pi[seen]
    return r


# ----------------------------------------------------------------------------------------------
# Aioli (Chen et al., ICLR 2025; HazyResearch/aioli trainer/aioli_trainer.py). Each round, LearnParams
# trains a few steps on each of |D| probe mixtures (domain i at one_hot_factor, the rest equal) and
# measures the held-out loss decrease of every domain after each; the linear dynamic mixing law
# ("training on mixture m lowers domain i's loss by sum_j m_j A_ij") is solved for A, which is
# normalised (shifted to >= 0, divided by its sum), and the mixture moves by p_j <- p_j exp(eta sum_i A_ij).


def aioli_probe_mixtures(num_domains: int, one_hot_factor: float) -> np.ndarray:
    """Row i: the probe mixture of domain i, ``one_hot_factor`` on i and the rest split equally."""
    factor = _check_range("one_hot_factor", one_hot_factor, 0.0, 1.0, low_open=True)
    if num_domains == 1:
        return np.ones((1, 1))
    m = np.full((num_domains, num_domains), (1.0 - factor) / (num_domains - 1))
    np.fill_diagonal(m, factor)
    return m


def aioli_probe_order(num_domains: int, rounds: int, seed: int) -> np.ndarray:
    """Which domain's probe mixture comes when: ``rounds`` seeded permutations of the domains, one after
    another (the reference code's ``mixture_order``), so no domain is always probed first."""
    rng = np.random.Generator(np.random.PCG64(seed))
    return np.concatenate([rng.permutation(num_domains) for _ in range(rounds)])


def aioli_estimate_matrix(loss_before: ArrayLike, probe_losses: ArrayLike, order: ArrayLike,
                          one_hot_factor: float) -> np.ndarray:
    """A from one LearnParams pass. ``probe_losses[n]`` is the per-domain held-out loss after the probe
    of mixture ``order[n]``; each probe's effect is the decrease from the loss just before it.
    Decreases are averaged over the rounds, then unmixed: decrease[i, :] = M @ A[i, :] with M the probe
    mixtures, so A[i] = M^-1 decrease[i] (a no-op for one-hot probes). A[i, j] is how much training on
    domain j lowers domain i's loss. NaN losses (an empty domain) count as no change."""
    before = np.asarray(loss_before, dtype=np.float64)
    k = before.size
    after = np.asarray(probe_losses, dtype=np.float64).reshape(-1, k)
    order = np.asarray(order, dtype=int)
    if order.shape != (after.shape[0],):
        raise ValueError(f"order has {order.size} entries for {after.shape[0]} probes; one entry per probe.")
    decrease = np.zeros((k, k))
    counts = np.zeros(k)
    previous = before
    for j, now in zip(order, after):
        decrease[:, j] += np.nan_to_num(previous - now, nan=0.0, posinf=0.0, neginf=0.0)
        counts[j] += 1
        previous = np.where(np.isfinite(now), now, previous)
    decrease /= np.maximum(counts, 1)
    mixtures = aioli_probe_mixtures(k, one_hot_factor)
    return np.linalg.solve(mixtures, decrease.T).T


def aioli_normalise_matrix(matrix: ArrayLike) -> np.ndarray:
    """The reference's ``aioli_normalize_A``: shift so the smallest entry is 0 (when negative), then
    divide by the sum, so eta means the same whatever the loss scale. An all-zero A stays zero."""
    a = np.nan_to_num(np.asarray(matrix, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if a.min() < 0:
        a = a - a.min()
    total = a.sum()
    return a / total if total > 0 else np.zeros_like(a)


def aioli_update(weights: ArrayLike, matrix: ArrayLike, *, eta: float, epsilon: float = 0.0) -> np.ndarray:
    """p_j <- p_j * exp(eta * sum_i A_ij), renormalise, smooth toward uniform by epsilon."""
    _require_coefficients(0.0, 0.0, eta, epsilon)
    w = normalise(weights)
    a = np.asarray(matrix, dtype=np.float64)
    if a.shape != (w.size, w.size):
        raise ValueError(f"matrix has shape {a.shape}; expected ({w.size}, {w.size}).")
    return smooth(_tilt(w, eta * a.sum(axis=0)), epsilon)
