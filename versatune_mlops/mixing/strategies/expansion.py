"""Expansion baselines: what VersaTune expansion is compared against (100% target; target + uniform rest)."""

from __future__ import annotations

import numpy as np

from .base import WeightingStrategy, register_strategy


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
