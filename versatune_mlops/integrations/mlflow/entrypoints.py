"""The MLflow side of each `versatune` command: the tracked run around it, what it logs, and the
registry and workflow calls. ``cli/`` parses arguments and prints; everything that talks to
MLflow for a command lives here, so a command reads as "validate, run tracked, report"."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional

import mlflow
from mlflow.tracking import MlflowClient

from ...config import RunConfig
from ...data.sources import load_domain_data
from ...errors import VersaTuneError
from ...mixing.probe import ProbeResult, run_probe
from ...training.checkpointing import latest, write_json_atomic
from ...training.loop import train
from ...training.models import cache_root
from ...training.setup import prepare_inputs
from .registry import Registration, register_best
from .tracking import (MlflowTrackingHooks, configure_tracking, experiment_id_for, log_dataset_inputs, log_params,
                       log_probe_result, run_tags, tracked_run)
from .workflow import MainResult, run_main

log = logging.getLogger(__name__)


@contextlib.contextmanager
def maybe_tracked(enabled: bool, *, experiment: Optional[str], run_name: str,
                  tags: Mapping[str, str]) -> Iterator[Optional[str]]:
    """A tracked MLflow run (yields its id), or nothing (yields None) when tracking is off."""
    if not enabled:
        yield None
        return
    with tracked_run(experiment=experiment, run_name=run_name, tags=dict(tags)) as run_id:
        yield run_id


def prior_from_file(path: str) -> dict[str, float]:
    """Read a probe's distribution.json from a local path or an MLflow artifact URI (runs:/...)."""
    if "://" in path or path.startswith("runs:/"):
        try:
            path = mlflow.artifacts.download_artifacts(artifact_uri=path)
        except Exception as exc:  # noqa: BLE001 - any download failure is the same user error
            raise VersaTuneError(f"--prior-file {path!r} could not be downloaded ({exc}). Pass the distribution.json "
                                 f"artifact of a finished probe run, e.g. runs:/<run id>/probe/distribution.json.") from exc
    file = Path(path)
    if not file.is_file():
        raise VersaTuneError(f"--prior-file {path!r} does not exist. Pass the distribution.json written by `versatune probe`.")
    try:
        payload = json.loads(file.read_text())
        return dict(payload["distribution"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise VersaTuneError(f"--prior-file {path!r} has no 'distribution' mapping ({exc}). "
                             f"Pass the distribution.json written by `versatune probe`.") from exc


def probe(config: RunConfig, output_dir: str, run_id: Optional[str]) -> tuple[ProbeResult, Path]:
    """Run the probe, write distribution.json, and log it to the run when there is one."""
    texts = None
    if config.distributed.num_workers > 0:  # generation is the probe's cost; the estimator runs once, here
        from ..ray.distributed import generate_probe_texts

        texts = generate_probe_texts(config)
    inputs = prepare_inputs(config)
    result = run_probe(inputs.loaded.model, inputs.loaded.tokenizer, inputs.data, config.probe,
                       cache_dir=cache_root(config.model), texts=texts)
    out = Path(output_dir) / (run_id or "")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "distribution.json", result.to_json())
    if run_id:
        log_params(run_id, {k: v for k, v in config.flat().items() if k.startswith(("probe.", "model.", "data."))})
        log_probe_result(run_id, result.to_json())
    return result, out


def train_here(config: RunConfig, out: Path, run_id: Optional[str], resume: Optional[str]) -> dict:
    """The single-process loop in this process, logging to ``run_id`` when given."""
    inputs = prepare_inputs(config)
    hooks = []
    if run_id:
        log_dataset_inputs(inputs.data, config.data.source)
        hooks.append(MlflowTrackingHooks(run_id))
    with _checkpoint_logged_on_interrupt(run_id, out):
        return train(config, out, hooks=hooks, resume_from=resume, inputs=inputs)


def train_on_ray(config: RunConfig, out: Path, run_id: Optional[str], resume: Optional[str]) -> dict:
    """Ray Train workers; the main worker logs to this run by its id."""
    from ..ray.distributed import train_distributed  # Ray loads only when a run asks for workers

    if run_id:
        log_dataset_inputs(load_domain_data(config.data), config.data.source)
    with _checkpoint_logged_on_interrupt(run_id, out):
        return train_distributed(config, out, run_id=run_id, tracking_uri=mlflow.get_tracking_uri() if run_id else None,
                                 resume_from=resume)


@contextlib.contextmanager
def _checkpoint_logged_on_interrupt(run_id: Optional[str], output_dir: Path) -> Iterator[None]:
    """On Ctrl-C, log the newest checkpoint to the run, so a resume can start from the run alone."""
    try:
        yield
    except KeyboardInterrupt:
        checkpoint = latest(output_dir) if run_id else None
        if checkpoint is not None:
            MlflowClient().log_artifacts(run_id, str(checkpoint), artifact_path=f"checkpoints/{checkpoint.name}")
            log.warning("Interrupted: logged checkpoint %s to run %s", checkpoint.name, run_id)
        raise


def register(*, model_name: str, metric: str, alias: str, experiment: Optional[str], run_name: Optional[str],
             parent_run_id: Optional[str], run_ids: list[str]) -> Registration:
    """Register the best finished run's model (among a parent's children, given runs, or the
    experiment) inside a `register` run of its own, and point the alias at it."""
    with tracked_run(experiment=experiment, run_name=run_name or "register",
                     tags={"versatune.step": "register"}, system_metrics=False) as run_id:
        experiment_ids = [] if (parent_run_id or run_ids) else [
            mlflow.get_run(run_id).info.experiment_id if experiment is None else experiment_id_for(experiment)]
        registration = register_best(model_name, metric=metric, alias=alias, experiment_ids=experiment_ids,
                                     parent_run_id=parent_run_id, run_ids=run_ids)
        mlflow.set_tags({"versatune.registered_model": registration.model_name,
                         "versatune.registered_version": registration.version,
                         "versatune.registered_run": registration.run_id, "versatune.alias": registration.alias})
    return registration


# MLflow 3.17's UI opens in its GenAI view (a "Traces: 0" overview) unless the address asks for the
# model-training one; an experiment tag cannot change that (the UI reads `mlflow.experimentKind` only
# while its GenAI/Model-training switch is off, and 3.17 ships it on: see the notes of issue 16).
TRAINING_VIEW = "workflowType=machine_learning"


@dataclass
class MainReport:
    """What `versatune main` prints at the end."""

    experiment_name: str
    experiment_id: str
    best_run_id: str
    best_run_name: str
    metric_value: float
    version: str
    runs_url: str
    """The experiment's runs table in the UI's model-training view."""
    model_url: str
    """The registered model's page (its versions and aliases)."""
    ui_command: Optional[str]
    """The command that serves the UI for a local store; None when the tracking URI is a server."""


def ui_urls(tracking_uri: str, experiment_id: str, model_name: str) -> tuple[str, str, Optional[str]]:
    """(runs page, model page, command to start the UI or None) for a tracking URI."""
    if tracking_uri.startswith(("http://", "https://")):
        base, command = tracking_uri.rstrip("/"), None
    else:
        base = "http://127.0.0.1:5000"
        command = f"mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000"
    return (f"{base}/#/experiments/{experiment_id}/runs?{TRAINING_VIEW}",
            f"{base}/#/models/{model_name}?{TRAINING_VIEW}", command)


def main_workflow(*, preset: str, method: str, mode: str, target: str, max_steps: str, seed: str, config: str,
                  model_name: str, alias: str, metric: str, use_tune: bool, num_trials: str,
                  tracking_uri: Optional[str], experiment: Optional[str], run_name: Optional[str],
                  report: Callable[[str], None] = log.info) -> MainReport:
    """probe -> train (or tune) -> register as child runs of one `main` run (finished steps reused);
    ``report`` gets one line per step with its result."""
    uri = configure_tracking(tracking_uri)
    with tracked_run(experiment=experiment, run_name=run_name or f"main-{preset}",
                     tags={"versatune.step": "main", "versatune.preset": preset}, system_metrics=False) as run_id:
        result: MainResult = run_main(preset=preset, method=method, mode=mode, target=target, max_steps=max_steps,
                                      seed=seed, config=config, model_name=model_name, alias=alias, metric=metric,
                                      parent_run_id=run_id, use_tune=use_tune, num_trials=num_trials, report=report)
    client = MlflowClient()
    train_run = client.get_run(result.train_run_id)
    version = client.get_model_version_by_alias(model_name, alias)
    runs_url, model_url, ui_command = ui_urls(uri, result.experiment_id, model_name)
    return MainReport(experiment_name=client.get_experiment(result.experiment_id).name,
                      experiment_id=result.experiment_id, best_run_id=result.train_run_id,
                      best_run_name=train_run.info.run_name,
                      metric_value=train_run.data.metrics.get(metric, float("nan")), version=version.version,
                      runs_url=runs_url, model_url=model_url, ui_command=ui_command)


def tag_inherited_run(message: str) -> None:
    """Under `mlflow run`, record an error raised before our own run handling on the run it created
    (mlflow run marks that run FAILED when we exit non-zero)."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    try:
        MlflowClient().set_tag(run_id, "versatune.error", message[:5000])
    except Exception:  # noqa: BLE001 - best effort; the message is already on stderr
        pass


def train_tags(config: RunConfig) -> dict[str, str]:
    return run_tags(config) | {"versatune.step": "train"}


def sweep(config: RunConfig, *, tracking_uri: Optional[str], experiment: Optional[str], run_name: Optional[str],
          output_dir: str, model_name: str, alias: str, resume=None):
    """A Ray Tune sweep as one parent run with a child run per trial; registers the best trial's model.

    ``resume``: a checked :class:`~..ray.sweep_record.SweepRecord` whose finished and early-stopped
    trials this sweep continues (first ending the runs a killed sweep left RUNNING). Ctrl-C raises
    :class:`~..ray.tuning.SweepInterrupted` once what finished is logged (the parent run ends KILLED,
    nothing is registered)."""
    from ..ray.tuning import SweepInterrupted, log_sweep, run_sweep  # Ray loads only for a sweep

    uri = configure_tracking(tracking_uri)
    tags = {"versatune.step": "tune", "versatune.preset": config.preset or "custom",
            "versatune.searcher": config.tune.searcher}
    if resume is not None:
        from ..ray.sweep_record import close_abandoned_runs

        tags["versatune.resumed_from"] = str(resume.path)
        close_abandoned_runs(resume)
    with tracked_run(experiment=experiment, run_name=run_name or f"tune-{config.tune.searcher}", tags=tags) as run_id:
        log_params(run_id, {k: v for k, v in config.flat().items() if k.startswith(("tune.", "train.", "model.name"))})
        result = run_sweep(config, parent_run_id=run_id, experiment_id=mlflow.get_run(run_id).info.experiment_id,
                           tracking_uri=uri, output_dir=Path(output_dir) / run_id, resume=resume)
        log_sweep(result, run_id)
        if result.interrupted:
            raise SweepInterrupted(result)
        if result.best is None:
            raise VersaTuneError("No trial finished, so there is nothing to register. See the trials' errors in "
                                 "trials.json on the sweep run and fix their cause.")
        registration = None
        if config.tune.log_models and (not result.best.resumed or _registrable(result.best)):
            registration = register_best(model_name, metric=result.objective, alias=alias, run_ids=[result.best.run_id])
    return result, registration


def _registrable(best) -> bool:
    """Whether the best trial's run holds a model in this tracking store: a resumed trial's run may be
    in the store of the sweep that ran it."""
    try:
        run = MlflowClient().get_run(best.run_id) if best.run_id else None
    except mlflow.exceptions.MlflowException:
        run = None
    if run is None or "versatune.model_uri" not in run.data.tags:
        log.warning("The best trial (run %s) was resumed from an earlier sweep and its model is not in this "
                    "tracking store, so nothing is registered. Register it from the store that holds it: "
                    "versatune register --run-ids %s", best.run_id, best.run_id)
        return False
    return True
