"""The VersaTune training loop: read it top to bottom.

    prepare inputs -> initial weights (probe prior) -> evaluate base model -> reference losses
    -> for each step: sample a batch by the live weights, forward, backward, optimizer step
       every `interval` steps (or once per epoch): evaluate per domain, re-weight, update sampler
       every `checkpoint_every` steps: checkpoint everything needed for an exact resume
    -> evaluate again (loss + accuracy) -> save model -> summary.json

Tracking, progress and tests plug in through :class:`~versatune_mlops.hooks.TrainingHooks`.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_scheduler

from . import checkpointing
from .config import RunConfig, check_domains_against_data
from .data import DomainData, load_domain_data
from .errors import TrainingDivergedError
from .evaluation import domain_accuracy, domain_losses, domain_metrics, per_example_loss
from .formatting import check_max_length, collate, encode_split
from .hooks import HookList, TrainingHooks
from .models import LoadedModel, load_model
from .parallel import SINGLE_PROCESS, Parallel
from .probe import example_text, run_probe
from .reweighting import DomainSignals, build_strategy, normalise
from .sampler import DomainSampler

log = logging.getLogger(__name__)

# Methods whose initial weights come from the probe's distribution.
PRIOR_METHODS = ("versatune", "versatune_constant", "inverse_probe")


@dataclass
class RunInputs:
    """Data, model and the encoded examples: everything prepared before training."""

    data: DomainData
    loaded: LoadedModel
    train_encoded: dict[str, list[dict]]
    eval_encoded: dict[str, list[dict]]
    base_eval: Optional["BaseEvaluation"] = None
    """The base model's held-out loss and accuracy when already measured (the benchmark evaluates
    the base model once and shares it across runs); None: measured at the start of the run."""


@dataclass
class BaseEvaluation:
    eval_loss: dict[str, float]
    accuracy: dict[str, float]


def evaluate_base(config: RunConfig, inputs: RunInputs, parallel: Parallel = SINGLE_PROCESS) -> BaseEvaluation:
    """Held-out loss and accuracy of the model as loaded, before any training."""
    model, t = inputs.loaded.model, config.train
    losses = domain_losses(model, inputs.eval_encoded, t.eval_batch_size, inputs.loaded.tokenizer.pad_token_id,
                           config.model.bf16, parallel)
    return BaseEvaluation(eval_loss=losses, accuracy=_accuracy(config, inputs, model))


def prepare_inputs(config: RunConfig, data: Optional[DomainData] = None) -> RunInputs:
    data = data or load_domain_data(config.data)
    check_domains_against_data(config, data.domains)
    corpus = [example_text(ex) for d in data.domains for ex in data.train[d]]
    # LoRA's A matrices are drawn from the global RNG: seed it here, so the initialisation is the
    # run's (train.seed), not whatever an earlier run in this process left (benchmarks, sweeps).
    _seed_everything(config.train.seed)
    loaded = load_model(config.model, tokenizer_corpus=corpus)
    check_max_length(loaded.tokenizer, config.train.max_length)
    train_encoded = encode_split(loaded.tokenizer, data.train, config.train.max_length, "train")
    eval_encoded = encode_split(loaded.tokenizer, data.eval, config.train.max_length, "eval")
    return RunInputs(data=data, loaded=loaded, train_encoded=train_encoded, eval_encoded=eval_encoded)


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
    eval_loss_before: dict[str, float] = field(default_factory=dict)
    accuracy_before: dict[str, float] = field(default_factory=dict)
    reference_loss: dict[str, float] = field(default_factory=dict)
    initial_weights: dict[str, float] = field(default_factory=dict)
    prior: dict[str, float] = field(default_factory=dict)
    probe_result: Optional[dict] = None
    """The probe's output when this run measured its own prior."""


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
    t, mc = config.train, config.method
    _seed_everything(t.seed)

    inputs = inputs or prepare_inputs(config)
    data, model, tokenizer = inputs.data, inputs.loaded.model, inputs.loaded.tokenizer
    domains = data.domains
    sizes = np.array([len(inputs.train_encoded[d]) for d in domains], dtype=float)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=t.learning_rate, weight_decay=t.weight_decay)
    scheduler = get_scheduler(t.lr_schedule, optimizer, num_warmup_steps=int(t.warmup_ratio * t.max_steps),
                              num_training_steps=t.max_steps)

    if resume_from is not None:
        state, sampler_state, strategy_state = checkpointing.load(resume_from, model, optimizer, scheduler)
        log.info("Resumed from %s at step %d", resume_from, state.step)
    else:
        state, sampler_state, strategy_state = _initial_state(config, inputs, output_dir, sizes, parallel), None, None

    strategy = make_strategy(config, domains, state.prior, sizes)
    sampler = DomainSampler([len(inputs.train_encoded[d]) for d in domains], state.weights, seed=t.seed)
    if strategy_state is not None:
        strategy.load_state_dict(strategy_state)
        sampler.load_state_dict(sampler_state)

    hooks.on_start(config, domains, state.initial_weights, {
        "prior": state.prior, "reference_loss": state.reference_loss, "train_sizes": dict(zip(domains, sizes.tolist())),
        "eval_sizes": {d: len(inputs.eval_encoded[d]) for d in domains}, "model_source": inputs.loaded.source,
        "probe_result": state.probe_result,
    })
    if resume_from is None:
        hooks.on_eval(0, domain_metrics(state.eval_loss_before, state.accuracy_before))

    # Re-weight every `interval` steps, or once per pass over the training data (the paper).
    interval = mc.interval or max(1, math.ceil(sizes.sum() / t.batch_size))
    ref_loss = np.array([state.reference_loss[d] for d in domains])
    pad_id = tokenizer.pad_token_id
    device = next(model.parameters()).device
    n_domains = len(domains)
    train_model = _data_parallel(model, device) if parallel.world_size > 1 else model
    # Training time is the step loop's wall time minus evaluations and checkpoints.
    eval_seconds, side_seconds, midrun_eval_seconds = 0.0, 0.0, 0.0
    last_checkpoint: Optional[Path] = None
    model.train()

    progress = tqdm(total=t.max_steps, initial=state.step, desc=f"train ({mc.method})", unit="step",
                    disable=not parallel.is_main)
    loop_started = time.perf_counter()
    while state.step < t.max_steps:
        # Every worker draws the same global batch and trains on its shard of it, so N workers see
        # exactly the examples one process would.
        draws = parallel.shard(sampler.sample(t.batch_size))
        examples = [inputs.train_encoded[domains[d]][i] for d, i in draws]
        batch = {k: v.to(device) for k, v in collate(examples, pad_id).items()}
        loss_sum, token_count = per_example_loss(train_model, batch, config.model.bf16)
        # One all-reduce per step: totals for the loss normalisation, tokens, per-domain training loss.
        local = np.zeros(3 + 2 * n_domains)
        local[:3] = loss_sum.detach().sum().item(), token_count.sum().item(), batch["attention_mask"].sum().item()
        for (d, _), ex_loss, ex_tokens in zip(draws, loss_sum.detach().tolist(), token_count.tolist()):
            local[3 + d] += ex_loss
            local[3 + n_domains + d] += ex_tokens
        totals = parallel.sum(local)
        global_tokens = max(totals[1], 1.0)
        step_loss = totals[0] / global_tokens
        # Token mean over the global batch; DDP averages gradients over workers, hence × world_size.
        loss = loss_sum.sum() * (parallel.world_size / global_tokens)
        if not math.isfinite(step_loss):
            raise TrainingDivergedError(
                f"Training loss became {step_loss} at step {state.step + 1}. The last good checkpoint is "
                f"{last_checkpoint or 'none (no checkpoint written yet)'}. Lower train.learning_rate or "
                f"train.grad_clip, or turn off model.bf16, and resume from that checkpoint."
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable, t.grad_clip)
        optimizer.step()
        scheduler.step()
        state.step += 1
        state.tokens_trained += int(totals[2])
        for d in range(n_domains):
            state.train_loss_sum[d] += totals[3 + d]
            state.train_loss_tokens[d] += int(totals[3 + n_domains + d])
        progress.update(1)
        progress.set_postfix(loss=f"{step_loss:.3f}")
        hooks.on_step_end(state.step, step_loss, model)

        if state.step % t.log_every == 0 or state.step == t.max_steps:
            share = sampler.realised_share()
            hooks.on_log(state.step, {
                "train_loss": step_loss,
                "learning_rate": scheduler.get_last_lr()[0],
                "tokens_trained": state.tokens_trained,
                "tokens_per_second": state.tokens_trained / max(time.perf_counter() - loop_started - side_seconds, 1e-9),
                **{f"share/{d}": float(s) for d, s in zip(domains, share)},
            })

        # A static mixture is evaluated here only for its loss curve, which train.eval_static_mixtures can skip.
        if (state.step % interval == 0 and state.step < t.max_steps
                and (strategy.dynamic or t.eval_static_mixtures)):
            eval_started = time.perf_counter()
            losses = domain_losses(model, inputs.eval_encoded, t.eval_batch_size, pad_id, config.model.bf16, parallel)
            eval_seconds += time.perf_counter() - eval_started
            side_seconds += time.perf_counter() - eval_started
            midrun_eval_seconds += time.perf_counter() - eval_started
            eval_loss = np.array([losses[d] for d in domains])
            with np.errstate(invalid="ignore", divide="ignore"):
                train_loss = np.array(state.train_loss_sum) / np.array(state.train_loss_tokens)
            report = strategy.update(np.array(state.weights), DomainSignals(
                eval_loss=eval_loss, prev_eval_loss=np.array(state.prev_eval_loss), ref_loss=ref_loss, train_loss=train_loss,
            ))
            state.weights = normalise(report.weights).tolist()
            sampler.set_weights(state.weights)
            state.prev_eval_loss = eval_loss.tolist()
            state.train_loss_sum = [0.0] * len(domains)
            state.train_loss_tokens = [0] * len(domains)
            record = {
                "step": state.step,
                "weights": dict(zip(domains, state.weights)),
                "potential": dict(zip(domains, report.potential.tolist())),
                "forgetting": dict(zip(domains, report.forgetting.tolist())),
                "eval_loss": losses,
            }
            state.trajectory.append(record)
            hooks.on_eval(state.step, domain_metrics(losses))
            hooks.on_reweight(state.step, record)

        if t.checkpoint_every and state.step % t.checkpoint_every == 0:
            checkpoint_started = time.perf_counter()
            if parallel.is_main:  # the state is identical on every worker: one writer
                last_checkpoint = checkpointing.save(output_dir, state, model, optimizer, scheduler,
                                                     sampler.state_dict(), strategy.state_dict(), t.keep_checkpoints)
            side_seconds += time.perf_counter() - checkpoint_started
            hooks.on_checkpoint(state.step, str(last_checkpoint) if parallel.is_main else None)
    train_seconds = time.perf_counter() - loop_started - side_seconds
    progress.close()

    eval_started = time.perf_counter()
    losses_after = domain_losses(model, inputs.eval_encoded, t.eval_batch_size, pad_id, config.model.bf16, parallel)
    accuracy_after = _accuracy(config, inputs, model)
    eval_seconds += time.perf_counter() - eval_started
    hooks.on_eval(state.step, domain_metrics(losses_after, accuracy_after))

    if t.save_model and parallel.is_main:
        checkpointing.save_final_model(output_dir / "model", model, tokenizer)
    summary = {
        "domains": domains,
        "method": mc.method,
        "mode": mc.mode,
        "target": mc.target,
        "coefficients": {"alpha": mc.alpha, "beta": mc.beta, "eta": mc.eta, "epsilon": mc.epsilon, "interval": interval},
        "prior": state.prior,
        "initial_weights": state.initial_weights,
        "final_weights": dict(zip(domains, state.weights)),
        "weight_trajectory": [{"step": 0, "weights": state.initial_weights}]
        + [{"step": r["step"], "weights": r["weights"]} for r in state.trajectory],
        "reweighting_records": state.trajectory,
        "reference_loss": state.reference_loss,
        "realised_share": dict(zip(domains, sampler.realised_share().tolist())),
        "eval_loss_before": state.eval_loss_before,
        "eval_loss_after": losses_after,
        "accuracy_before": state.accuracy_before,
        "accuracy_after": accuracy_after,
        "metrics_before": domain_metrics(state.eval_loss_before, state.accuracy_before),
        "metrics_after": domain_metrics(losses_after, accuracy_after),
        "steps": state.step,
        "tokens_trained": state.tokens_trained,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "midrun_eval_seconds": midrun_eval_seconds,
        "wall_seconds": time.perf_counter() - started,
        "model_source": inputs.loaded.source,
        "model_dir": str(output_dir / "model") if t.save_model else None,
        "config": config.to_dict(),
    }
    if parallel.is_main:
        checkpointing.write_json_atomic(output_dir / "summary.json", summary)
    hooks.on_end(summary)
    return summary


