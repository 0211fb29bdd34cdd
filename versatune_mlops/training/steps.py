"""The step loop: sample a batch by the live weights, forward, backward, optimizer step; every
``interval`` steps evaluate per domain and re-weight; every ``checkpoint_every`` steps checkpoint.

It runs a prepared :class:`~.state.TrainingRun` and knows nothing about where it came from: the
full training run (:func:`.loop.train`) and the specialist reference runs both call it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import RunConfig
from ..data.formatting import IGNORE_INDEX, collate
from ..errors import TrainingDivergedError
from ..mixing.curves import curve_fit_reference
from ..mixing.strategies import DomainSignals
from ..mixing.weights import normalise
from . import checkpointing
from .evaluation import domain_metrics
from .setup import evaluate_losses
from .hooks import TrainingHooks
from .models import resolve_device
from .parallel import gradient_sync
from .state import TrainingRun


def run_steps(config: RunConfig, run: TrainingRun, hooks: TrainingHooks, output_dir: Path) -> None:
    """Train from ``run.state.step`` to ``train.max_steps``; fills ``run.timings``."""
    t, mc = config.train, config.method
    run.model.train()
    progress = tqdm(total=t.max_steps, initial=run.state.step, desc=f"train ({mc.method})", unit="step",
                    disable=not run.parallel.is_main)
    run.timings.loop_started = time.perf_counter()
    while run.state.step < t.max_steps:
        step_loss = train_step(config, run)
        progress.update(1)
        progress.set_postfix(loss=f"{step_loss:.3f}")
        hooks.on_step_end(run.state.step, step_loss, run.model)
        if run.state.step % t.log_every == 0 or run.state.step == t.max_steps:
            hooks.on_log(run.state.step, step_metrics(run, step_loss))
        # A static mixture is evaluated here only for its loss curve, which train.eval_static_mixtures can skip.
        if (run.state.step % run.interval == 0 and run.state.step < t.max_steps
                and (run.strategy.dynamic or t.eval_static_mixtures)):
            reweight(config, run, hooks)
            progress.update(run.state.step - progress.n)  # a strategy's probe steps (Aioli) are steps too
        if t.checkpoint_every and run.state.step % t.checkpoint_every == 0:
            checkpoint(config, run, hooks, output_dir)
    run.timings.train_seconds = time.perf_counter() - run.timings.loop_started - run.timings.side_seconds
    progress.close()


def train_step(config: RunConfig, run: TrainingRun) -> float:
    """One optimizer step on one global batch; returns its token-mean loss.

    The worker's share of the batch runs in micro-batches of ``train.micro_batch_size`` whose
    gradients accumulate; each micro-batch's loss is divided by the response tokens of the whole
    global batch (counted before any forward), so the step is the same as one pass over the batch.
    """
    t, state, parallel, domains = config.train, run.state, run.parallel, run.domains
    n_domains = len(domains)
    device = resolve_device(config.model.device)  # not the parameters' device: FSDP may offload them to CPU
    # Every worker draws the same global batch and trains on its shard of it, so N workers see
    # exactly the examples one process would.
    if not run.pending_batches:
        run.pending_batches = draw_window(config, run)
    draws = parallel.shard(run.pending_batches.pop(0))
    micro = t.micro_batch_size or len(draws)
    micro_draws = [draws[i:i + micro] for i in range(0, len(draws), micro)]
    pad = run.inputs.loaded.tokenizer.pad_token_id
    micro_batches = [{k: v.to(device) for k, v in collate(
        [run.inputs.train_encoded[domains[d]][i] for d, i in chunk], pad).items()} for chunk in micro_draws]
    # First all-reduce: the global batch's token counts (response tokens normalise the loss; all
    # non-padding tokens and the per-domain response tokens are for the record).
    counts = np.zeros(2 + n_domains)
    for chunk, batch in zip(micro_draws, micro_batches):
        run.padding.add(batch["attention_mask"])
        response_tokens = (batch["labels"][:, 1:] != IGNORE_INDEX).sum(dim=1).tolist()
        counts[0] += sum(response_tokens)
        counts[1] += batch["attention_mask"].sum().item()
        for (d, _), tokens in zip(chunk, response_tokens):
            counts[2 + d] += tokens
    counts = parallel.sum(counts)
    global_tokens = max(counts[0], 1.0)
    # Token mean over the global batch; DDP and FSDP average gradients over workers, hence × world_size.
    scale = parallel.world_size / global_tokens
    run.optimizer.zero_grad(set_to_none=True)
    losses = np.zeros(1 + n_domains)  # summed loss: all, per domain
    for k, (chunk, batch) in enumerate(zip(micro_draws, micro_batches)):
        with gradient_sync(run.train_model, enabled=k == len(micro_batches) - 1):
            loss_sum, _ = run.train_model(**batch)
            (loss_sum.sum() * scale).backward()
        for (d, _), ex_loss in zip(chunk, loss_sum.detach().tolist()):
            losses[0] += ex_loss
            losses[1 + d] += ex_loss
    # Second all-reduce: the loss for the record and the per-domain training loss.
    losses = parallel.sum(losses)
    step_loss = losses[0] / global_tokens
    if not math.isfinite(step_loss):  # before the optimizer step: the weights are still the good ones
        raise TrainingDivergedError(
            f"Training loss became {step_loss} at step {state.step + 1}. The last good checkpoint is "
            f"{run.last_checkpoint or 'none (no checkpoint written yet)'}. Lower train.learning_rate or "
            f"train.grad_clip, or turn off model.bf16, and resume from that checkpoint."
        )
    if t.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.trainable, t.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    state.step += 1
    state.tokens_trained += int(counts[1])
    state.response_tokens_trained += int(counts[0])
    for d in range(n_domains):
        state.train_loss_sum[d] += losses[1 + d]
        state.train_loss_tokens[d] += int(counts[2 + d])
    return step_loss


def draw_window(config: RunConfig, run: TrainingRun) -> list[list[tuple[int, int]]]:
    """The next few global batches, drawn by the live weights at once and regrouped by length.

    ``train.length_group_batches`` batches are drawn in one go (the same draws, in the same order,
    as that many single batches), sorted by token length and cut into batches of similar length, so
    less of each batch is padding. A window never crosses a re-weighting point or a checkpoint, so
    every example is drawn with the weights of the step that trains it and a resume starts at a
    window boundary. The order of the batches in a window is shuffled (seeded by the step), so
    lengths do not rise step by step inside it.
    """
    t, state = config.train, run.state
    step = state.step
    boundaries = [t.max_steps, step + max(1, t.length_group_batches)]
    boundaries += [(step // every + 1) * every for every in (run.interval, t.checkpoint_every) if every]
    steps = max(1, min(boundaries) - step)
    draws = run.sampler.sample(steps * t.batch_size)
    if steps == 1:
        return [draws]
    lengths = [len(run.inputs.train_encoded[run.domains[d]][i]["input_ids"]) for d, i in draws]
    ordered = [draws[k] for k in sorted(range(len(draws)), key=lambda k: lengths[k])]
    batches = [ordered[k * t.batch_size:(k + 1) * t.batch_size] for k in range(steps)]
    order = np.random.Generator(np.random.PCG64([t.seed, step])).permutation(steps)
    return [batches[k] for k in order]


def step_metrics(run: TrainingRun, step_loss: float) -> dict[str, float]:
    timings = run.timings
    train_time = max(time.perf_counter() - timings.loop_started - timings.side_seconds, 1e-9)
    return {
        "train_loss": step_loss,
        "learning_rate": run.scheduler.get_last_lr()[0],
        "tokens_trained": run.state.tokens_trained,
        "tokens_per_second": run.state.tokens_trained / train_time,
        "train/padding_fraction": run.padding.fraction(),
        **{f"share/{d}": float(s) for d, s in zip(run.domains, run.sampler.realised_share())},
    }


def reweight(config: RunConfig, run: TrainingRun, hooks: TrainingHooks) -> None:
    """Read every domain's loss (held out, or the window's training loss), let the strategy move the
    weights, hand them to the sampler."""
    state, domains = run.state, run.domains
    with np.errstate(invalid="ignore", divide="ignore"):
        train_loss = np.array(state.train_loss_sum) / np.array(state.train_loss_tokens)
    held_out = config.method.signal == "eval"
    read = np.ones(len(domains), dtype=bool)
    if held_out:
        losses = timed_evaluation(config, run)
    else:
        # No evaluation pass: the window's training loss (see window_losses).
        window, read = window_losses(train_loss, state.train_loss_tokens, state.prev_eval_loss,
                                     config.method.signal_min_tokens)
        losses = dict(zip(domains, window.tolist()))
    eval_loss = np.array([losses[d] for d in domains])
    if config.method.reference == "curve_fit":
        refit_reference(config, run, losses)
    probe_losses = run_probes(config, run, hooks)
    report = run.strategy.update(np.array(state.weights), DomainSignals(
        eval_loss=eval_loss, prev_eval_loss=np.array(state.prev_eval_loss), ref_loss=run.ref_loss, train_loss=train_loss,
        probe_losses=probe_losses,
    ))
    if probe_losses is not None:  # the model moved during the probes: its latest evaluation is the point's
        losses = dict(zip(domains, probe_losses[-1].tolist()))
        eval_loss = probe_losses[-1]
    state.weights = normalise(report.weights).tolist()
    run.sampler.set_weights(state.weights)
    state.prev_eval_loss = eval_loss.tolist()
    window_tokens = dict(zip(domains, (int(n) for n in state.train_loss_tokens)))
    # A window not read (too few tokens under method.signal_min_tokens) carries into the next one.
    state.train_loss_sum = [0.0 if r else s for r, s in zip(read, state.train_loss_sum)]
    state.train_loss_tokens = [0 if r else n for r, n in zip(read, state.train_loss_tokens)]
    record = {
        "step": state.step,
        "weights": dict(zip(domains, state.weights)),
        "potential": dict(zip(domains, report.potential.tolist())),
        "forgetting": dict(zip(domains, report.forgetting.tolist())),
        # The held-out losses, or under method.signal=train the window's training losses (never both).
        "eval_loss" if held_out else "train_loss": losses,
        "reference_loss": dict(state.reference_loss),
    }
    if not held_out:
        record["window_tokens"] = window_tokens  # each domain's tokens in the window (carried on if not read)
    state.trajectory.append(record)
    if held_out:
        hooks.on_eval(state.step, domain_metrics(losses))
    hooks.on_reweight(state.step, record)


def window_losses(mean, tokens, last, min_tokens: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The loss the re-weighting reads per domain from a window's token-mean training losses ``mean``,
    and which domains were read: those with at least ``min_tokens`` tokens (and at least one). A
    domain not read keeps its ``last`` value."""
    mean = np.asarray(mean, dtype=np.float64)
    read = (np.asarray(tokens) >= max(1, int(min_tokens))) & np.isfinite(mean)
    return np.where(read, mean, np.asarray(last, dtype=np.float64)), read


