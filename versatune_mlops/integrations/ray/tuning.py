"""Ray Tune glue: sweep the re-weighting coefficients (α, β, η, ε, interval; VersaTune's share cap and
expansion's starting target share when their lists are given), one MLflow child run per trial, plus
one baseline run.

Each trial is a function trainable that turns its Tune config into a typed RunConfig on its first
line, opens its own MLflow child run (explicit ids: the parent's MLFLOW_RUN_ID leaks into trials),
and trains, on a TorchTrainer of its own when ``tune.workers_per_trial > 0`` (Ray Train V2
pattern, metrics forwarded by TuneReportCallback), else in the trial process. Concurrency comes from
the cluster's CPUs, GPUs and memory, so a 2-CPU machine never deadlocks with trial drivers holding
every CPU and two SmolLM2 trials do not share a machine that holds one.

Before the trials, the sweep runs its baseline (``tune.baseline``: uniform mixing unless told
otherwise) once, through the same trial function, with the trials' data, seed and budget. Each trial
is then reported with its gain over it: on the multi-genre benchmark's tuning seed every VersaTune
trial lost to uniform, which a score-only ranking could not show.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ...config import TUNED, RunConfig, from_dict, objective_mode
from ...errors import ConfigError
from .reports import ASHA_TIME_ATTR, TuneReporter
from .search_space import (BASELINE_KEY, CHOSEN, baseline_params, param_space, trial_config, trial_name,
                           trial_param_names)
from .sweep_record import RECORD_NAME, SweepRecord, TrialRecord, record_callback, start_record, told_points

log = logging.getLogger(__name__)


# Peak memory of one trial of the embedded models (DESIGN.md §4.1 and §6: SmolLM2 full fine-tuning
# ~8 GB, LoRA at batch 8 x 384 11.5 GB; two SmolLM2 trials nearly filled a 24 GB machine).
DEFAULT_TRIAL_MEMORY_GB = {"smollm2": 12.0, "tiny": 2.0}


def trial_memory_gb(config: RunConfig) -> Optional[float]:
    return config.tune.memory_per_trial_gb or DEFAULT_TRIAL_MEMORY_GB.get(config.model.name)


def trial_concurrency(config: RunConfig, cluster_cpus: float, cluster_gpus: float = 0.0,
                      cluster_memory_gb: Optional[float] = None) -> int:
    """Trials that fit at once: each needs a CPU for its driver plus one per Train worker, a GPU per
    worker when the workers use GPUs (as train_distributed decides), and its memory."""
    tc, dc = config.tune, config.distributed
    limits = [cluster_cpus // (1 + tc.workers_per_trial)]
    use_gpu = dc.use_gpu if dc.use_gpu is not None else cluster_gpus >= max(1, tc.workers_per_trial)
    if tc.workers_per_trial and use_gpu:
        limits.append(cluster_gpus // tc.workers_per_trial)
    memory = trial_memory_gb(config)
    if memory and cluster_memory_gb:
        limits.append(cluster_memory_gb // memory)
    return max(1, int(min(limits)))


def trial_cpus(config: RunConfig, cluster_cpus: float, concurrency: int) -> int:
    """CPUs one trial asks Ray for. A trial that trains in its own process gets its share of the
    cluster's CPUs: Ray sets the trial's OMP_NUM_THREADS to what it asked for, so a trial left at the
    default 1 CPU trained SmolLM2 on one thread of a 2-CPU machine whose memory fits one trial
    (4.7 s/step instead of 3.2). A trial with Train workers asks 1 for its driver; its workers ask for
    their own."""
    if config.tune.workers_per_trial:
        return 1
    return max(1, int(cluster_cpus // max(1, concurrency)))


def asha_milestones(config: RunConfig) -> dict[str, int]:
    """ASHA's grace period and horizon, in training steps (see :data:`ASHA_TIME_ATTR`).

    Counted in steps, not in reports, because trials with different intervals report at different
    steps: counted in reports, a trial with interval 8 met ASHA's first rung at step 16 and was
    compared with trials of interval 16 at step 32, which had trained twice as long, so a short
    interval always lost. Each trial reports at step 0, at each re-weighting point and at the end.
    The first re-weighting point is evaluated before any weight has moved (trials that differ only in
    their coefficients are identical there), so the first comparison comes ``grace_intervals``
    intervals after it, for the longest interval of the search space."""
    tc = config.tune
    return {"grace_period": max(tc.interval) * (tc.grace_intervals + 1), "max_t": config.train.max_steps}


def startup_trials(config: RunConfig) -> int:
    """Random trials before optuna's TPE models the rest: tune.optuna_startup_trials, or a third of
    the trials (2 to 10). Ray's default sampler starts TPE after 10, so an 8-trial sweep never used it."""
    tc = config.tune
    return tc.optuna_startup_trials or min(10, max(2, math.ceil(tc.num_samples / 3)))


