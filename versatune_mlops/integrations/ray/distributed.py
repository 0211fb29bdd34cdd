"""Ray Train glue: the same training loop on N ``TorchTrainer`` workers (DDP: gloo on CPU, NCCL on GPU).

Every worker draws the same global batch from the shared domain weights and trains on its shard;
per-domain eval losses are summed across workers, so every worker computes the same new weights.
The main worker logs to MLflow with the explicit run id it is given. Checkpoints go through
``ray.train.report`` so ``FailureConfig(max_failures=...)`` restarts a crashed worker group from
the newest one. On a cluster, point ``distributed.address`` at it and ``storage_path`` at shared
storage; ``use_gpu`` gives each worker one GPU.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

from ...config import RunConfig, from_dict, validate
from ...errors import ConfigError
from ...training.hooks import TrainingHooks
from .reports import RayCheckpointReporter, RayMetricsReporter

log = logging.getLogger(__name__)


def _worker(payload: dict[str, Any]) -> None:
    """Runs in every Ray Train worker."""
    import ray.train
    import ray.train.torch

    from ...training.loop import train
    from ...training.parallel import Parallel

    context = ray.train.get_context()
    parallel = Parallel(rank=context.get_world_rank(), world_size=context.get_world_size())
    config = validate(from_dict(payload["config"]))
    config.model.device = str(ray.train.torch.get_device())
    hooks: list[TrainingHooks] = []
    if parallel.is_main and payload.get("run_id"):
        import mlflow

        from ..mlflow.tracking import MlflowTrackingHooks

        mlflow.set_tracking_uri(payload["tracking_uri"])
        mlflow.start_run(run_id=payload["run_id"])  # explicit id; the driver sets the final status
        hooks.append(MlflowTrackingHooks(payload["run_id"]))
    resume_from = payload.get("resume_from")
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a restart after a failure: continue from Ray's newest checkpoint
        resume_from = checkpoint.to_directory()
        log.info("Worker %d resumes from %s", parallel.rank, resume_from)
    worker_hooks: list[TrainingHooks] = [RayCheckpointReporter()]
    if payload.get("report_metrics"):
        worker_hooks.append(RayMetricsReporter())
    train(config, payload["output_dir"], hooks=hooks, resume_from=resume_from, parallel=parallel,
          worker_hooks=worker_hooks)


def check_resources(config: RunConfig) -> None:
    """Fail before Ray starts when a local machine cannot host the workers."""
    dc = config.distributed
    if dc.address is None and dc.num_workers > (os.cpu_count() or 1):
        raise ConfigError(
            f"distributed.num_workers={dc.num_workers} is more than this machine's {os.cpu_count()} CPUs. "
            f"Use at most {os.cpu_count()} workers, or set distributed.address to a Ray cluster."
        )


def ensure_ray(config: RunConfig, num_cpus: Optional[int] = None) -> None:
    """Connect to ``distributed.address``, or start a local Ray with ``num_cpus`` (default: all CPUs)."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if config.distributed.address:
        ray.init(address=config.distributed.address)
    else:
        # The dashboard serves Ray's state API, which Train's PlacementGroupCleaner polls: without it a
        # TorchTrainer whose controller dies ungracefully (a Tune trial that ASHA stops) keeps its
        # placement group's CPUs for good, and the next trial waits forever. Loopback only.
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=True, dashboard_host="127.0.0.1")


def train_distributed(
    config: RunConfig,
    output_dir: str | Path,
    *,
    run_id: Optional[str] = None,
    tracking_uri: Optional[str] = None,
    resume_from: Optional[str | Path] = None,
    callbacks: Optional[list] = None,
) -> dict[str, Any]:
    """Fit a TorchTrainer with ``distributed.num_workers`` workers; returns the run's summary.

    ``callbacks`` (e.g. Tune's TuneReportCallback inside a trial) also turn on per-evaluation
    metric reports from the workers.
    """
    import json

    import ray
    from ray.train import FailureConfig, ScalingConfig
    from ray.train import RunConfig as RayRunConfig
    from ray.train.torch import TorchTrainer

    check_resources(config)
    dc = config.distributed
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    ensure_ray(config)
    use_gpu = dc.use_gpu if dc.use_gpu is not None else ray.cluster_resources().get("GPU", 0) >= dc.num_workers
    storage = dc.storage_path or str(output_dir / "ray")
    trainer = TorchTrainer(
        _worker,
        train_loop_config={
            "config": config.to_dict(), "output_dir": str(output_dir), "run_id": run_id,
            "tracking_uri": tracking_uri, "resume_from": str(resume_from) if resume_from else None,
            "report_metrics": bool(callbacks),
        },
        scaling_config=ScalingConfig(num_workers=dc.num_workers, use_gpu=bool(use_gpu)),
        run_config=RayRunConfig(name=f"versatune-{run_id or output_dir.name}", storage_path=storage,
                                failure_config=FailureConfig(max_failures=dc.max_failures),
                                callbacks=callbacks or None),
    )
    log.info("Ray Train: %d workers (gpu=%s), storage %s", dc.num_workers, bool(use_gpu), storage)
    trainer.fit()
    return json.loads((output_dir / "summary.json").read_text())


def probe_shares(num_samples: int, num_workers: int) -> list[int]:
    """How many probe sequences each worker generates: as even as possible, the first ones one more."""
    return [num_samples // num_workers + (1 if i < num_samples % num_workers else 0) for i in range(num_workers)]


def _generate_share(payload: dict[str, Any], num_samples: int, seed: int) -> list[str]:
    """Runs in one Ray task: loads the run's model and generates its share of the probe."""
    from ...mixing.probe import generate_free_text
    from ...training.setup import prepare_inputs

    config = validate(from_dict(payload))
    inputs = prepare_inputs(config)
    return generate_free_text(inputs.loaded.model, inputs.loaded.tokenizer, config.probe, seed=seed,
                              num_samples=num_samples)


def generate_probe_texts(config: RunConfig) -> list[str]:
    """The probe's free generations split across ``distributed.num_workers`` Ray tasks, so a cluster can
    afford paper-size probes (~10k sequences): worker i generates its share with seed ``probe.seed + i``
    (one worker reproduces the single-process probe), texts are joined in worker order, and the
    estimator then runs once on the driver."""
    import ray

    check_resources(config)
    dc = config.distributed
    ensure_ray(config)
    use_gpu = dc.use_gpu if dc.use_gpu is not None else ray.cluster_resources().get("GPU", 0) >= dc.num_workers
    task = ray.remote(num_cpus=1, num_gpus=1 if use_gpu else 0)(_generate_share)
    payload = config.to_dict()
    shares = probe_shares(config.probe.num_samples, dc.num_workers)
    log.info("Probe generation on %d Ray workers: %s sequences", dc.num_workers, shares)
    refs = [task.remote(payload, share, config.probe.seed + rank) for rank, share in enumerate(shares) if share]
    return [text for share in ray.get(refs) for text in share]
