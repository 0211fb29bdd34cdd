"""What a run carries: the prepared inputs, the loop state a checkpoint restores, and the live
objects of one training run. Plain dataclasses: no behaviour, so every module can import them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from ..data.examples import DomainData
from ..mixing.sampler import DomainSampler
from ..mixing.strategies import WeightingStrategy
from .models import LoadedModel
from .parallel import SINGLE_PROCESS, Parallel


@dataclass
class BaseEvaluation:
    """Held-out loss (and accuracy, when measured) of the model as loaded, before any training."""

    eval_loss: dict[str, float]
    accuracy: dict[str, float]


@dataclass
class RunInputs:
    """Data, model and the encoded examples: everything prepared before training."""

    data: DomainData
    loaded: LoadedModel
    train_encoded: dict[str, list[dict]]
    eval_encoded: dict[str, list[dict]]
    base_eval: Optional[BaseEvaluation] = None
    """The base model's held-out loss and accuracy when a caller already measured them on this
    model and data (several runs on the same inputs share one: the benchmark, a sweep); None:
    measured at the start of the run."""


@dataclass
class LoopState:
    """Everything besides model/optimizer/scheduler that a checkpoint restores for an exact resume."""

    step: int = 0
    weights: list[float] = field(default_factory=list)
    trajectory: list[dict] = field(default_factory=list)
    prev_eval_loss: list[float] = field(default_factory=list)
    train_loss_sum: list[float] = field(default_factory=list)
    train_loss_tokens: list[int] = field(default_factory=list)
    tokens_trained: int = 0
    """Non-padding tokens of the trained batches (prompt and response)."""
    response_tokens_trained: int = 0
    """The labelled (response) tokens among them: what the loss is computed on."""
    eval_loss_before: dict[str, float] = field(default_factory=dict)
    accuracy_before: dict[str, float] = field(default_factory=dict)
    reference_loss: dict[str, float] = field(default_factory=dict)
    initial_weights: dict[str, float] = field(default_factory=dict)
    prior: dict[str, float] = field(default_factory=dict)
    probe_result: Optional[dict] = None
    """The probe's output when this run measured its own prior."""


@dataclass
class Timings:
    """Where the step loop's wall time went; training time is the rest."""

    eval_seconds: float = 0.0
    """All evaluations: mid-run re-weighting points and the final one."""
    midrun_eval_seconds: float = 0.0
    side_seconds: float = 0.0
    """Mid-run evaluations and checkpoints: excluded from training time and tokens/s."""
    loop_started: float = 0.0
    train_seconds: float = 0.0


@dataclass
class PaddingCounter:
    """Share of the trained batches' positions that were padding (a diagnostic, not checkpointed)."""

    positions: int = 0
    padding: int = 0

    def add(self, attention_mask: torch.Tensor) -> None:
        self.positions += attention_mask.numel()
        self.padding += int(attention_mask.numel() - attention_mask.sum())

    def fraction(self) -> float:
        return self.padding / self.positions if self.positions else 0.0


@dataclass
class TrainingRun:
    """The live objects of one run, as the step loop uses them."""

    inputs: RunInputs
    state: LoopState
    model: torch.nn.Module
    train_model: torch.nn.Module
    """What a step calls: ``batch -> (loss sum, response tokens)`` per row (the response-only loss of
    ``model``, compiled and DDP-wrapped as configured)."""
    optimizer: torch.optim.Optimizer
    scheduler: Any
    trainable: list[torch.nn.Parameter]
    """The parameters the optimizer updates (the ones gradient clipping sees), listed once."""
    strategy: WeightingStrategy
    sampler: DomainSampler
    interval: int
    """Re-weight every this many steps."""
    ref_loss: np.ndarray
    parallel: Parallel = SINGLE_PROCESS
    sharded_loss: Optional[torch.nn.Module] = None
    """Under FSDP: the sharded root (``train_model``), which evaluation must call too; None otherwise."""
    timings: Timings = field(default_factory=Timings)
    padding: PaddingCounter = field(default_factory=PaddingCounter)
    pending_batches: list[list[tuple[int, int]]] = field(default_factory=list)
    """Drawn global batches of the current length-grouped window (empty at every window boundary,
    which is where checkpoints are taken, so it is never part of a checkpoint)."""
    last_checkpoint: Optional[str] = None

    @property
    def domains(self) -> list[str]:
        return self.inputs.data.domains
