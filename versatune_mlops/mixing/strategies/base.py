"""The strategy interface and its registry: what every mixing method implements, and how the
rest of the code finds methods by name (:data:`STRATEGIES`, :func:`method_names`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Sequence

import numpy as np

from ...errors import ConfigError
from ..weights import (ArrayLike, Coefficients, as_signal, forgetting_degree, learnable_potential, normalise,
                       released_code_potential)

MODES = ("fostering", "expansion")
POTENTIALS = ("relative", "absolute")
# Expansion's default target shares, in one place (the config's fields read them): at .9 the target
# keeps >= 93% of a 100%-target run's gain on both targets of the multi-genre benchmark (.5 kept
# 74-82%, BENCHMARKS.md §7), and with the cap equal to the start only the replay is re-weighted.
DEFAULT_TARGET_INITIAL_SHARE = 0.9
DEFAULT_TARGET_MAX_SHARE = 0.9


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
    probe_losses: Optional[np.ndarray] = None
    """Held-out loss per domain after each probe of :meth:`WeightingStrategy.probe_plan`, one row per
    probe mixture, in order; None for strategies without probes."""


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
    options: ClassVar[tuple[str, ...]] = ()
    """``method.*`` config keys this class takes as keyword arguments (``setup.make_strategy`` passes them)."""
    needs_held_out: ClassVar[bool] = False
    """Whether the update needs held-out evaluations of its own (Aioli's probe mixtures), so it cannot
    run on the training-loss signal (``method.signal=train``)."""

    def __init__(
        self,
        domains: Sequence[str],
        *,
        prior: Optional[ArrayLike] = None,
        sizes: Optional[ArrayLike] = None,
        coefficients: Coefficients = Coefficients(),
        floor: float = 0.0,
        mode: str = "fostering",
        target: Optional[str] = None,
        target_initial_share: float = DEFAULT_TARGET_INITIAL_SHARE,
        target_max_share: float = DEFAULT_TARGET_MAX_SHARE,
        potential: str = "relative",
    ) -> None:
        """``potential``: ``relative`` (the paper's gamma = (l - l_ref) / l) or ``absolute`` (the
        released code's l - l_ref). ``coefficients``, ``floor`` and the target shares arrive validated (config.validate owns
        their ranges); what is checked here depends on the run's data: the domains, prior and target."""
        self.domains = list(domains)
        if not self.domains or len(set(self.domains)) != len(self.domains):
            raise ConfigError(f"domains={self.domains!r} must be a non-empty list of distinct names.")
        self.prior = self._per_domain(prior, "prior")
        self.sizes = self._per_domain(sizes, "sizes")
        if self.needs_prior and self.prior is None:
            raise ConfigError(
                f"Method {self.name!r} needs a prior (the probe's domain distribution); pass prior=, "
                f"one value per domain ({', '.join(self.domains)})."
            )
        if self.needs_sizes and self.sizes is None:
            raise ConfigError(f"Method {self.name!r} needs the domain sizes; pass sizes=, one count per domain.")
        self.coefficients = coefficients
        self.floor = float(floor)
        check_method_mode(self.name, mode)
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
        self.target_initial_share = float(target_initial_share)
        self.target_max_share = float(target_max_share)
        self._k = len(self.domains)
        if potential not in POTENTIALS:
            raise ConfigError(f"potential={potential!r} is unknown; use one of {', '.join(POTENTIALS)}.")
        self.potential = potential

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

    def probe_plan(self) -> tuple[list[np.ndarray], int]:
        """Mixtures to train on before the next :meth:`update`, and how many steps each; every probe
        is followed by an evaluation whose losses reach ``update`` as ``signals.probe_losses``.

        The one hook for methods that learn from short runs (Aioli): the step loop takes the probe
        steps as steps of the run itself (they count in train.max_steps, as in the reference code,
        which also trains the real model during LearnParams). Most strategies probe nothing."""
        return [], 0

    def probe_step_count(self) -> int:
        """Steps one round of probes takes (to check it fits in the re-weighting interval)."""
        return 0

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
        loss = as_signal(signals.eval_loss, self._k, "eval_loss")
        score = released_code_potential if self.potential == "absolute" else learnable_potential
        return score(loss, signals.ref_loss), forgetting_degree(loss, signals.prev_eval_loss)

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
    return strategy_class(method)(domains, mode=mode, **kwargs)


def strategy_class(method: str) -> type[WeightingStrategy]:
    cls = STRATEGIES.get(method)
    if cls is None:
        raise ConfigError(f"Unknown method {method!r}. Use one of: {', '.join(STRATEGIES)}.")
    return cls


def method_names(*, dynamic: Optional[bool] = None, needs_prior: Optional[bool] = None,
                 supports_expansion: Optional[bool] = None, expansion_only: Optional[bool] = None) -> tuple[str, ...]:
    """Registered method names, in registration order, whose class attributes match every given filter.

    The one list of methods: config, the loop and the benchmark ask here instead of keeping their own.
    """
    wanted = {"dynamic": dynamic, "needs_prior": needs_prior, "supports_expansion": supports_expansion,
              "expansion_only": expansion_only}
    return tuple(name for name, cls in STRATEGIES.items()
                 if all(value is None or getattr(cls, attr) == value for attr, value in wanted.items()))


def check_method_mode(method: str, mode: str) -> None:
    """The method exists and supports the mode (the classes' own attributes say which)."""
    cls = strategy_class(method)
    if mode not in MODES:
        raise ConfigError(f"Unknown mode {mode!r}. Use 'fostering' or 'expansion'.")
    if mode == "expansion" and not cls.supports_expansion:
        raise ConfigError(
            f"Expansion mode supports the methods {', '.join(method_names(supports_expansion=True))}; "
            f"method={method!r} does not support it. Use one of those, or mode 'fostering'."
        )
    if mode != "expansion" and cls.expansion_only:
        raise ConfigError(f"method={method!r} is an expansion baseline; pass --mode expansion --target DOMAIN.")