def _initial_state(config: RunConfig, inputs: RunInputs, output_dir: Path, sizes: np.ndarray,
                   parallel: Parallel = SINGLE_PROCESS) -> LoopState:
    """Prior (probe), base-model evaluation, reference losses, initial weights.

    Every worker computes the same values: the probe and reference runs are seeded, the
    evaluation is summed over workers.
    """
    domains = inputs.data.domains
    prior, probe_result = resolve_prior(config, inputs, output_dir, write=parallel.is_main)
    base = inputs.base_eval or evaluate_base(config, inputs, parallel)
    losses, accuracy = base.eval_loss, base.accuracy
    from .reference import reference_losses  # late import: reference runs call back into this module

    reference = reference_losses(config, inputs, losses)
    weights = make_strategy(config, domains, prior, sizes).initial_weights()
    n = len(domains)
    return LoopState(
        weights=weights.tolist(),
        # φ at the first re-weighting point compares against the base model's loss.
        prev_eval_loss=[losses[d] for d in domains],
        train_loss_sum=[0.0] * n,
        train_loss_tokens=[0] * n,
        eval_loss_before=losses,
        accuracy_before=accuracy,
        reference_loss=reference,
        initial_weights=dict(zip(domains, weights.tolist())),
        prior=prior,
        probe_result=probe_result,
    )


