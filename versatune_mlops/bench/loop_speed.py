"""Benchmark helpers: the static mixture every throughput measurement trains, and training tokens/s
of the single-process loop vs Ray Train workers (`versatune bench-ray`). The loop-vs-bare-torch
comparison is part of the throughput report (throughput.py)."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time


from ..config import RunConfig
from ..data.sources import load_domain_data
from ..training.loop import train

log = logging.getLogger(__name__)


def static_mixture(config: RunConfig, steps: int) -> RunConfig:
    """A uniform static mixture with no evaluation inside the measured steps and no probe."""
    domains = config.data.domains or load_domain_data(config.data).domains
    return dataclasses.replace(
        config,
        method=dataclasses.replace(config.method, method="uniform", mode="fostering", target=None,
                                   interval=steps + 1, reference="initial_fraction",
                                   prior={d: 1.0 / len(domains) for d in domains}),
        train=dataclasses.replace(config.train, max_steps=steps, checkpoint_every=0, eval_accuracy=False,
                                  save_model=False, log_every=max(1, steps // 3)),
    )


def run_ray_benchmark(config: RunConfig, steps: int = 30, worker_counts: tuple[int, ...] = (1, 2),
                      strategies: tuple[str, ...] = ("ddp",)) -> dict:
    """Training tokens/s of the single-process loop vs Ray Train with 1..N workers under each
    strategy (DDP, FSDP), same global batch.

    The same static mixture and batches for every variant; tokens/s counts the step loop only
    (what each variant's summary reports). Next to it: the wall time of each fit, its start-up (the
    fit's wall time minus the training function's own: Ray, workers, process group), and per worker
    (rank order) its peak RSS and the parameter + optimizer-state bytes it holds (its shards under
    FSDP). The single-process row's RSS is this process's, which includes the benchmark's set-up.
    """
    from ..integrations.ray.distributed import train_distributed

    config = static_mixture(config, steps)
    results = {}
    with tempfile.TemporaryDirectory(prefix="versatune-bench-ray-") as tmp:
        started = time.perf_counter()
        summary = train(config, f"{tmp}/single")
        results["single process"] = (summary, time.perf_counter() - started)
        for strategy in strategies:
            for workers in worker_counts:
                if strategy == "fsdp" and workers < 2:
                    continue  # one worker has nothing to shard across: it is the DDP row
                scaled = dataclasses.replace(config, distributed=dataclasses.replace(
                    config.distributed, num_workers=workers, strategy=strategy))
                started = time.perf_counter()
                summary = train_distributed(scaled, f"{tmp}/ray-{strategy}-{workers}")
                results[f"{strategy}, {workers} worker(s)"] = (summary, time.perf_counter() - started)
    base = _tokens_per_s(results["single process"][0])
    return {name: {"tokens_per_s": _tokens_per_s(summary), "wall_s": wall, "ratio": _tokens_per_s(summary) / base,
                   "startup_s": wall - summary["wall_seconds"],
                   "peak_rss_gb": [b / 1e9 for b in summary["per_worker"]["peak_rss_bytes"]],
                   "state_gb": [b / 1e9 for b in summary["per_worker"]["parameter_and_optimizer_bytes"]]}
            for name, (summary, wall) in results.items()}


def _tokens_per_s(summary: dict) -> float:
    return summary["tokens_trained"] / summary["train_seconds"]
