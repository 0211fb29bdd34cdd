"""Benchmark: Tune efficiency, ASHA + Optuna against a full grid, side by side in one run.

Both sweeps search the same coefficient ranges with the same per-trial budget, prior and seed, on a
local Ray with one CPU, so trials run one after another and "compute used so far" is simply the
training steps of the trials that ran before plus those of the current one. Compute is counted in
training steps actually run (an early-stopped trial counts up to its last report); wall time is
reported next to it. The figure of merit is the share of the grid's compute that ASHA + Optuna
spent until one of its trials *finished* within ``tolerance`` of the grid's best objective
(finished, because only finished trials can be picked as the sweep's best).

The trials log to a throwaway MLflow store in a temporary folder and log no models.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..config import RunConfig, from_dict, validate
from ..config import objective_mode
from ..integrations.ray.search_space import grid_size
from ..integrations.ray.tuning import SweepResult, TrialRecord, pick_best

log = logging.getLogger(__name__)

# The benchmark's default space on the tiny preset: a 3 x 3 grid over alpha and beta (9 trials, a
# few minutes on 2 CPUs); η, ε and the interval held at one value each. --set overrides any of it.
# The ranges are wide on purpose: the sampler draws domains through a CDF, so the small weight moves
# of alpha, beta <= 2 over 30 steps rarely change a batch (measured: the 3 x 3 grid over [0, 2]
# spanned 1.1% of the objective, so any trial was within 1% of the best).
# ASHA's first rung is one interval after the first re-weighting (tune.grace_intervals=1, see
# run_sweep): with a shared prior and seed, every trial trains on the same batches until then.
DEFAULT_SPACE = {
    "tune.alpha": [0.0, 20.0], "tune.beta": [0.0, 20.0], "tune.eta": [1.0, 1.0], "tune.epsilon": [0.0, 0.0],
    "tune.interval": [5], "tune.grid_points": 3, "tune.grace_intervals": 1, "train.eval_accuracy": False,
}


def within(value: float, target: float, mode: str, tolerance: float) -> bool:
    """Whether ``value`` is at least as good as ``target`` worsened by ``tolerance`` (relative)."""
    slack = tolerance * abs(target)
    return value >= target - slack if mode == "max" else value <= target + slack


def in_run_order(trials: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Trials in the order they started (stable, so ties keep Ray's creation order)."""
    return sorted(trials, key=lambda t: float("inf") if t.started is None else t.started)


def compute_used(trials: Sequence[TrialRecord]) -> int:
    return sum(t.steps or 0 for t in trials)


def compute_to_reach(trials: Sequence[TrialRecord], target: float, mode: str,
                     tolerance: float = 0.01) -> Optional[int]:
    """Training steps spent, trials taken in the order they ran one at a time, until the first trial
    that finished within ``tolerance`` of ``target`` (its own steps included); None if none did."""
    spent = 0
    for trial in in_run_order(trials):
        spent += trial.steps or 0
        if trial.status == "finished" and trial.objective is not None and within(trial.objective, target, mode, tolerance):
            return spent
    return None


@dataclass
class SearcherRun:
    name: str
    sweep: SweepResult
    wall_seconds: float

    @property
    def steps(self) -> int:
        return compute_used(self.sweep.trials)

    def count(self, status: str) -> int:
        return sum(t.status == status for t in self.sweep.trials)


@dataclass
class TuneBenchmark:
    objective: str
    mode: str
    tolerance: float
    grid: SearcherRun
    asha: SearcherRun
    grid_best: Optional[TrialRecord]

    def steps_to_reach(self, tolerance: float) -> Optional[int]:
        """ASHA + Optuna's steps until a trial finished within ``tolerance`` of the grid's best."""
        if self.grid_best is None or self.grid_best.objective is None:
            return None
        return compute_to_reach(self.asha.sweep.trials, self.grid_best.objective, self.mode, tolerance)

    def fraction(self, tolerance: float) -> Optional[float]:
        """Those steps as a share of the grid's steps; None when it never got there."""
        steps = self.steps_to_reach(tolerance)
        return None if steps is None or not self.grid.steps else steps / self.grid.steps


def searcher_configs(config: RunConfig, asha_trials: Optional[int]) -> tuple[RunConfig, RunConfig]:
    """The grid sweep and the ASHA + Optuna sweep over the same ranges: in-process trials, no models."""
    tree = config.to_dict()
    # No baseline run: this benchmark compares the two searchers' compute, not the trials with uniform.
    tree["tune"].update(workers_per_trial=0, log_models=False, baseline=None)
    tree["distributed"]["num_workers"] = 0
    grid = from_dict(tree)
    grid.tune.searcher, grid.tune.asha = "grid", False
    asha = from_dict(tree)
    asha.tune.searcher, asha.tune.asha = "optuna", True
    asha.tune.num_samples = asha_trials or grid_size(grid)
    return validate(grid), validate(asha)


def shared_prior(config: RunConfig) -> dict[str, float]:
    """One probe for every trial of both sweeps (the searchers then differ in their coefficients only)."""
    if config.method.prior is not None:
        return dict(config.method.prior)
    from ..training.setup import prepare_inputs
    from ..mixing.probe import run_probe
    from ..training.models import cache_root

    inputs = prepare_inputs(config)
    return run_probe(inputs.loaded.model, inputs.loaded.tokenizer, inputs.data, config.probe,
                     cache_dir=cache_root(config.model)).distribution


def run_tune_benchmark(config: RunConfig, asha_trials: Optional[int] = None, tolerance: float = 0.01) -> TuneBenchmark:
    from ..integrations.ray.distributed import ensure_ray
    from ..integrations.mlflow.tracking import configure_tracking, experiment_id_for, tracked_run
    from ..integrations.ray.tuning import run_sweep

    prior = shared_prior(config)
    config = dataclasses.replace(config, method=dataclasses.replace(config.method, prior=prior))
    grid_config, asha_config = searcher_configs(config, asha_trials)
    log.info("bench-tune: grid of %d trials, then ASHA + Optuna with %d trials, one trial at a time",
             grid_size(grid_config), asha_config.tune.num_samples)
    ensure_ray(config, num_cpus=1)  # one trial at a time: compute so far is a running sum
    runs: dict[str, SearcherRun] = {}
    with tempfile.TemporaryDirectory(prefix="versatune-bench-tune-") as tmp:
        uri = configure_tracking(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        experiment_id = experiment_id_for("bench-tune")
        for name, searcher_config in (("grid", grid_config), ("asha+optuna", asha_config)):
            with tracked_run(experiment="bench-tune", run_name=name, system_metrics=False) as parent:
                started = time.perf_counter()
                sweep = run_sweep(searcher_config, parent_run_id=parent, experiment_id=experiment_id,
                                  tracking_uri=uri, output_dir=Path(tmp) / name)
                runs[name] = SearcherRun(name, sweep, time.perf_counter() - started)
    grid, asha = runs["grid"], runs["asha+optuna"]
    return TuneBenchmark(objective=grid.sweep.objective, mode=objective_mode(grid.sweep.objective), tolerance=tolerance,
                         grid=grid, asha=asha, grid_best=pick_best(grid.sweep.trials, grid.sweep.mode))
