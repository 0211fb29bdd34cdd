"""Static mixtures: set once at the start and never updated."""

from __future__ import annotations

import numpy as np

from ..weights import apply_floor
from .base import WeightingStrategy, register_strategy


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
class VersaTuneConstant(WeightingStrategy):
    """The probe's distribution, never updated."""

    name = "versatune_constant"
    needs_prior = True

    def initial_weights(self) -> np.ndarray:
        return apply_floor(self.prior, self.floor)