def timed_evaluation(config: RunConfig, run: TrainingRun) -> dict[str, float]:
    """Held-out loss per domain mid-run; its time is kept out of the training throughput."""
    started = time.perf_counter()
    losses = evaluate_losses(config, run.inputs, run.model, run.parallel, run.sharded_loss)
    elapsed = time.perf_counter() - started
    run.timings.eval_seconds += elapsed
    run.timings.side_seconds += elapsed
    run.timings.midrun_eval_seconds += elapsed
    return losses


def run_probes(config: RunConfig, run: TrainingRun, hooks: TrainingHooks) -> Optional[np.ndarray]:
    """The strategy's probe mixtures (Aioli's LearnParams), each trained for its steps and then
    evaluated: steps of the run itself, counted in train.max_steps like any other. None when the
    strategy probes nothing, or when the probes would not end before train.max_steps (the mixture
    then stays as it is)."""
    mixtures, steps = run.strategy.probe_plan()
    state, t = run.state, config.train
    if not mixtures or state.step + len(mixtures) * steps >= t.max_steps:
        return None
    rows = []
    for mixture in mixtures:
        run.sampler.set_weights(mixture)
        for _ in range(steps):
            # One batch at a time: a length-grouped window would carry draws of this probe's mixture into the next.
            run.pending_batches = [run.sampler.sample(t.batch_size)]
            step_loss = train_step(config, run)
            hooks.on_step_end(state.step, step_loss, run.model)
        losses = timed_evaluation(config, run)
        rows.append([losses[d] for d in run.domains])
    return np.array(rows)