def make_strategy(config: RunConfig, domains: list[str], prior: dict[str, float], sizes: np.ndarray):
    mc = config.method
    return build_strategy(
        mc.method, domains, mode=mc.mode, prior=np.array([prior[d] for d in domains]), sizes=sizes,
        alpha=mc.alpha, beta=mc.beta, eta=mc.eta, epsilon=mc.epsilon, floor=config.probe.floor,
        target=mc.target, target_initial_share=mc.target_initial_share, target_max_share=mc.target_max_share,
    )


def resolve_prior(config: RunConfig, inputs: RunInputs, output_dir: Path,
                  write: bool = True) -> tuple[dict[str, float], Optional[dict]]:
    """The domain distribution the mixture starts from (given, or measured by the probe), and the
    probe's output when it ran."""
    domains = inputs.data.domains
    if config.method.prior is not None:
        return {d: float(config.method.prior[d]) for d in domains}, None
    if config.method.method not in PRIOR_METHODS:
        return {d: 1.0 / len(domains) for d in domains}, None  # unused by these methods; uniform for the record
    result = run_probe(inputs.loaded.model, inputs.loaded.tokenizer, inputs.data, config.probe).to_json()
    if write:
        checkpointing.write_json_atomic(output_dir / "distribution.json", result)
    return result["distribution"], result


def _accuracy(config: RunConfig, inputs: RunInputs, model) -> dict[str, float]:
    if not config.train.eval_accuracy or not any(inputs.data.eval_mc.values()):
        return {}
    return domain_accuracy(model, inputs.loaded.tokenizer, inputs.data.eval_mc, config.train.max_length,
                           config.model.bf16)


def _data_parallel(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP wrapper for the training forward/backward; everything else uses the plain model."""
    device_ids = [device] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def latest_checkpoint(output_dir: str | Path) -> Optional[Path]:
    return checkpointing.latest(output_dir)
