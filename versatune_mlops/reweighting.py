"""Domain re-weighting: the VersaTune update rules and the baselines (DESIGN.md §2.2-2.4).

Pure numpy. Every array is indexed by domain position. This module imports numpy, the standard
library and :mod:`versatune_mlops.errors` only, so the method can be used and tested without
torch, MLflow or Ray.

Two layers:

* pure functions (``normalise``, ``learnable_potential``, ``versatune_update``, ...), each one line
  of the method's maths made numerically safe;
* :class:`WeightingStrategy` subclasses, one per method name, registered in :data:`STRATEGIES` and
  built with :func:`build_strategy`. The training loop only talks to this interface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Sequence

import numpy as np

from .errors import ConfigError

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


def _check_coefficients(alpha: float, beta: float, eta: float, epsilon: float) -> None:
    # Non-negative coefficients keep every exponent in [0, inf], so the update never produces NaN.
    _check_range("alpha", alpha, 0.0, math.inf)
    _check_range("beta", beta, 0.0, math.inf)
    _check_range("eta", eta, 0.0, math.inf)
    _check_range("epsilon", epsilon, 0.0, 1.0)


def _as_signal(values: ArrayLike, size: int, name: str) -> np.ndarray:
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


# ----------------------------------------------------------------------------------------------
# Signals


def learnable_potential(loss: ArrayLike, ref_loss: ArrayLike) -> np.ndarray:
    """gamma_d = max((l_d - l_ref,d) / l_d, 0); 0 where l_d <= 0 or either loss is not finite."""
    loss = np.asarray(loss, dtype=np.float64)
    ref = _as_signal(ref_loss, loss.size, "ref_loss")
    valid = np.isfinite(loss) & np.isfinite(ref) & (loss > 0)
    out = np.zeros(loss.shape, dtype=np.float64)
    out[valid] = np.maximum((loss[valid] - ref[valid]) / loss[valid], 0.0)
    return out


def forgetting_degree(loss: ArrayLike, prev_loss: ArrayLike) -> np.ndarray:
    """phi_d = max((l_d - l_prev,d) / l_prev,d, 0); 0 where the previous loss is unknown (NaN) or <= 0."""
    loss = np.asarray(loss, dtype=np.float64)
    prev = _as_signal(prev_loss, loss.size, "prev_loss")
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
    _check_coefficients(alpha, beta, eta, epsilon)
    w = normalise(weights)
    gamma = _clean_signal(_as_signal(potential, w.size, "potential"))
    phi = _clean_signal(_as_signal(forgetting, w.size, "forgetting"))
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
    """Flexible domain expansion (DESIGN.md §2.3).

    Target share: s' = min(max_target_share, 1 - (1 - s) * exp(-eta * alpha * gamma_T)), i.e. the
    target closes a fraction of its gap to 1 set by its own learnable potential, so it never shrinks
    (unless it was above the cap). The non-targets share 1 - s' in proportion to
    w_j * exp(eta * beta * phi_j), so a domain being forgotten gets more replay, then epsilon-smoothing
    toward uniform within the non-target set.
    """
    _check_coefficients(alpha, beta, eta, epsilon)
    cap = _check_range("max_target_share", max_target_share, 0.0, 1.0, low_open=True)
    w = normalise(weights)
    target = _check_target_index(target, w.size)
    gamma = _clean_signal(_as_signal(potential, w.size, "potential"))
    phi = _clean_signal(_as_signal(forgetting, w.size, "forgetting"))
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


def doremi_update(weights: ArrayLike, loss: ArrayLike, ref_loss: ArrayLike, *, eta: float,
                  epsilon: float) -> np.ndarray:
    """Online DoReMi-style excess-loss update: w * exp(eta * max(l - l_ref, 0)), renormalise, smooth."""
    _check_coefficients(0.0, 0.0, eta, epsilon)
    w = normalise(weights)
    loss_a = _as_signal(loss, w.size, "loss")
    ref = _as_signal(ref_loss, w.size, "ref_loss")
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
    rew = _as_signal(reward, r.size, "reward")
    pi = _as_signal(probabilities, r.size, "probabilities")
    seen = np.isfinite(rew) & (pi > 0)
    r[seen] += rew[seen] / pi[seen]
    return r


def _check_target_index(target: int, size: int) -> int:
    if not isinstance(target, (int, np.integer)) or not 0 <= int(target) < size:
        raise ValueError(f"target index {target!r} is not a domain position in [0, {size}).")
    return int(target)


# ----------------------------------------------------------------------------------------------
# Strategies


@dataclass
class DomainSignals:
    """What the training loop measured at a re-weighting point (arrays indexed by domain)."""

    eval_loss: np.ndarray
    """l_d(t): held-out per-domain loss now."""
    prev_eval_loss: np.ndarray
    """l_d(t-1): the previous re-weighting point's loss (NaN at the first one)."""
    ref_loss: np.ndarray
    """l_ref,d: the loss each domain can reach."""
    train_loss: np.ndarray
    """Mean training loss per domain since the last update (NaN where the domain was not sampled)."""


