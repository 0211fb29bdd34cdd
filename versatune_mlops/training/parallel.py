"""Data-parallel context for the training loop: which worker this is and how to sum across workers.

The loop and the evaluation use it; a single process is ``Parallel()`` (rank 0 of 1, sums are the
identity), so the plain path has no distributed code at all. Ray Train workers build one from
their context and sum through ``torch.distributed`` (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Sequence, TypeVar

import numpy as np
import torch

T = TypeVar("T")


@dataclass(frozen=True)
class Parallel:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This worker's share of a sequence: every world_size-th item starting at its rank."""
        return list(items[self.rank :: self.world_size])

    def sum(self, values: np.ndarray) -> np.ndarray:
        """Element-wise sum over all workers (float64), identical on every worker."""
        values = np.asarray(values, dtype=np.float64)
        if self.world_size == 1:
            return values
        tensor = torch.from_numpy(values.copy())
        if torch.distributed.get_backend() == "nccl":
            tensor = tensor.cuda()
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor.cpu().numpy()

    def gather(self, value: float) -> list[float]:
        """One number from every worker, in rank order, identical on every worker (e.g. each
        worker's peak memory, which only that worker can measure)."""
        slots = np.zeros(self.world_size)
        slots[self.rank] = value
        return self.sum(slots).tolist()


SINGLE_PROCESS = Parallel()


def gradient_sync(module: torch.nn.Module, enabled: bool):
    """Context for one micro-batch's forward and backward: under DDP, ``enabled=False`` skips the
    gradient all-reduce (``no_sync``), so accumulated micro-batches communicate once, on the last.

    FSDP reduce-scatters every micro-batch on purpose: skipping it would keep every block's full,
    unsharded gradient in memory until the last micro-batch, which is what sharding exists to avoid.
    """
    if enabled or not isinstance(module, torch.nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return module.no_sync()
