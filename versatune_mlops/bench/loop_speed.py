"""Benchmark: tokens/s of the VersaTune training loop vs a bare torch loop, side by side.

Both loops train the same model (reset to the same initial weights before every run) on the same
batches (same sampler, same seed), with the same batch size, dtype, optimizer and schedule. Runs
alternate bare/loop so machine noise hits both alike; the medians are compared as a ratio.
The loop's time counts everything in its step loop (sampling, collation, per-domain loss
bookkeeping, hooks, progress bar) except the per-domain evaluations, which are the method's own cost
and are measured separately (static vs dynamic overhead, in the benchmark of the method).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import statistics
import tempfile
import time

import numpy as np
import torch
from transformers import get_scheduler

from ..config import RunConfig
from ..training.evaluation import autocast_context
from ..data.formatting import collate
from ..training.loop import train
from ..training.setup import prepare_inputs
from ..mixing.sampler import DomainSampler

log = logging.getLogger(__name__)


def static_mixture(config: RunConfig, steps: int) -> RunConfig:
    """A uniform static mixture with no evaluation inside the measured steps and no probe."""
    from ..data.sources import load_domain_data

    domains = config.data.domains or load_domain_data(config.data).domains
    return dataclasses.replace(
        config,
        method=dataclasses.replace(config.method, method="uniform", mode="fostering", target=None,
                                   interval=steps + 1, reference="initial_fraction",
                                   prior={d: 1.0 / len(domains) for d in domains}),
        train=dataclasses.replace(config.train, max_steps=steps, checkpoint_every=0, eval_accuracy=False,
                                  save_model=False, log_every=max(1, steps // 3)),
    )


def bare_torch_loop(model, batches: list[dict], config: RunConfig) -> float:
    """The plainest loop: HF loss, backward, clip, AdamW, scheduler. Returns tokens/s."""
    t = config.train
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)
    scheduler = get_scheduler(t.lr_schedule, optimizer, num_warmup_steps=int(t.warmup_ratio * t.max_steps),
                              num_training_steps=t.max_steps)
    model.train()
    tokens = 0
    started = time.perf_counter()
    for batch in batches:
        with autocast_context(model, config.model.bf16):
            loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        optimizer.step()
        scheduler.step()
        tokens += int(batch["attention_mask"].sum())
    return tokens / (time.perf_counter() - started)


def run_loop_benchmark(config: RunConfig, steps: int = 30, repeats: int = 3) -> dict:
    config = static_mixture(config, steps)
    inputs = prepare_inputs(config)
    domains = inputs.data.domains
    initial_state = copy.deepcopy(inputs.loaded.model.state_dict())

    sampler = DomainSampler([len(inputs.train_encoded[d]) for d in domains], np.full(len(domains), 1 / len(domains)),
                            seed=config.train.seed)
    pad_id = inputs.loaded.tokenizer.pad_token_id
    device = next(inputs.loaded.model.parameters()).device
    batches = [{k: v.to(device) for k, v in collate([inputs.train_encoded[domains[d]][i] for d, i in sampler.sample(config.train.batch_size)], pad_id).items()}
               for _ in range(steps)]

    bare, loop = [], []
    for repeat in range(repeats):
        inputs.loaded.model.load_state_dict(initial_state)
        bare.append(bare_torch_loop(inputs.loaded.model, batches, config))
        inputs.loaded.model.load_state_dict(initial_state)
        with tempfile.TemporaryDirectory(prefix="versatune-bench-") as tmp:
            summary = train(config, tmp, inputs=inputs)
        loop.append(summary["tokens_trained"] / summary["train_seconds"])
        log.info("repeat %d: bare %.1f tokens/s, loop %.1f tokens/s", repeat, bare[-1], loop[-1])
    return {
        "model": inputs.loaded.source,
        "batch_size": config.train.batch_size,
        "bf16": config.model.bf16,
        "steps": steps,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "bare_tokens_per_s": statistics.median(bare),
        "loop_tokens_per_s": statistics.median(loop),
        "ratio": statistics.median(loop) / statistics.median(bare),
        "bare_runs": bare,
        "loop_runs": loop,
    }


def run_ray_benchmark(config: RunConfig, steps: int = 30, worker_counts: tuple[int, ...] = (1, 2)) -> dict:
    """Training tokens/s of the single-process loop vs Ray Train with 1..N workers, same global batch.

    The same static mixture and batches for every variant; tokens/s counts the step loop only
    (what each variant's summary reports), and the wall time of each fit, Ray start-up included,
    is reported next to it.
    """
    from ..integrations.ray.distributed import train_distributed

    config = static_mixture(config, steps)
    results = {}
    with tempfile.TemporaryDirectory(prefix="versatune-bench-ray-") as tmp:
        started = time.perf_counter()
        summary = train(config, f"{tmp}/single")
        results["single process"] = (summary["tokens_trained"] / summary["train_seconds"], time.perf_counter() - started)
        for workers in worker_counts:
            scaled = dataclasses.replace(config, distributed=dataclasses.replace(config.distributed, num_workers=workers))
            started = time.perf_counter()
            summary = train_distributed(scaled, f"{tmp}/ray-{workers}")
            results[f"ray, {workers} worker(s)"] = (summary["tokens_trained"] / summary["train_seconds"],
                                                    time.perf_counter() - started)
    base = results["single process"][0]
    return {name: {"tokens_per_s": tps, "wall_s": wall, "ratio": tps / base} for name, (tps, wall) in results.items()}