@dataclass
class StepReport:
    """What one update did, for logging."""

    weights: np.ndarray
    potential: np.ndarray
    forgetting: np.ndarray


class WeightingStrategy:
    """A domain-weighting method: initial weights and how they change at each re-weighting point."""

    name: ClassVar[str] = ""
    dynamic: ClassVar[bool] = False
    needs_prior: ClassVar[bool] = False
    needs_sizes: ClassVar[bool] = False
    supports_expansion: ClassVar[bool] = False
    expansion_only: ClassVar[bool] = False

    def __init__(
        self,
        domains: Sequence[str],
        *,
        prior: Optional[ArrayLike] = None,
        sizes: Optional[ArrayLike] = None,
        alpha: float = 1.0,
        beta: float = 1.0,
        eta: float = 1.0,
        epsilon: float = 0.0,
        floor: float = 0.0,
        mode: str = "fostering",
        target: Optional[str] = None,
        target_initial_share: float = 0.5,
        target_max_share: float = 0.9,
    ) -> None:
        self.domains = list(domains)
        if not self.domains or len(set(self.domains)) != len(self.domains):
            raise ConfigError(f"domains={self.domains!r} must be a non-empty list of distinct names.")
        k = len(self.domains)
        self.prior = self._per_domain(prior, "prior")
        self.sizes = self._per_domain(sizes, "sizes")
        if self.needs_prior and self.prior is None:
            raise ConfigError(
                f"Method {self.name!r} needs a prior (the probe's domain distribution); pass prior=, "
                f"one value per domain ({', '.join(self.domains)})."
            )
        if self.needs_sizes and self.sizes is None:
            raise ConfigError(f"Method {self.name!r} needs the domain sizes; pass sizes=, one count per domain.")
        _check_coefficients(alpha, beta, eta, epsilon)
        self.alpha, self.beta, self.eta, self.epsilon = float(alpha), float(beta), float(eta), float(epsilon)
        self.floor = _check_range("floor", floor, 0.0, 1.0, high_open=True)

        if mode not in ("fostering", "expansion"):
            raise ConfigError(f"Unknown mode {mode!r}. Use 'fostering' or 'expansion'.")
        if mode == "expansion" and not self.supports_expansion:
            raise ConfigError(
                f"Expansion mode is a VersaTune mode; method={self.name!r} does not support it. "
                f"Use method 'versatune', or mode 'fostering'."
            )
        if mode != "expansion" and self.expansion_only:
            raise ConfigError(f"Method {self.name!r} is an expansion baseline; use mode 'expansion' with a target.")
        self.mode = mode
        self.target_index: Optional[int] = None
        if mode == "expansion":
            if target not in self.domains:
                what = "needs a target domain" if target is None else f"target {target!r} is not a domain of this run"
                raise ConfigError(
                    f"Expansion mode {what} (domains: {', '.join(self.domains)}). Pick the target from that list."
                )
            self.target_index = self.domains.index(target)
        self.target = target if mode == "expansion" else None
        self.target_initial_share = _check_range(
            "target_initial_share", target_initial_share, 0.0, 1.0, low_open=True, high_open=True)
        self.target_max_share = _check_range("target_max_share", target_max_share, 0.0, 1.0)
        if self.target_max_share < self.target_initial_share:
            raise ConfigError(
                f"target_max_share={target_max_share} must be >= target_initial_share={target_initial_share}."
            )
        self._k = k

    def _per_domain(self, values: Optional[ArrayLike], what: str) -> Optional[np.ndarray]:
        if values is None:
            return None
        a = np.asarray(values, dtype=np.float64)
        if a.shape != (len(self.domains),):
            raise ConfigError(
                f"{what} has {a.size} values but there are {len(self.domains)} domains "
                f"({', '.join(self.domains)}); give one value per domain, in that order."
            )
        return normalise(a, what)

    # -- interface ------------------------------------------------------------------------------

    def initial_weights(self) -> np.ndarray:
        raise NotImplementedError

    def update(self, weights: ArrayLike, signals: DomainSignals) -> StepReport:
        """Static strategies keep the weights; the signals are still computed for logging."""
        w = normalise(weights)
        return StepReport(w, *self._signals(signals))

    def state_dict(self) -> dict[str, Any]:
        return {"method": self.name}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("method") != self.name:
            raise ConfigError(
                f"The checkpoint's weighting state is for method {state.get('method')!r}, not {self.name!r}; "
                f"resume with the same method."
            )

    # -- helpers --------------------------------------------------------------------------------

    def _signals(self, signals: DomainSignals) -> tuple[np.ndarray, np.ndarray]:
        loss = _as_signal(signals.eval_loss, self._k, "eval_loss")
        return learnable_potential(loss, signals.ref_loss), forgetting_degree(loss, signals.prev_eval_loss)

    def _uniform(self) -> np.ndarray:
        return np.full(self._k, 1.0 / self._k)


