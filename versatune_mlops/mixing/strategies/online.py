"""Online baselines that re-weight during training: DoReMi, ODM and Aioli."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ...errors import ConfigError
from ..baselines import (aioli_estimate_matrix, aioli_normalise_matrix, aioli_probe_mixtures, aioli_probe_order,
                         aioli_update, doremi_update, odm_probabilities, odm_reward_update)
from ..weights import ArrayLike, normalise
from .base import DomainSignals, StepReport, WeightingStrategy, register_strategy


@register_strategy
class DoReMi(WeightingStrategy):
    """Online DoReMi-style update on the held-out excess loss, from uniform."""

    name = "doremi"
    dynamic = True

    def initial_weights(self) -> np.ndarray:
        return self._uniform()

    def update(self, weights: ArrayLike, signals: DomainSignals) -> StepReport:
        potential, forgetting = self._signals(signals)
        new = doremi_update(weights, signals.eval_loss, signals.ref_loss, eta=self.coefficients.eta,
                            epsilon=self.coefficients.epsilon)
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


@register_strategy
class Aioli(WeightingStrategy):
    """Aioli (Chen et al., ICLR 2025): at each re-weighting point, LearnParams probes every domain's
    mixture for a few steps, estimates the linear dynamic mixing law A from the loss changes, and
    moves the mixture by p_j <- p_j exp(eta sum_i A_ij) (maths in :mod:`.weights`). From uniform."""

    name = "aioli"
    dynamic = True
    needs_held_out = True
    options = ("aioli_probe_rounds", "aioli_probe_steps", "aioli_one_hot_factor")

    def __init__(self, domains: Sequence[str], *, aioli_probe_rounds: int = 1, aioli_probe_steps: int = 1,
                 aioli_one_hot_factor: float = 0.625, **kwargs: Any) -> None:
        super().__init__(domains, **kwargs)
        self.rounds, self.steps, self.one_hot_factor = aioli_probe_rounds, aioli_probe_steps, aioli_one_hot_factor
        self.round = 0  # completed updates: seeds the next probe order, so a resume probes in the same order

    def initial_weights(self) -> np.ndarray:
        return self._uniform()

    def _order(self) -> np.ndarray:
        return aioli_probe_order(self._k, self.rounds, seed=self.round)

    def probe_plan(self) -> tuple[list[np.ndarray], int]:
        mixtures = aioli_probe_mixtures(self._k, self.one_hot_factor)
        return [mixtures[i] for i in self._order()], self.steps

    def probe_step_count(self) -> int:
        return self._k * self.rounds * self.steps

    def update(self, weights: ArrayLike, signals: DomainSignals) -> StepReport:
        potential, forgetting = self._signals(signals)
        if signals.probe_losses is None:  # no room left for probes before the end: keep the mixture
            return StepReport(normalise(weights), potential, forgetting)
        matrix = aioli_estimate_matrix(signals.eval_loss, signals.probe_losses, self._order(), self.one_hot_factor)
        self.last_matrix = aioli_normalise_matrix(matrix)
        self.round += 1
        new = aioli_update(weights, self.last_matrix, eta=self.coefficients.eta, epsilon=self.coefficients.epsilon)
        return StepReport(new, potential, forgetting)

    def state_dict(self) -> dict[str, Any]:
        return {"method": self.name, "round": int(self.round)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.round = int(state["round"])
