"""VersaTune: start from the probe's distribution, re-weight by learnable potential and forgetting."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from ...errors import ConfigError
from ..weights import (ArrayLike, apply_floor, cap_shares, expansion_initial_weights, expansion_update,
                       share_cap_problem, versatune_update)
from .base import DomainSignals, StepReport, WeightingStrategy, register_strategy


@register_strategy
class VersaTune(WeightingStrategy):
    """Start from the probe's distribution; re-weight by learnable potential and forgetting."""

    name = "versatune"
    dynamic = True
    needs_prior = True
    supports_expansion = True
    options = ("max_domain_share",)

    def __init__(self, domains: Sequence[str], *, max_domain_share: Optional[float] = None, **kwargs: Any) -> None:
        super().__init__(domains, **kwargs)
        problem = share_cap_problem("method.max_domain_share", max_domain_share, self._k)
        if problem:
            raise ConfigError(problem)
        self.max_domain_share = max_domain_share

    def _capped(self, weights: np.ndarray) -> np.ndarray:
        """Fostering only: expansion bounds its target with target_max_share instead."""
        if self.max_domain_share is None or self.target_index is not None:
            return weights
        return cap_shares(weights, self.max_domain_share)

    def initial_weights(self) -> np.ndarray:
        w = apply_floor(self.prior, self.floor)
        if self.target_index is not None:
            return expansion_initial_weights(w, self.target_index, self.target_initial_share)
        return self._capped(w)

    def update(self, weights: ArrayLike, signals: DomainSignals) -> StepReport:
        potential, forgetting = self._signals(signals)
        coef = self.coefficients.as_kwargs()
        if self.target_index is not None:
            new = expansion_update(weights, potential, forgetting, self.target_index,
                                   max_target_share=self.target_max_share, **coef)
        else:
            new = self._capped(versatune_update(weights, potential, forgetting, **coef))
        return StepReport(new, potential, forgetting)