STRATEGIES: dict[str, type[WeightingStrategy]] = {}


def register_strategy(cls: type[WeightingStrategy]) -> type[WeightingStrategy]:
    """Class decorator: make a strategy available under ``cls.name``."""
    if not cls.name or cls.name in STRATEGIES:
        raise ValueError(f"Strategy name {cls.name!r} is empty or already registered.")
    STRATEGIES[cls.name] = cls
    return cls


def build_strategy(method: str, domains: Sequence[str], *, mode: str = "fostering", **kwargs: Any) -> WeightingStrategy:
    """Look ``method`` up in :data:`STRATEGIES` and build it for ``domains``."""
    cls = STRATEGIES.get(method)
    if cls is None:
        raise ConfigError(f"Unknown method {method!r}. Use one of: {', '.join(STRATEGIES)}.")
    return cls(domains, mode=mode, **kwargs)


@register_strategy
class VersaTune(WeightingStrategy):
    """Start from the probe's distribution; re-weight by learnable potential and forgetting."""

    name = "versatune"
    dynamic = True
    needs_prior = True
    supports_expansion = True

    def initial_weights(self) -> np.ndarray:
        w = apply_floor(self.prior, self.floor)
        if self.target_index is not None:
            return expansion_initial_weights(w, self.target_index, self.target_initial_share)
        return w

    def update(self, weights: ArrayLike, signals: DomainSignals) -> StepReport:
        potential, forgetting = self._signals(signals)
        coef = dict(alpha=self.alpha, beta=self.beta, eta=self.eta, epsilon=self.epsilon)
        if self.target_index is not None:
            new = expansion_update(weights, potential, forgetting, self.target_index,
                                   max_target_share=self.target_max_share, **coef)
        else:
            new = versatune_update(weights, potential, forgetting, **coef)
        return StepReport(new, potential, forgetting)


@register_strategy
class VersaTuneConstant(WeightingStrategy):
    """The probe's distribution, never updated."""

    name = "versatune_constant"
    needs_prior = True

    def initial_weights(self) -> np.ndarray:
        return apply_floor(self.prior, self.floor)


