"""The `main` entry point: probe -> train (or a Tune sweep) -> register, as MLflow Project steps under one parent run.

Each step is an ``mlflow run`` of this project's own entry point (so it is a run of its own, with its
parameters, logs and status) tagged as a child of the main run. A step that already FINISHED with
the same parameters and code version is reused instead of re-run (as in MLflow's multistep
example), so re-running `main` after a failure continues where it stopped. Artifacts travel
between steps by run URI (``runs:/<probe run>/probe/distribution.json``).
"""

from __future__ import annotations

import logging
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional

import mlflow
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from ...errors import VersaTuneError
from .run_context import TAG_PREFIX

log = logging.getLogger(__name__)

ENTRY_POINT_TAG = "mlflow.project.entryPoint"
COMMIT_TAG = "mlflow.source.git.commit"


def project_root() -> Path:
    """The MLflow Project folder: the working directory under `mlflow run`, else the repository root."""
    cwd = Path.cwd()
    return cwd if (cwd / "MLproject").is_file() else Path(__file__).resolve().parents[3]


def _current_commit(client: MlflowClient, parent_run_id: str) -> Optional[str]:
    return client.get_run(parent_run_id).data.tags.get(COMMIT_TAG)


def _logged_value(value: Optional[str]) -> Optional[str]:
    """MLflow logs entry-point parameters shell-quoted (an empty string becomes "''"): undo that."""
    if value is None:
        return None
    try:
        tokens = shlex.split(value)
    except ValueError:
        return value
    return tokens[0] if len(tokens) == 1 else ("" if not tokens else value)


def find_finished_step(client: MlflowClient, experiment_id: str, entry_point: str, parameters: Mapping[str, str],
                       commit: Optional[str]) -> Optional[str]:
    """The newest FINISHED run of ``entry_point`` with exactly these parameters and code version."""
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{ENTRY_POINT_TAG}` = '{entry_point}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=200,
    )
    for run in runs:
        if commit is not None and run.data.tags.get(COMMIT_TAG) != commit:
            continue
        if all(_logged_value(run.data.params.get(k)) == str(v) for k, v in parameters.items()):
            return run.info.run_id
    return None


def run_step(entry_point: str, parameters: Mapping[str, str], *, experiment_id: str, parent_run_id: str,
             reuse: bool = True, report: Callable[[str], None] = log.info,
             describe: Callable[[Run], str] = lambda run: "") -> str:
    """Run one entry point as a child run of ``parent_run_id`` (or reuse a finished one); its run id.

    ``report`` gets one line when the step is done: its name, how long it took, its run and
    ``describe(run)`` (the step's result in a few words).
    """
    client = MlflowClient()
    parameters = {k: str(v) for k, v in parameters.items()}
    if reuse:
        previous = find_finished_step(client, experiment_id, entry_point, parameters,
                                      _current_commit(client, parent_run_id))
        if previous:
            client.set_tag(parent_run_id, f"{TAG_PREFIX}step.{entry_point}", previous)
            report(f"{entry_point:<8} reusing finished run {previous} (same parameters and code): "
                   f"{describe(client.get_run(previous))}")
            return previous
    log.debug("Step %s: starting with %s", entry_point, parameters)
    started = time.monotonic()
    submitted = mlflow.projects.run(
        str(project_root()), entry_point=entry_point, parameters=parameters, env_manager="local",
        experiment_id=experiment_id, synchronous=False, run_name=entry_point,
    )
    client.set_tag(submitted.run_id, "mlflow.parentRunId", parent_run_id)
    client.set_tag(parent_run_id, f"{TAG_PREFIX}step.{entry_point}", submitted.run_id)
    if not submitted.wait():
        error = client.get_run(submitted.run_id).data.tags.get(f"{TAG_PREFIX}error", "see the step's output above")
        raise VersaTuneError(
            f"Step {entry_point!r} failed (run {submitted.run_id}): {error}. Fix the cause and run `main` again: "
            f"finished steps are reused."
        )
    report(f"{entry_point:<8} done in {time.monotonic() - started:.0f} s, run {submitted.run_id}: "
           f"{describe(client.get_run(submitted.run_id))}")
    return submitted.run_id


def describe_probe(run: Run) -> str:
    prior = {k.split("/", 1)[1]: v for k, v in run.data.metrics.items()
             if k.startswith("probe/") and k != "probe/estimator_accuracy"}
    return "prior " + ", ".join(f"{d} {p:.2f}" for d, p in sorted(prior.items(), key=lambda kv: -kv[1]))


def describe_metrics(*keys: str) -> Callable[[Run], str]:
    def describe(run: Run) -> str:
        values = run.data.metrics
        return ", ".join(f"{k} {values[k]:.4g}" for k in keys if k in values)
    return describe


def describe_registration(run: Run) -> str:
    tags = run.data.tags
    return (f"{tags.get(f'{TAG_PREFIX}registered_model')} version {tags.get(f'{TAG_PREFIX}registered_version')} "
            f"@{tags.get(f'{TAG_PREFIX}alias')} (run {tags.get(f'{TAG_PREFIX}registered_run')})")


@dataclass
class MainResult:
    experiment_id: str
    probe_run_id: str
    train_run_id: str
    register_run_id: str


def run_main(*, preset: str, method: str, mode: str, target: str, max_steps: str, seed: str, config: str,
             model_name: str, alias: str, metric: str, parent_run_id: str, use_tune: bool = False,
             num_trials: str = "4", report: Callable[[str], None] = log.info) -> MainResult:
    client = MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    common = {"experiment_id": experiment_id, "parent_run_id": parent_run_id, "report": report}
    scores = describe_metrics(metric, "eval_loss/mean", "eval_loss/worst")
    probe_run = run_step("probe", {"preset": preset, "config": config, "seed": seed}, describe=describe_probe,
                         **common)
    prior_uri = f"runs:/{probe_run}/probe/distribution.json"
    if use_tune:
        # The sweep's trials are children of the tune run; the best one is what gets registered.
        tune_run = run_step("tune", {"preset": preset, "config": config, "max_steps": max_steps, "num_trials": num_trials,
                                     "objective": metric, "prior_uri": prior_uri, "model_name": model_name,
                                     "alias": alias},
                            describe=lambda run: f"best run {run.data.tags.get('versatune.best_run')}", **common)
        train_run = client.get_run(tune_run).data.tags["versatune.best_run"]
    else:
        train_run = run_step("train", {
            "preset": preset, "config": config, "method": method, "mode": mode, "target": target,
            "max_steps": max_steps, "seed": seed, "prior_uri": prior_uri,
        }, describe=scores, **common)
    # Registration is cheap and idempotent: always run it so the alias points at the current best.
    register_run = run_step("register", {"model_name": model_name, "alias": alias, "metric": metric,
                                         "run_ids": train_run}, reuse=False, describe=describe_registration, **common)
    return MainResult(experiment_id, probe_run, train_run, register_run)
