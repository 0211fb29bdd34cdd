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