def refit_reference(config: RunConfig, run: TrainingRun, losses: dict[str, float]) -> None:
    """curve_fit: each domain's l_ref becomes the asymptote of its eval history (the base model at
    step 0, every earlier re-weighting point, now). Kept in the loop state, so a resume continues
    from the same reference and the summary records it."""
    state = run.state
    history = [(0, state.eval_loss_before)] + [(r["step"], r["eval_loss"]) for r in state.trajectory]
    history.append((state.step, losses))
    steps = [step for step, _ in history]
    for d in run.domains:
        fallback = config.method.reference_fraction * float(state.eval_loss_before[d])
        state.reference_loss[d] = curve_fit_reference(steps, [float(point[d]) for _, point in history], fallback)
    run.ref_loss = np.array([state.reference_loss[d] for d in run.domains])


def checkpoint(config: RunConfig, run: TrainingRun, hooks: TrainingHooks, output_dir: Path) -> None:
    started = time.perf_counter()
    path = None
    sharded = run.sharded_loss is not None
    # The loop state is identical on every worker: rank 0 writes it. Under FSDP every worker also
    # writes its own shard of the model and optimizer.
    if run.parallel.is_main or sharded:
        path = checkpointing.save(output_dir, run.state, run.model, run.optimizer, run.scheduler,
                                  run.sampler.state_dict(), run.strategy.state_dict(), config.train.keep_checkpoints,
                                  sharded=sharded, is_main=run.parallel.is_main)
    if path is not None:
        run.last_checkpoint = str(path)
    run.timings.side_seconds += time.perf_counter() - started
    hooks.on_checkpoint(run.state.step, str(path) if path is not None else None)
