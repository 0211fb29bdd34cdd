"""Domain-weighted sampling that follows the live mixture weights, with checkpointable state.

Each draw picks a domain i.i.d. from the current weights, then the next example of that domain's
shuffled order (without replacement; a new shuffle once the domain is exhausted: one epoch per
domain). Everything is deterministic under the seed, and :meth:`DomainSampler.state_dict` /
:meth:`DomainSampler.load_state_dict` resume a stream exactly where it stopped.

Pure numpy plus :mod:`versatune_mlops.errors` and :mod:`versatune_mlops.mixing.weights`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from .weights import normalise

_STATE_VERSION = 1


class DomainSampler:
    """Draws ``(domain index, example index within domain)`` pairs by the live domain weights."""

    def __init__(self, domain_sizes: Sequence[int], weights: Any, seed: int) -> None:
        sizes = [int(n) for n in domain_sizes]
        if not sizes:
            raise ConfigError("domain_sizes is empty; the sampler needs at least one domain.")
        for i, n in enumerate(sizes):
            if n < 1:
                raise ConfigError(
                    f"Domain index {i} has {n} training examples; every domain needs at least one. "
                    f"Add data for it or remove it from the run's domains."
                )
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.seed = int(seed)
        self.weights = self._validated(weights)
        self._rng = np.random.Generator(np.random.PCG64(self.seed))
        self.counts = np.zeros(len(sizes), dtype=np.int64)
        # Per domain: how many times its order was reshuffled, and the position in the current order.
        self._epochs = np.zeros(len(sizes), dtype=np.int64)
        self._cursors = np.zeros(len(sizes), dtype=np.int64)
        self._orders: dict[int, np.ndarray] = {}  # cache; rebuilt from (seed, domain, epoch)

    # -- weights --------------------------------------------------------------------------------

    def _validated(self, weights: Any) -> np.ndarray:
        w = normalise(weights, "sampler weights")
        if w.size != self.sizes.size:
            raise ConfigError(
                f"sampler weights have {w.size} values but there are {self.sizes.size} domains; "
                f"give one weight per domain."
            )
        return w

    def set_weights(self, weights: Any) -> None:
        """Use new mixture weights for every later draw."""
        self.weights = self._validated(weights)

    # -- drawing --------------------------------------------------------------------------------

    def _order(self, domain: int) -> np.ndarray:
        # Each (seed, domain, epoch) has its own generator, so an order never depends on how draws
        # of other domains interleaved, and the state need not store permutations.
        order = self._orders.get(domain)
        if order is None:
            rng = np.random.Generator(np.random.PCG64([self.seed, domain, int(self._epochs[domain])]))
            order = rng.permutation(int(self.sizes[domain]))
            self._orders[domain] = order
        return order

    def sample(self, batch_size: int) -> list[tuple[int, int]]:
        """Draw ``batch_size`` examples: domains i.i.d. by the weights, examples without replacement."""
        if int(batch_size) < 0:
            raise ValueError(f"batch_size={batch_size} must be >= 0.")
        # rng.choice builds a CDF, so a zero-weight domain can never be selected.
        domains = self._rng.choice(self.sizes.size, size=int(batch_size), p=self.weights)
        out: list[tuple[int, int]] = []
        for d in domains.tolist():
            if self._cursors[d] >= self.sizes[d]:
                self._epochs[d] += 1
                self._cursors[d] = 0
                self._orders.pop(d, None)
            out.append((d, int(self._order(d)[self._cursors[d]])))
            self._cursors[d] += 1
            self.counts[d] += 1
        return out

    # -- monitoring -----------------------------------------------------------------------------

    def realised_share(self) -> np.ndarray:
        """Cumulative draws per domain / total draws (all zeros before the first draw)."""
        total = self.counts.sum()
        if total == 0:
            return np.zeros(self.sizes.size)
        return self.counts / total

    @property
    def epochs_completed(self) -> float:
        """Total draws / total examples: how many passes over the data's size have been drawn."""
        return float(self.counts.sum() / self.sizes.sum())

    # -- checkpointing --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state; loading it continues the stream exactly."""
        return {
            "version": _STATE_VERSION,
            "seed": self.seed,
            "sizes": self.sizes.tolist(),
            "weights": self.weights.tolist(),
            "counts": self.counts.tolist(),
            "epochs": self._epochs.tolist(),
            "cursors": self._cursors.tolist(),
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != _STATE_VERSION:
            raise DataError(f"Sampler state version {state.get('version')!r} is not supported; start a fresh run.")
        if list(state["sizes"]) != self.sizes.tolist():
            raise DataError(
                f"The checkpoint's domain sizes {list(state['sizes'])} do not match this run's data "
                f"{self.sizes.tolist()}; resume with the same data and split, or start a fresh run."
            )
        self.seed = int(state["seed"])
        self._validated(state["weights"])
        # Keep the stored floats as they are: renormalising could move them by an ulp and change draws.
        self.weights = np.asarray(state["weights"], dtype=np.float64)
        self.counts = np.asarray(state["counts"], dtype=np.int64)
        self._epochs = np.asarray(state["epochs"], dtype=np.int64)
        self._cursors = np.asarray(state["cursors"], dtype=np.int64)
        self._orders = {}
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = state["rng"]
        self._rng = rng
