"""The VersaTune weighting maths as pure functions (the paper's formulas, made numerically safe).

Every array is indexed by domain position. This module imports numpy, the standard library and
:mod:`versatune_mlops.errors` only, so the method can be used and tested without torch, MLflow or
Ray (a test enforces it).

- ``learnable_potential``  γ_d = max((ℓ_d − ℓ_ref,d) / ℓ_d, 0)
- ``forgetting_degree``    φ_d = max((ℓ_d − ℓ_d(t−1)) / ℓ_d(t−1), 0)
- ``versatune_update``     w_d ← w_d · exp(η (α γ_d + β φ_d)), renormalise, smooth toward uniform by ε
- ``expansion_update``     the target closes part of its gap to 1 by γ_T; the others share the rest
                           in proportion to w_j · exp(η β φ_j)
- ``released_code_potential`` γ_d = max(ℓ_d − ℓ_ref,d, 0): the score of the paper's released code,
                           which passes no reference (ℓ_ref = 0), so γ_d is the raw loss
- ``curve_fit_reference`` (in :mod:`.curves`) ℓ_ref,d = ℓ∞ of ℓ(t) = ℓ∞ + b·t^(−c) fitted to the eval history
- baselines: ``doremi_update`` (excess loss), ODM's EXP3 (``odm_*``), Aioli (``aioli_*``)

The user-facing ranges of the coefficients are checked once, in :func:`versatune_mlops.config.validate`;
the functions here only assert the mathematical preconditions (finite, non-negative, ε ≤ 1), which a
caller that bypasses the config violates by a bug, not by input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import ConfigError


ArrayLike = Any  # a list or array of numbers; kept loose so callers can pass plain lists

# Added to every non-target prior in expansion mode so no non-target domain starts at zero.
_EXPANSION_PRIOR_FLOOR = 1e-3


# ----------------------------------------------------------------------------------------------
# Validation helpers


def normalise(weights: ArrayLike, what: str = "weights") -> np.ndarray:
    """Return ``weights / sum(weights)`` as float64 after checking they form a valid mixture.

    Raises :class:`ConfigError` if a weight is NaN, infinite or negative, or if they sum to zero.
    """
    w = np.array(weights, dtype=np.float64, copy=True)
    if w.ndim != 1 or w.size == 0:
        raise ConfigError(f"{what} must be a non-empty 1-D list of numbers, one per domain; got shape {w.shape}.")
    bad = np.flatnonzero(np.isnan(w))
    if bad.size:
        raise ConfigError(
            f"{what} contain NaN at domain index {int(bad[0])}; give every domain a finite weight >= 0."
        )
    bad = np.flatnonzero(np.isinf(w))
    if bad.size:
        raise ConfigError(
            f"{what} contain an infinite value at domain index {int(bad[0])}; "
            f"give every domain a finite weight >= 0."
        )
    bad = np.flatnonzero(w < 0)
    if bad.size:
        raise ConfigError(
            f"{what} contain a negative value ({w[bad[0]]!r}) at domain index {int(bad[0])}; "
            f"weights must be >= 0."
        )
    total = w.sum()
    if not total > 0:
        raise ConfigError(f"{what} sum to zero; give at least one domain a positive weight.")
    if not math.isfinite(total):
        # Each weight is finite but their sum overflowed: rescale first.
        w = w / w.max()
        total = w.sum()
    return w / total


def _check_range(name: str, value: float, low: float, high: float, *, low_open: bool = False,
                 high_open: bool = False) -> float:
    """Check ``low <= value <= high`` (bounds optionally open) and that value is finite."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r} must be a number.") from None
    ok = math.isfinite(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lb = "(" if low_open else "["
        hb = ")" if high_open else "]"
        raise ConfigError(f"{name}={value!r} is out of range; it must be a finite number in {lb}{low}, {high}{hb}.")
    return v


def _require_coefficients(alpha: float, beta: float, eta: float, epsilon: float) -> None:
    """The update's preconditions. Non-negative coefficients keep every exponent in [0, inf], so the
    update never produces NaN. The user-facing ranges live in config.validate; failing here is a bug
    of the caller, hence ValueError."""
    for name, value in (("alpha", alpha), ("beta", beta), ("eta", eta), ("epsilon", epsilon)):
        if not (isinstance(value, (int, float, np.floating)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name}={value!r} must be a finite number >= 0.")
    if epsilon > 1:
        raise ValueError(f"epsilon={epsilon!r} must be <= 1 (a share of the uniform mixture).")


@dataclass(frozen=True)
class Coefficients:
    """The re-weighting coefficients of one run: built and range-checked once, by the config
    (method.alpha, method.beta, method.eta, method.epsilon), and passed as one object."""

    alpha: float = 1.0
    """Potential coefficient: how strongly learnable potential γ pulls weight toward a domain."""
    beta: float = 1.0
    """Forgetting coefficient: how strongly forgetting degree φ pulls weight back."""
    eta: float = 1.0
    """Step size of the multiplicative update."""
    epsilon: float = 0.0
    """Smoothing toward uniform after each update, in [0, 1]."""

    def __post_init__(self) -> None:
        _require_coefficients(self.alpha, self.beta, self.eta, self.epsilon)

    def as_kwargs(self) -> dict[str, float]:
        return {"alpha": self.alpha, "beta": self.beta, "eta": self.eta, "epsilon": self.epsilon}


def as_signal(values: ArrayLike, size: int, name: str) -> np.ndarray:
    """A per-domain signal as float64 of the right length (shape mismatch is a bug: ValueError)."""
    a = np.asarray(values, dtype=np.float64)
    if a.shape != (size,):
        raise ValueError(f"{name} has shape {a.shape}; expected ({size},), one value per domain.")
    return a


def _clean_signal(values: np.ndarray) -> np.ndarray:
    """Signals are >= 0 by construction; NaN means 'no information' (0), +inf stays a huge push."""
    out = np.nan_to_num(values, nan=0.0, posinf=np.finfo(np.float64).max, neginf=0.0)
    return np.maximum(out, 0.0)


def _tilt(weights: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """Normalised ``weights * exp(exponent)`` computed in log space, so it never overflows.

    ``weights`` must be a valid distribution; ``exponent`` may hold +-inf (NaN is treated as 0).
    Domains with zero weight stay at zero, as in any multiplicative update.
    """
    e = np.nan_to_num(exponent, nan=0.0, posinf=np.inf, neginf=-np.inf)
    support = (weights > 0) & (e > -np.inf)
    if not support.any():
        return weights.copy()
    out = np.zeros_like(weights)
    winners = support & (e == np.inf)
    if winners.any():
        # An infinite push: the limit of the update gives those domains equal shares of everything.
        out[winners] = 1.0 / winners.sum()
        return out
    with np.errstate(over="ignore", under="ignore"):
        z = np.log(weights[support]) + e[support]
        z -= z.max()  # the largest term becomes exp(0) = 1, so the sum is in [1, |D|]
        p = np.exp(z)
    out[support] = p / p.sum()
    return out


def smooth(weights: np.ndarray, epsilon: float) -> np.ndarray:
    """Mix toward uniform: ``(1 - epsilon) * w + epsilon / |D|``."""
    return (1.0 - epsilon) * weights + epsilon / weights.size


def apply_floor(weights: ArrayLike, floor: float) -> np.ndarray:
    """Raise every normalised weight to at least ``floor``, then renormalise (floor in [0, 1))."""
    floor = _check_range("floor", floor, 0.0, 1.0, high_open=True)
    w = normalise(weights)
    return normalise(np.maximum(w, floor))


def share_cap_problem(name: str, cap: Optional[float], domain_count: int) -> Optional[str]:
    """Why ``cap`` cannot cap the shares of ``domain_count`` domains (below 1/|D| they could not sum
    to one), or None when it can. The one wording of this rule, for validation and the strategy."""
    if cap is None or cap * domain_count >= 1 - 1e-9:
        return None
    return (f"{name}: {cap} is below 1/{domain_count}, the share of each of this run's {domain_count} domains "
            f"under uniform mixing; set it to at least {1 / domain_count:.4f}.")


def cap_shares(weights: ArrayLike, cap: float) -> np.ndarray:
    """``weights`` with no share above ``cap``: each share above it is set to it and the excess goes to
    the other domains in proportion to their weights, repeated until none is above (water-filling).

    A multiplicative update piles the data onto one domain when η is large (tuned DoReMi ends with .99
    on law, tuned VersaTune with .65-.81); a cap keeps the rest of the mixture in training. ``cap`` must be
    in [1/|D|, 1]: at 1/|D| the result is uniform, at 1 it is ``weights``.
    """
    w = normalise(weights)
    cap = _check_range("max_domain_share", cap, 1.0 / w.size - 1e-12, 1.0)
    out = w.copy()
    capped = np.zeros(w.size, dtype=bool)
    while True:
        over = ~capped & (out > cap)
        if not over.any():
            return out
        capped |= over
        free = ~capped
        room = 1.0 - cap * capped.sum()
        out[capped] = cap
        if free.any():
            mass = w[free].sum()
            out[free] = w[free] * (room / mass) if mass > 0 else room / free.sum()


def fold_other(distribution: ArrayLike, other_domain: Optional[str], domains: Sequence[str]) -> np.ndarray:
    """A probe's mean over domains + "other" (last entry) -> a distribution over the domains.

    ``other_domain=None`` drops the "other" mass and renormalises, as the paper's labeller dropped answers
    outside its labels; a domain name (a catch-all such as ``general``) receives that mass instead.
    """
    values = np.asarray(distribution, dtype=float)
    if values.shape != (len(domains) + 1,):
        raise ValueError(f"fold_other: expected {len(domains) + 1} entries (domains + other), got {values.shape}")
    core, other = values[:-1].copy(), values[-1]
    if other_domain is not None:
        if other_domain not in domains:
            raise ConfigError(f"probe.other_domain={other_domain!r} is not one of the run's domains "
                              f"({', '.join(domains)}). Name one of them, or null to drop the 'other' share.")
        core[list(domains).index(other_domain)] += other
    if core.sum() <= 0:
        raise ConfigError("Every probe sample fell in 'other', so the probe says nothing about the domains. Lower "
                          "probe.other_quantile (0 turns 'other' off), name a catch-all with probe.other_domain, "
                          "or give method.prior.")
    return core / core.sum()


# ----------------------------------------------------------------------------------------------
# Signals


def learnable_potential(loss: ArrayLike, ref_loss: ArrayLike) -> np.ndarray:
    """gamma_d = max((l_d - l_ref,d) / l_d, 0); 0 where l_d <= 0 or either loss is not finite."""
    loss = np.asarray(loss, dtype=np.float64)
    ref = as_signal(ref_loss, loss.size, "ref_loss")
    valid = np.isfinite(loss) & np.isfinite(ref) & (loss > 0)
    out = np.zeros(loss.shape, dtype=np.float64)
    out[valid] = np.maximum((loss[valid] - ref[valid]) / loss[valid], 0.0)
    return out


def released_code_potential(loss: ArrayLike, ref_loss: ArrayLike) -> np.ndarray:
    """gamma_d = max(l_d - l_ref,d, 0), the absolute difference the released code scores domains by
    (8023looker/VersaTune, ``loss_based_reweight.domain_reweighting``: ``loss_diff = loss - ref``, the
    relative ``loss_diff / loss`` commented out, and no reference passed, so the score is l_d itself).
    0 where either loss is not finite."""
    loss = np.asarray(loss, dtype=np.float64)
    ref = as_signal(ref_loss, loss.size, "ref_loss")
    valid = np.isfinite(loss) & np.isfinite(ref)
    out = np.zeros(loss.shape, dtype=np.float64)
    out[valid] = np.maximum(loss[valid] - ref[valid], 0.0)
    return out


def forgetting_degree(loss: ArrayLike, prev_loss: ArrayLike) -> np.ndarray:
    """phi_d = max((l_d - l_prev,d) / l_prev,d, 0); 0 where the previous loss is unknown (NaN) or <= 0."""
    loss = np.asarray(loss, dtype=np.float64)
    prev = as_signal(prev_loss, loss.size, "prev_loss")
    valid = np.isfinite(loss) & np.isfinite(prev) & (prev > 0)
    out = np.zeros(loss.shape, dtype=np.float64)
    with np.errstate(over="ignore"):  # a huge ratio becomes inf; _clean_signal caps it later
        out[valid] = np.maximum((loss[valid] - prev[valid]) / prev[valid], 0.0)
    return out


# ----------------------------------------------------------------------------------------------
# Update rules


def versatune_update(
    weights: ArrayLike,
    potential: ArrayLike,
    forgetting: ArrayLike,
    *,
    alpha: float,
    beta: float,
    eta: float,
    epsilon: float,
) -> np.ndarray:
    """VersaTune fostering update: w * exp(eta * (alpha*gamma + beta*phi)), renormalise, smooth.

    The paper's released code is the special case eta=1, alpha=1, beta=0, epsilon=0.
    """
    _require_coefficients(alpha, beta, eta, epsilon)
    w = normalise(weights)
    gamma = _clean_signal(as_signal(potential, w.size, "potential"))
    phi = _clean_signal(as_signal(forgetting, w.size, "forgetting"))
    with np.errstate(over="ignore", invalid="ignore"):
        # Overflow gives +inf (handled by _tilt); 0 * inf gives NaN, whose limit here is 0.
        exponent = eta * (alpha * gamma + beta * phi)
    return smooth(_tilt(w, exponent), epsilon)


def expansion_initial_weights(prior: ArrayLike, target: int, target_share: float) -> np.ndarray:
    """Target gets ``target_share``; the others split the rest in proportion to ``prior + 1e-3``."""
    p = normalise(prior, "prior")
    target = _check_target_index(target, p.size)
    if p.size == 1:
        return np.ones(1)
    share = _check_range("target_share", target_share, 0.0, 1.0, low_open=True, high_open=True)
    rest = np.delete(p, target) + _EXPANSION_PRIOR_FLOOR
    out = np.insert(rest / rest.sum() * (1.0 - share), target, share)
    return out


def expansion_update(
    weights: ArrayLike,
    potential: ArrayLike,
    forgetting: ArrayLike,
    target: int,
    *,
    alpha: float,
    beta: float,
    eta: float,
    epsilon: float,
    max_target_share: float,
) -> np.ndarray:
    """Flexible domain expansion: grow one target domain while protecting the others.

    Target share: s' = min(max_target_share, 1 - (1 - s) * exp(-eta * alpha * gamma_T)), i.e. the
    target closes a fraction of its gap to 1 set by its own learnable potential, so it never shrinks
    (unless it was above the cap). The non-targets share 1 - s' in proportion to
    w_j * exp(eta * beta * phi_j), so a domain being forgotten gets more replay, then epsilon-smoothing
    toward uniform within the non-target set.
    """
    _require_coefficients(alpha, beta, eta, epsilon)
    cap = _check_range("max_target_share", max_target_share, 0.0, 1.0, low_open=True)
    w = normalise(weights)
    target = _check_target_index(target, w.size)
    gamma = _clean_signal(as_signal(potential, w.size, "potential"))
    phi = _clean_signal(as_signal(forgetting, w.size, "forgetting"))
    if w.size == 1:
        return np.ones(1)

    with np.errstate(over="ignore", invalid="ignore"):
        # 0 * inf is NaN whose limit here is "no push" (0); exp(-745) already underflows to 0.
        push = float(np.nan_to_num(np.float64(eta) * alpha * gamma[target], nan=0.0))
    decay = math.exp(-push) if push < 745.0 else 0.0
    share = min(cap, 1.0 - (1.0 - w[target]) * decay)

    others = np.delete(w, target)
    if others.sum() > 0:
        others = others / others.sum()
        with np.errstate(over="ignore", invalid="ignore"):
            exponent = eta * beta * np.delete(phi, target)
        others = _tilt(others, exponent)
    else:
        # The target held everything: restart the replay share uniformly rather than leave it unusable.
        others = np.full(others.size, 1.0 / others.size)
    others = smooth(others, epsilon)
    return np.insert(others * (1.0 - share), target, share)


def _check_target_index(target: int, size: int) -> int:
    if not isinstance(target, (int, np.integer)) or not 0 <= int(target) < size:
        raise ValueError(f"target index {target!r} is not a domain position in [0, {size}).")
    return int(target)