def optuna_search(config: RunConfig, resumed: Optional[SweepRecord] = None):
    """Ray's optuna searcher with a seeded TPE sampler that models the trials after the first
    :func:`startup_trials` (Ray reads ``seed`` only when it builds the sampler itself).

    A resumed sweep tells the sampler its recorded trials as evaluated points (they count towards the
    startup trials) and seeds it with ``tune.seed`` plus their number: with the recorded seed alone,
    its random startup draws would repeat the points the recorded sweep drew first."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    points, objectives = told_points(resumed, config) if resumed else ([], [])
    sampler = optuna.samplers.TPESampler(seed=config.tune.seed + len(points), n_startup_trials=startup_trials(config))
    return OptunaSearch(sampler=sampler, points_to_evaluate=points or None, evaluated_rewards=objectives or None)


def gain_over_baseline(objective: Optional[float], baseline: Optional[float], mode: str) -> Optional[float]:
    """How much better ``objective`` is than the baseline's, relative to it, in the objective's direction
    (+0.01: 1% better, whether the objective is maximised or minimised); None when either is missing."""
    if objective is None or baseline is None or not (math.isfinite(objective) and math.isfinite(baseline)):
        return None
    if baseline == 0:
        return None
    sign = 1.0 if mode == "max" else -1.0
    return sign * (objective - baseline) / abs(baseline)


# Fault drill: ``VERSATUNE_FAIL_TRIAL=alpha=1.0`` makes the trial whose alpha is 1.0 raise once it has
# trained and reported its final evaluation (the worst case for picking the best: a failed trial with
# a plausible objective), so a sweep's handling of a failing trial can be exercised through Ray.
# Read by the sweep's driver and handed to the trials, so it reaches trials on any node however Ray
# was started.
FAIL_TRIAL_ENV = "VERSATUNE_FAIL_TRIAL"


class InjectedTrialFault(RuntimeError):
    """Raised by a trial selected by ``VERSATUNE_FAIL_TRIAL``."""


def fault_drill() -> Optional[tuple[str, float]]:
    """The (parameter, value) of ``VERSATUNE_FAIL_TRIAL``, or None when unset."""
    text = os.environ.get(FAIL_TRIAL_ENV, "").strip()
    if not text:
        return None
    name, _, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if name.strip() not in (*TUNED, "interval") or not math.isfinite(number):
        raise ConfigError(f"{FAIL_TRIAL_ENV}={text!r} must look like PARAM=VALUE with PARAM one of "
                          f"{', '.join((*TUNED, 'interval'))}, e.g. alpha=1.0. Unset it to run every trial normally.")
    return name.strip(), number


def _trial(params: dict[str, Any], base: dict[str, Any], sweep: dict[str, Any]) -> None:
    from mlflow.tracking import MlflowClient
    from ray import tune

    from ..mlflow.tracking import MlflowTrackingHooks, configure_tracking, log_params, run_tags, tracked_run

    config = trial_config(base, params)
    configure_tracking(sweep["tracking_uri"])
    trial_id = tune.get_context().get_trial_id()
    baseline = bool(params.get(BASELINE_KEY))
    run_id = MlflowClient().create_run(
        sweep["experiment_id"], run_name=trial_name(params),
        tags={"mlflow.parentRunId": sweep["parent_run_id"], "versatune.trial_id": trial_id,
              "versatune.sweep_role": "baseline" if baseline else "trial", **run_tags(config)},
    ).info.run_id
    log_params(run_id, {"method.method": config.method.method, "method.interval": config.method.interval}
               | ({} if baseline else {f"method.{key}": params[key] for key in TUNED if key in params}
                  | {f"method.{key}": params[key] for key in CHOSEN if key in params}))
    # The baseline logs no model: it is the trials' yardstick, and the registry (which picks among runs
    # with a logged model) must never register it.
    log_models = sweep["log_models"] and not baseline
    config.train.save_model = log_models
    output = Path(sweep["output_dir"]) / run_id
    fault = sweep.get("fail_trial")
    with tracked_run(run_id=run_id, system_metrics=False, told_to_stop=_told_to_stop_check()):
        if config.distributed.num_workers:
            from ray.tune.integration.ray_train import TuneReportCallback

            from .distributed import train_distributed

            train_distributed(config, output, run_id=run_id, tracking_uri=sweep["tracking_uri"],
                              callbacks=[TuneReportCallback()])
        else:
            from ...training.loop import train

            train(config, output, hooks=[MlflowTrackingHooks(run_id, log_model=log_models), TuneReporter()])
        if fault is not None and not baseline and math.isclose(float(params[fault[0]]), fault[1], abs_tol=1e-9):
            raise InjectedTrialFault(f"fault drill {FAIL_TRIAL_ENV}={fault[0]}={fault[1]:g}: this trial raises after "
                                     f"reporting its final evaluation. Unset {FAIL_TRIAL_ENV} to run it normally.")


def _told_to_stop_check() -> Callable[[], bool]:
    """A check of whether Ray Tune has asked this trial to stop (ASHA, or the sweep ending). Tune's
    ``Trainable.stop`` sets the trial session's stop event, then removes the trial's placement group,
    which kills the trial's own Train controller mid-``fit``; without this check, that
    ``ActorDiedError`` could end an early-stopped trial's run FAILED after the driver had ended it
    KILLED. The session is taken now because ``stop`` also unsets the global one. Reads a Ray
    internal (checked on Ray 2.60); the check says False when it cannot tell."""
    try:
        from ray.train._internal.session import get_session

        session = get_session()
        stop_event = session.stop_event if session is not None else None
    except (ImportError, AttributeError):
        stop_event = None
    return lambda: stop_event is not None and stop_event.is_set()


@dataclass
class SweepResult:
    objective: str
    mode: str
    trials: list[TrialRecord] = field(default_factory=list)
    best: Optional[TrialRecord] = None
    baseline: Optional[TrialRecord] = None
    """The baseline run (its params: ``{"baseline": method, "interval": K}``), or None without one."""
    record_path: Optional[Path] = None
    """The sweep's record (see :mod:`.sweep_record`): what ``--resume-from`` continues from."""
    interrupted: bool = False
    """Ctrl-C ended the sweep before its trials all ran."""

    @property
    def baseline_method(self) -> Optional[str]:
        return self.baseline.params.get(BASELINE_KEY) if self.baseline is not None else None

    def beaten(self) -> Optional[bool]:
        """Whether the best trial beats the baseline; None when either is missing."""
        gain = self.best.gain if self.best is not None else None
        return None if gain is None else gain > 0


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C ended a sweep. A KeyboardInterrupt, so the parent run ends KILLED; it carries what
    finished, so the CLI can print the trials and how to resume them."""

    def __init__(self, result: SweepResult):
        super().__init__("sweep interrupted")
        self.result = result


def pick_best(trials: list[TrialRecord], mode: str) -> Optional[TrialRecord]:
    """The best finished trial (errored, early-stopped and interrupted trials never win)."""
    finished = [t for t in trials if t.kept]
    if not finished:
        return None
    sign = 1.0 if mode == "max" else -1.0
    return max(finished, key=lambda t: sign * t.objective)


def run_sweep(config: RunConfig, *, parent_run_id: str, experiment_id: str, tracking_uri: str,
              output_dir: str | Path, resume: Optional[SweepRecord] = None) -> SweepResult:
    """Run the baseline (unless ``resume`` holds a finished one) and the trials (as many as
    ``tune.num_samples`` less ``resume``'s finished and early-stopped trials), recording each in the
    output folder's :data:`RECORD_NAME` as it ends. Ctrl-C ends the sweep with what finished (``interrupted`` set)."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from .distributed import check_resources, ensure_ray

    tc = config.tune
    scaled = from_dict(config.to_dict())
    scaled.distributed.num_workers = tc.workers_per_trial
    check_resources(scaled)
    fail_trial = fault_drill()
    ensure_ray(config)
    mode = objective_mode(tc.objective)
    resources = ray.cluster_resources()
    memory_gb = resources.get("memory", 0) / 2**30 or None  # what Ray may hand out, not the machine's total
    concurrency = trial_concurrency(config, resources.get("CPU", 1), resources.get("GPU", 0), memory_gb)
    search_alg = optuna_search(config, resume) if tc.searcher == "optuna" else None
    scheduler = ASHAScheduler(time_attr=ASHA_TIME_ATTR, **asha_milestones(config)) if tc.asha else None
    output_dir = Path(output_dir).resolve()
    sweep = {"parent_run_id": parent_run_id, "experiment_id": experiment_id, "tracking_uri": tracking_uri,
             "output_dir": str(output_dir / "trials"), "log_models": tc.log_models, "fail_trial": fail_trial}
    cpus = trial_cpus(config, resources.get("CPU", 1), concurrency)
    trainable = tune.with_resources(tune.with_parameters(_trial, base=config.to_dict(), sweep=sweep), {"cpu": cpus})
    storage = str(output_dir / "ray_tune")
    record_path = output_dir / RECORD_NAME
    start_record(record_path, config, resume, parent_run_id=parent_run_id)
    names = trial_param_names(config)
    result = SweepResult(objective=tc.objective, mode=mode, record_path=record_path,
                         trials=list(resume.counted) if resume else [])
    baseline = baseline_params(config)
    if resume is not None and resume.baseline is not None and resume.baseline.kept \
            and baseline is not None and resume.baseline.params.get(BASELINE_KEY) == baseline[BASELINE_KEY]:
        log.info("Tune: the %s baseline run is reused from %s", baseline[BASELINE_KEY], resume.path)
        result.baseline, baseline = resume.baseline, None
    if baseline is not None:
        # First, alone: one run, no searcher or scheduler (ASHA must not stop the reference).
        log.info("Tune: baseline run (%s mixing, the trials' data, seed and budget)", baseline[BASELINE_KEY])
        recorder = record_callback(record_path, "baseline", (BASELINE_KEY, "interval"), config,
                                   experiment_id=experiment_id, parent_run_id=parent_run_id)
        tune.Tuner(
            trainable, param_space=baseline,
            tune_config=tune.TuneConfig(metric=tc.objective, mode=mode, num_samples=1),
            run_config=tune.RunConfig(name=f"baseline-{parent_run_id}", storage_path=storage, callbacks=[recorder]),
        ).fit()
        ran = recorder.trial_records()
        # Ctrl-C before the baseline started: nothing ran.
        result.baseline = ran[0] if ran else TrialRecord(params={}, objective=None, run_id=None, status="interrupted")
        result.baseline.params = dict(baseline)
        if result.baseline.status == "interrupted":
            result.interrupted = True
            return result
    left = (1 if tc.searcher == "grid" else tc.num_samples) - len(result.trials)
    recorder = record_callback(record_path, "trial", names, config, experiment_id=experiment_id,
                               parent_run_id=parent_run_id)
    tuner = tune.Tuner(
        trainable,
        param_space=param_space(config),
        tune_config=tune.TuneConfig(metric=tc.objective, mode=mode, search_alg=search_alg, scheduler=scheduler,
                                    num_samples=left, max_concurrent_trials=concurrency),
        run_config=tune.RunConfig(name=f"sweep-{parent_run_id}", storage_path=storage, callbacks=[recorder]),
    )
    log.info("Tune: %s searcher, ASHA=%s, %d concurrent trial(s) (cluster: %g CPU, %g GPU, %.0f GB; a trial: "
             "%d CPU, %s GB)%s", tc.searcher, tc.asha, concurrency, resources.get("CPU", 0), resources.get("GPU", 0),
             memory_gb or 0, cpus + tc.workers_per_trial, trial_memory_gb(config) or "?",
             f"; {len(result.trials)} finished or early-stopped trial(s) resumed from {resume.path}, {left} to run"
             if resume else "")
    tuner.fit()

    ran = recorder.trial_records()
    result.interrupted = any(t.status == "interrupted" for t in ran) or (tc.searcher != "grid" and len(ran) < left)
    # A trial interrupted before it opened its run trained nothing and has no params to show.
    result.trials += [t for t in ran if t.status != "interrupted" or t.run_id is not None]
    if result.baseline is not None and result.baseline.status != "finished":
        log.warning("The baseline run did not finish (%s), so the trials have no gain over it.",
                    result.baseline.error or result.baseline.status)
    elif result.baseline is not None:
        for trial in result.trials:
            trial.gain = gain_over_baseline(trial.objective, result.baseline.objective, mode)
    result.best = pick_best(result.trials, mode)
    if result.beaten() is False:
        log.warning("No trial beat the %s baseline: the best trial's %s is %+.2f%% against it. Widen the search "
                    "space or lengthen the budget before trusting these coefficients.", result.baseline_method,
                    tc.objective, 100 * result.best.gain)
    return result


def log_sweep(result: SweepResult, parent_run_id: str) -> None:
    """Best configuration, the baseline and each trial's gain over it, a trials table and the
    objective-vs-α/β figure on the parent run."""
    from mlflow.tracking import MlflowClient

    from ..mlflow.figures import sweep_figure
    from ..mlflow.tracking import log_metrics

    client = MlflowClient()
    rows = [{**t.params, "objective": t.objective, "gain_vs_baseline": t.gain, "status": t.status,
             "resumed": t.resumed, "run_id": t.run_id or "", "error": t.error or ""} for t in result.trials]
    if rows:
        client.log_table(parent_run_id, {k: [r.get(k) for r in rows] for k in rows[0]}, "trials.json")
    if result.record_path is not None and result.record_path.is_file():
        client.log_artifact(parent_run_id, str(result.record_path))
    baseline = result.baseline if result.baseline is not None and result.baseline.status == "finished" else None
    if result.trials:  # none when Ctrl-C came during the baseline run
        with tempfile.TemporaryDirectory() as tmp:
            sweep_figure(result.trials, result.objective, Path(tmp) / "objective_vs_alpha_beta.png",
                         baseline=(result.baseline_method, baseline.objective) if baseline else None)
            client.log_artifact(parent_run_id, str(Path(tmp) / "objective_vs_alpha_beta.png"), "figures")
    counts = {s: sum(t.status == s for t in result.trials) for s in ("finished", "stopped", "error", "interrupted")}
    counts["resumed"] = sum(t.resumed for t in result.trials)
    log_metrics(parent_run_id, {f"trials/{k}": v for k, v in counts.items()}, step=0)
    if result.baseline is not None:
        client.set_tag(parent_run_id, "versatune.baseline", result.baseline_method)
        client.set_tag(parent_run_id, "versatune.baseline_run", result.baseline.run_id or "")
    if baseline is not None and baseline.objective is not None:
        log_metrics(parent_run_id, {f"baseline/{result.objective}": baseline.objective}, step=0)
    if result.best is not None:
        for name, value in result.best.params.items():
            client.set_tag(parent_run_id, f"versatune.best.{name}", str(value))
        client.set_tag(parent_run_id, "versatune.best_run", result.best.run_id or "")
        log_metrics(parent_run_id, {f"best/{result.objective}": result.best.objective}, step=0)
        if result.beaten() is not None:
            log_metrics(parent_run_id, {"best/gain_vs_baseline": result.best.gain}, step=0)
            client.set_tag(parent_run_id, "versatune.best_beats_baseline", str(result.beaten()).lower())