@register_strategy
class Uniform(WeightingStrategy):
    name = "uniform"

    def initial_weights(self) -> np.ndarray:
        return self._uniform()


@register_strategy
class SizeProportional(WeightingStrategy):
    """Each domain in proportion to its number of training examples (plain concatenation)."""

    name = "size_proportional"
    needs_sizes = True

    def initial_weights(self) -> np.ndarray:
        return self.sizes.copy()  # already normalised


@register_strategy
class InverseProbe(WeightingStrategy):
    """w proportional to 1 - p: favours what the base model knows least."""

    name = "inverse_probe"
    needs_prior = True

    def initial_weights(self) -> np.ndarray:
        inverse = 1.0 - self.prior
        if not inverse.sum() > 0:  # one domain, or all prior mass on one domain of one
            return self._uniform()
        return apply_floor(inverse, self.floor)


@register_strategy
class DoReMi(WeightingStrategy):
    """Online DoReMi-style update on the held-out excess loss, from uniform."""

    name = "doremi"
    dynamic = True

    def initial_weights(self) -> np.ndarray:
        return self._uniform()

    def update(self, weights: ArrayLike, signals: DomainSignals) -> StepReport:
        potential, forgetting = self._signals(signals)
        new = doremi_update(weights, signals.eval_loss, signals.ref_loss, eta=self.eta, epsilon=self.epsilon)
        return StepReport(new, potential, forgetting)


@register_strategy
class OnlineDataMixing(WeightingStrategy):
    """EXP3 bandit over domains with the training loss as reward (Albalak et al. 2023).

    ``step`` counts reward rounds (update calls); exploration stays uniform until
    sqrt(ln K / (K t)) < 1/K, i.e. t > K ln K.
    """

    name = "odm"
    dynamic = True

    def __init__(self, domains: Sequence[str], **kwargs: Any) -> None:
        super().__init__(domains, **kwargs)
        self.cumulative_reward = np.zeros(self._k)
        self.step = 0

    def initial_weights(self) -> np.ndarray:
        return odm_probabilities(np.zeros(self._k), 0)

    def update(self, weights: ArrayLike, signals: DomainSignals) -> StepReport:
        potential, forgetting = self._signals(signals)
        # The weights that sampled the period are the probabilities of the importance weighting.
        pi = normalise(weights)
        self.cumulative_reward = odm_reward_update(self.cumulative_reward, signals.train_loss, pi)
        self.step += 1
        return StepReport(odm_probabilities(self.cumulative_reward, self.step), potential, forgetting)

    def state_dict(self) -> dict[str, Any]:
        return {"method": self.name, "cumulative_reward": [float(x) for x in self.cumulative_reward],
                "step": int(self.step)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        reward = np.asarray(state["cumulative_reward"], dtype=np.float64)
        if reward.shape != (self._k,):
            raise ConfigError(
                f"The checkpoint's ODM state has {reward.size} domains, this run has {self._k}; "
                f"resume with the same domains."
            )
        self.cumulative_reward = reward
        self.step = int(state["step"])


# ----------------------------------------------------------------------------------------------
# Expansion baselines (DESIGN.md §2.3): what VersaTune expansion is compared against.


@register_strategy
class TargetOnly(WeightingStrategy):
    """100% target data: the specialist whose target gain expansion should keep."""

    name = "target_only"
    supports_expansion = True
    expansion_only = True

    def initial_weights(self) -> np.ndarray:
        w = np.zeros(self._k)
        w[self.target_index] = 1.0
        return w


@register_strategy
class TargetUniform(WeightingStrategy):
    """The target at ``target_initial_share`` (as VersaTune expansion starts), the rest uniform, never updated."""

    name = "target_uniform"
    supports_expansion = True
    expansion_only = True

    def initial_weights(self) -> np.ndarray:
        if self._k == 1:
            return np.ones(1)
        w = np.full(self._k, (1.0 - self.target_initial_share) / (self._k - 1))
        w[self.target_index] = self.target_initial_share
        return w
