"""VersaTune: start from the probe's distribution, re-weight by learnable potential and forgetting."""

from __future__ import annotations

import numpy as np

from ..weights import ArrayLike, apply_floor, expansion_initial_weights, expansion_update, versatune_update
from .base import DomainSignals, StepReport, WeightingStrategy, register_strategy


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
        coef = self.coefficients.as_kwargs()
        if self.target_index is not None:
            new = expansion_update(weights, potential, forgetting, self.target_index,
                                   max_target_share=self.target_max_share, **coef)
        else:
            new = versatune_update(weights, potential, forgetting, **coef)
        return StepReport(new, potential, forgetting)
