"""The VersaTune training run, top to bottom.

    prepare inputs -> prior (probe) -> evaluate the base model -> reference losses -> initial weights
    -> the step loop (steps.py): sample by the live weights, step; every `interval` steps evaluate
       per domain and re-weight; every `checkpoint_every` steps checkpoint for an exact resume
    -> evaluate again (loss + accuracy) -> save the model -> summary.json

Tracking, progress and tests plug in through :class:`~versatune_mlops.training.hooks.TrainingHooks`;
nothing here knows about MLflow or Ray.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from ..config import RunConfig
from . import checkpointing, sharding
from .evaluation import domain_metrics
from .hooks import HookList, TrainingHooks
from .loss import precision_on
from .parallel import SINGLE_PROCESS, Parallel
from .reference import reference_losses
from .setup import (assemble_run, evaluate_base, evaluate_losses, initial_state, is_sharded, make_optimizer,
                    measure_accuracy, prepare_inputs, resolve_prior, seed_everything, train_sizes, training_loss_module)
from .state import LoopState, RunInputs, TrainingRun
from .steps import run_steps

log = logging.getLogger(__name__)


def train(
    config: RunConfig,
    output_dir: str | Path,
    hooks: Sequence[TrainingHooks] = (),
    resume_from: Optional[str | Path] = None,
    inputs: Optional[RunInputs] = None,
    parallel: Parallel = SINGLE_PROCESS,
    worker_hooks: Sequence[TrainingHooks] = (),
) -> dict[str, Any]:
    """Run VersaTune (or a baseline) SFT as configured; returns the summary written to summary.json.

    ``hooks`` run on the main worker only (tracking); ``worker_hooks`` on every worker (e.g. Ray's
    checkpoint reporting). With ``parallel.world_size > 1`` this function runs once per worker
    inside an initialised process group.
    """
    started = time.perf_counter()
    hooks = HookList((list(hooks) if parallel.is_main else []) + list(worker_hooks))
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config.train.seed)
    inputs = inputs or prepare_inputs(config)

    # The prior first: the probe generates with the whole model, before FSDP shards it.
    prior = None if resume_from is not None else resolve_prior(config, inputs, output_dir, write=parallel.is_main)
    # Wrapped (DDP) or sharded (FSDP) before the optimizer is built: FSDP replaces the parameters.
    train_model = training_loss_module(config, inputs.loaded.model, parallel)
    sharded_loss = train_model if is_sharded(config, parallel) else None
    optimizer, scheduler = make_optimizer(config, inputs.loaded.model)
    if resume_from is not None:
        state, sampler_state, strategy_state = checkpointing.load(resume_from, inputs.loaded.model, optimizer, scheduler,
                                                                  sharded=sharded_loss is not None)
        log.info("Resumed from %s at step %d", resume_from, state.step)
    else:
        state, sampler_state, strategy_state = fresh_state(config, inputs, prior, parallel, sharded_loss), None, None
    run = assemble_run(config, inputs, state, optimizer, scheduler, parallel, sampler_state, strategy_state,
                       train_model=train_model)
    announce(config, run, hooks, resumed=resume_from is not None)

    run_steps(config, run, hooks, output_dir)

    eval_started = time.perf_counter()
    losses_after = evaluate_losses(config, inputs, run.model, parallel, sharded_loss)
    accuracy_after = measure_accuracy(config, inputs, run.model)
    run.timings.eval_seconds += time.perf_counter() - eval_started
    hooks.on_eval(state.step, domain_metrics(losses_after, accuracy_after))
    if sharded_loss is not None:
        # FSDP leaves the root unit (embeddings, LM head) gathered after a forward with no backward;
        # shard it back so what follows, the memory figures included, sees each worker's share.
        sharded_loss.reshard()

    if config.train.save_model:
        # Under FSDP every worker takes part in gathering the weights; rank 0 writes them.
        weights = sharding.full_state_dict(run.model) if sharded_loss is not None else None
        if parallel.is_main:
            checkpointing.save_final_model(output_dir / "model", run.model, inputs.loaded.tokenizer, weights)
    summary = build_summary(config, run, losses_after, accuracy_after, output_dir,
                            wall_seconds=time.perf_counter() - started)
    if parallel.is_main:
        checkpointing.write_json_atomic(output_dir / "summary.json", summary)
    hooks.on_end(summary)
    return summary


def fresh_state(config: RunConfig, inputs: RunInputs, prior: tuple[dict[str, float], Optional[dict]],
                parallel: Parallel = SINGLE_PROCESS, sharded_loss=None) -> LoopState:
    """Base-model evaluation, reference losses and initial weights of a new run, from its
    ``(prior, probe result)`` (:func:`~.setup.resolve_prior`).

    Every worker computes the same values: the probe and reference runs are seeded, the
    evaluation is summed over workers.
    """
    prior, probe_result = prior
    base = inputs.base_eval or evaluate_base(config, inputs, parallel, sharded_loss)
    reference = reference_losses(config, inputs, base.eval_loss)
    return initial_state(config, inputs, prior, probe_result, base, reference)


def announce(config: RunConfig, run: TrainingRun, hooks: TrainingHooks, resumed: bool) -> None:
    """Tell the hooks what the run starts from (and log the base evaluation of a new run)."""
    state, inputs, domains = run.state, run.inputs, run.domains
    hooks.on_start(config, domains, state.initial_weights, {
        "prior": state.prior, "reference_loss": state.reference_loss,
        "train_sizes": dict(zip(domains, train_sizes(inputs).tolist())),
        "eval_sizes": {d: len(inputs.eval_encoded[d]) for d in domains}, "model_source": inputs.loaded.source,
        "probe_result": state.probe_result,
    })
    if not resumed:
        hooks.on_eval(0, domain_metrics(state.eval_loss_before, state.accuracy_before))


def build_summary(config: RunConfig, run: TrainingRun, losses_after: dict[str, float],
                  accuracy_after: dict[str, float], output_dir: Path, wall_seconds: float) -> dict[str, Any]:
    """summary.json: what the run started from, how the weights moved, and what it reached."""
    state, domains, mc, t = run.state, run.domains, config.method, config.train
    return {
        "domains": domains,
        "method": mc.method,
        "mode": mc.mode,
        "target": mc.target,
        "coefficients": {"alpha": mc.alpha, "beta": mc.beta, "eta": mc.eta, "epsilon": mc.epsilon,
                         "interval": run.interval},
        "prior": state.prior,
        "initial_weights": state.initial_weights,
        "final_weights": dict(zip(domains, state.weights)),
        "weight_trajectory": [{"step": 0, "weights": state.initial_weights}]
        + [{"step": r["step"], "weights": r["weights"]} for r in state.trajectory],
        "reweighting_records": state.trajectory,
        "reference_loss": state.reference_loss,
        "realised_share": dict(zip(domains, run.sampler.realised_share().tolist())),
        "eval_loss_before": state.eval_loss_before,
        "eval_loss_after": losses_after,
        "accuracy_before": state.accuracy_before,
        "accuracy_after": accuracy_after,
        "metrics_before": domain_metrics(state.eval_loss_before, state.accuracy_before),
        "metrics_after": domain_metrics(losses_after, accuracy_after),
        "steps": state.step,
        "tokens_trained": state.tokens_trained,
        "response_tokens_trained": state.response_tokens_trained,
        "padding_fraction": run.padding.fraction(),
        "train_seconds": run.timings.train_seconds,
        "eval_seconds": run.timings.eval_seconds,
        "midrun_eval_seconds": run.timings.midrun_eval_seconds,
        "wall_seconds": wall_seconds,
        "model_source": run.inputs.loaded.source,
        # model.bf16 is a request: a CPU without bf16 instructions computes in fp32 (loss.autocast_context).
        "precision": precision_on(next(run.model.parameters()).device, config.model.bf16),
        # This worker's (rank 0's) peak GPU memory (None on CPU) and peak resident memory.
        "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
        "peak_rss_bytes": peak_rss_bytes(),
        # Every worker's own figures, in rank order (one entry for a single process): under FSDP each
        # holds its shard of the parameters and of the optimizer state, under DDP a whole copy.
        "per_worker": {"peak_rss_bytes": [int(b) for b in run.parallel.gather(peak_rss_bytes() or 0)],
                       "parameter_and_optimizer_bytes": [
                           int(b) for b in run.parallel.gather(parameter_and_optimizer_bytes(run.model, run.optimizer))]},
        "model_dir": str(output_dir / "model") if t.save_model else None,
        "config": config.to_dict(),
    }


def parameter_and_optimizer_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the parameters and optimizer state this worker holds: its local shards under FSDP
    (parameters and AdamW moments are DTensors there), whole tensors otherwise."""
    def local(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to_local() if hasattr(tensor, "to_local") else tensor

    tensors = [local(p) for p in model.parameters()]
    tensors += [local(v) for per_param in optimizer.state.values() for v in per_param.values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in tensors)


def peak_rss_bytes() -> Optional[int]:
    """This process's peak resident memory (ru_maxrss: kilobytes on Linux, bytes on macOS)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
