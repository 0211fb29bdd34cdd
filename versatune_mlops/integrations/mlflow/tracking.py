"""MLflow glue: run lifecycle, training hooks that log metrics/artifacts, the probe's outputs, the model.

Only this module, :mod:`registry` and :mod:`workflow` import MLflow. Every call names its run id
explicitly (never a bare ``start_run()`` that could resume a run inherited through
``MLFLOW_RUN_ID``), so the same code works inside ``mlflow run``, Ray workers and tests.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import subprocess
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from ... import __version__
from . import run_context
from .run_context import TAG_PREFIX
from ...errors import ConfigError
from .figures import (distribution_figure, eval_loss_figure,
                      weight_trajectory_figure)
from ...training.hooks import TrainingHooks

log = logging.getLogger(__name__)

MAX_PARAM_LENGTH = 6000  # MLflow 3 rejects longer parameter values


# ----------------------------------------------------------------------------------------------
# Tracking URI


def resolve_tracking_uri(uri: Optional[str] = None) -> str:
    """Explicit > $MLFLOW_TRACKING_URI > ``sqlite:///<cwd>/mlflow.db`` (absolute, so Ray trials that
    change directory still write to the same database)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        uri = f"sqlite:///{(Path.cwd() / 'mlflow.db').resolve()}"
    elif uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
    return uri


def configure_tracking(uri: Optional[str] = None) -> str:
    """Set and check the tracking URI; a clear error before any training when it cannot be reached."""
    uri = resolve_tracking_uri(uri)
    os.environ["MLFLOW_TRACKING_URI"] = uri  # children (mlflow run steps, Ray workers) inherit it
    mlflow.set_tracking_uri(uri)
    if uri.startswith(("http://", "https://")):
        # Fail fast instead of MLflow's minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any failure here means "cannot reach"
        raise ConfigError(
            f"The MLflow tracking URI {uri!r} cannot be reached ({type(exc).__name__}: {str(exc)[:200]}). "
            f"Start the server (`mlflow server --host 127.0.0.1 --port 5000`) or set MLFLOW_TRACKING_URI / "
            f"--tracking-uri to a reachable store, e.g. sqlite:///$PWD/mlflow.db."
        ) from exc
    return uri


def experiment_id_for(name: Optional[str]) -> str:
    """The id of experiment ``name`` (created if missing); the default experiment when None."""
    client = MlflowClient()
    if name is None:
        return os.environ.get("MLFLOW_EXPERIMENT_ID") or "0"
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


def git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


# ----------------------------------------------------------------------------------------------
# Run lifecycle


@contextlib.contextmanager
def tracked_run(
    *,
    experiment: Optional[str] = None,
    run_name: Optional[str] = None,
    tags: Optional[Mapping[str, str]] = None,
    parent_run_id: Optional[str] = None,
    run_id: Optional[str] = None,
    system_metrics: bool = True,
    told_to_stop: Callable[[], bool] = lambda: False,
) -> Iterator[str]:
    """Start (or join, inside ``mlflow run``) a run and always end it with the right status.

    FINISHED on success; FAILED with the error as tag and ``error.txt`` on an exception; KILLED on
    Ctrl-C or when the process is told to exit (``SystemExit``, e.g. Ray's SIGTERM to a trial that
    ASHA stopped), and also on any exception raised once ``told_to_stop()`` is true (see
    :func:`ended_with_status`). Never leaves a run RUNNING. The run is created with an explicit id and made the active
    fluent run (MLflow's log_input/log_model have no run-id argument).
    """
    client = MlflowClient()
    run_id = run_id or os.environ.get("MLFLOW_RUN_ID")
    all_tags = {f"{TAG_PREFIX}version": __version__, **(tags or {})}
    commit = git_commit()
    if commit:
        all_tags[f"{TAG_PREFIX}git_commit"] = commit
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    if run_id is None:
        run_id = client.create_run(experiment_id_for(experiment), run_name=run_name, tags=all_tags).info.run_id
    else:
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in all_tags.items()])
        if run_name:
            client.set_tag(run_id, "mlflow.runName", run_name)
    mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics)
    with ended_with_status(run_id, end=lambda status: mlflow.end_run(status=status), told_to_stop=told_to_stop):
        yield run_id


@contextlib.contextmanager
def ended_with_status(run_id: str, end: Callable[[str], None], *,
                      told_to_stop: Callable[[], bool] = lambda: False) -> Iterator[None]:
    """Run the block, then ``end(status)``: FINISHED, FAILED (error tag and ``error.txt``) or
    KILLED (Ctrl-C, or ``SystemExit`` such as Ray's SIGTERM to a trial that ASHA stopped).

    ``told_to_stop``: whether the process was asked to stop. An exception raised after that is the
    stop's consequence, not a failure (a trial's own Ray Train controller dies when Ray tears the
    stopped trial down, and the trial sees an ``ActorDiedError``), so the run ends KILLED."""
    client = MlflowClient()
    status = "FINISHED"
    try:
        yield
    except KeyboardInterrupt:
        status = "KILLED"
        client.set_tag(run_id, f"{TAG_PREFIX}error", "interrupted (Ctrl-C)")
        raise
    except SystemExit as exc:
        status = "KILLED"
        client.set_tag(run_id, f"{TAG_PREFIX}error", f"terminated (SystemExit {exc.code})")
        raise
    except BaseException as exc:
        if told_to_stop():
            status = "KILLED"
            client.set_tag(run_id, f"{TAG_PREFIX}error", f"stopped ({type(exc).__name__} on the way out)")
            raise
        status = "FAILED"
        client.set_tag(run_id, f"{TAG_PREFIX}error", f"{type(exc).__name__}: {exc}"[:5000])
        client.log_text(run_id, "".join(traceback.format_exception(exc)), "error.txt")
        raise
    finally:
        end(status)


# ----------------------------------------------------------------------------------------------
# Logging helpers


def log_params(run_id: str, params: Mapping[str, Any]) -> None:
    client = MlflowClient()
    existing = client.get_run(run_id).data.params
    items = []
    for key, value in params.items():
        text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        if key in existing:  # `mlflow run` already logged its entry-point parameters
            continue
        items.append(Param(key, text[:MAX_PARAM_LENGTH]))
    for start in range(0, len(items), 100):  # MLflow's batch limit
        client.log_batch(run_id, params=items[start : start + 100])


def log_metrics(run_id: str, metrics: Mapping[str, float], step: int) -> None:
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and math.isfinite(float(v))]
    for start in range(0, len(batch), 1000):
        MlflowClient().log_batch(run_id, metrics=batch[start : start + 1000])


def run_tags(config) -> dict[str, str]:
    mc = config.method
    tags = {f"{TAG_PREFIX}method": mc.method, f"{TAG_PREFIX}mode": mc.mode,
            f"{TAG_PREFIX}preset": config.preset or "custom", f"{TAG_PREFIX}model": config.model.name}
    if mc.target:
        tags[f"{TAG_PREFIX}target"] = mc.target
    return tags


def log_probe_result(run_id: str, result_json: Mapping[str, Any]) -> None:
    """distribution.json + a bar chart under ``probe/``, the distribution, the estimator's held-out
    accuracy and the "other" share as metrics, the estimator as a tag, and a table of sample texts with
    their per-domain probabilities (``probe/samples.json``, shown in the run's Evaluation/Artifacts tab)."""
    client = MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "probe"
        folder.mkdir()
        (folder / "distribution.json").write_text(json.dumps(result_json, indent=2))
        distribution_figure(result_json["distribution"], folder / "distribution.png")
        client.log_artifacts(run_id, str(folder), artifact_path="probe")
    if result_json.get("sample_probabilities"):
        client.log_table(run_id, data=probe_sample_table(result_json), artifact_file="probe/samples.json")
    client.set_tag(run_id, f"{TAG_PREFIX}probe_estimator", result_json["estimator"])
    log_metrics(run_id, {f"probe/{d}": p for d, p in result_json["distribution"].items()}
                | {"probe/estimator_accuracy": result_json["estimator_accuracy"],
                   "probe/other_share": result_json.get("other_share", 0.0)}, step=0)


def probe_sample_table(result_json: Mapping[str, Any]) -> dict[str, list]:
    """Columns of the probe's sample table: each text, then its probability for every domain and "other"."""
    rows = result_json["sample_probabilities"]
    table: dict[str, list] = {"text": list(result_json["sample_texts"][:len(rows)])}
    for k, label in enumerate([*result_json["domains"], "other"]):
        table[label] = [row[k] for row in rows]
    return table


def log_dataset_inputs(data, source: str) -> None:
    """Record the train and eval splits as inputs of the active run, with per-domain sizes as tags."""
    import pandas as pd

    if source == "mmlu":
        from ...data.mmlu import mmlu_path

        source = str(mmlu_path())

    resolved = dataset_source(source)
    for context, split in (("training", data.train), ("evaluation", data.eval)):
        rows = [{"domain": ex.domain, "prompt": ex.messages[-1][1], "response": ex.response}
                for d in data.domains for ex in split[d]]
        dataset = mlflow.data.from_pandas(pd.DataFrame(rows), source=resolved, name=f"{Path(source).name}-{context}")
        sizes = {d: len(split[d]) for d in data.domains}
        mlflow.log_input(dataset, context=context, tags={"domain_sizes": json.dumps(sizes)})


def dataset_source(source: str):
    """MLflow's dataset source for a path or URI, resolved without MLflow's ambiguity warning.

    MLflow 3.17 registers two ``LocalArtifactDatasetSource`` classes that both accept a local path, so
    resolving one prints "can be interpreted in multiple ways: LocalArtifactDatasetSource,
    LocalArtifactDatasetSource" for every logged dataset. Both give the same source; the first one
    that accepts ``source`` is used (MLflow's own order).
    """
    from mlflow.data.dataset_source_registry import get_registered_sources, resolve_dataset_source

    candidates = [cls for cls in get_registered_sources() if cls._can_resolve(source)]
    return resolve_dataset_source(source, candidate_sources=candidates[:1] or None)


def model_pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("torch", "transformers", "accelerate", "tokenizers", "mlflow")]


# Licenses of the base models this project ships: SmolLM2-135M-Instruct is Apache-2.0, the tiny
# model is built from scratch by this (Apache-2.0) project. Any other base model's license is the
# user's to check, and MLflow's warning about it stays.
KNOWN_LICENSES = {"smollm2": "apache-2.0", "tiny": "apache-2.0"}


def model_card(base_model: str) -> Any:
    """A model card for the logged model, so MLflow does not look one up on the hub for a local folder
    (it warns "The model card could not be retrieved" otherwise)."""
    from huggingface_hub import ModelCard

    license_line = f"license: {KNOWN_LICENSES[base_model]}\n" if base_model in KNOWN_LICENSES else ""
    return ModelCard(f"---\n{license_line}tags: [versatune, multi-domain-sft]\n---\n"
                     f"# Multi-domain SFT of {base_model}\n\nFine-tuned by versatune-mlops (VersaTune mixing).\n")


def log_transformers_model(run_id: str, model_dir: str | Path, base_model: str = "") -> str:
    """Log the saved model with the transformers flavor; returns its ``models:/m-...`` URI.

    Runs inside :func:`tracked_run`, whose active run is ``run_id``.
    """
    from mlflow.models import infer_signature
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    signature = infer_signature(["Write an exam question on law."], ["A generated question."],
                                params={"max_new_tokens": 64})
    info = mlflow.transformers.log_model(
        {"model": model, "tokenizer": tokenizer}, name="model", task="text-generation",
        signature=signature, pip_requirements=model_pip_requirements(), model_card=model_card(base_model),
    )
    MlflowClient().set_tag(run_id, f"{TAG_PREFIX}model_uri", info.model_uri)
    return info.model_uri


# ----------------------------------------------------------------------------------------------
# Training hooks


class MlflowTrackingHooks(TrainingHooks):
    """Logs a training run to MLflow; the loop does not know MLflow exists."""

    def __init__(self, run_id: str, log_model: bool = True, data_source: str = "mmlu"):
        self.run_id = run_id
        self.log_model = log_model
        self.data_source = data_source
        self.client = MlflowClient()

    def on_start(self, config, domains, initial_weights, run_info):
        run_context.set_domains(domains)  # runs started from here on get the loaded data's domains
        log_params(self.run_id, config.flat())
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in run_tags(config).items()]
                              + [RunTag(f"{TAG_PREFIX}domains", ",".join(domains))])
        log_metrics(self.run_id, {f"weight/{d}": w for d, w in initial_weights.items()}
                    | {f"prior/{d}": p for d, p in run_info["prior"].items()}
                    | {f"reference_loss/{d}": v for d, v in run_info["reference_loss"].items()}, step=0)
        self.client.log_dict(self.run_id, {k: run_info[k] for k in ("train_sizes", "eval_sizes")}, "data/sizes.json")
        if run_info.get("probe_result"):
            log_probe_result(self.run_id, run_info["probe_result"])

    def on_log(self, step, metrics):
        log_metrics(self.run_id, metrics, step)

    def on_eval(self, step, metrics):
        log_metrics(self.run_id, metrics, step)

    def on_reweight(self, step, record):
        families = {"weight": record["weights"], "potential": record["potential"], "forgetting": record["forgetting"]}
        if "train_loss" in record:  # method.signal=train: the losses the update read
            families["window_train_loss"] = record["train_loss"]
        log_metrics(self.run_id, {f"{family}/{d}": v for family, values in families.items() for d, v in values.items()},
                    step)

    def on_checkpoint(self, step, path):
        self.client.set_tag(self.run_id, f"{TAG_PREFIX}last_checkpoint", path)

    def on_end(self, summary):
        client = self.client
        client.log_dict(self.run_id, summary, "summary.json")
        rows = [{"step": p["step"], **p["weights"]} for p in summary["weight_trajectory"]]
        client.log_table(self.run_id, {k: [r[k] for r in rows] for k in rows[0]}, "weight_trajectory.json")
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "weight_trajectory.csv").write_text(
                "\n".join([",".join(rows[0])] + [",".join(str(r[k]) for k in rows[0]) for r in rows]) + "\n")
            client.log_artifact(self.run_id, str(folder / "weight_trajectory.csv"))
            weight_trajectory_figure(summary["weight_trajectory"], folder / "figures" / "weights.png",
                                     title=f"Domain weights ({summary['method']})")
            eval_loss_figure(summary["reweighting_records"], summary["eval_loss_before"], summary["eval_loss_after"],
                             summary["steps"], folder / "figures" / "eval_loss.png")
            client.log_artifacts(self.run_id, str(folder / "figures"), artifact_path="figures")
        final = {f"final_weight/{d}": w for d, w in summary["final_weights"].items()}
        final |= {f"eval_loss_before/{d}": v for d, v in summary["eval_loss_before"].items()}
        final |= {f"eval_loss_change/{d}": summary["eval_loss_after"][d] - summary["eval_loss_before"][d]
                  for d in summary["domains"]}
        final |= {"tokens_trained": summary["tokens_trained"], "train_seconds": summary["train_seconds"],
                  "wall_seconds": summary["wall_seconds"]}
        log_metrics(self.run_id, final, summary["steps"])  # metrics_after came through on_eval
        if self.log_model and summary.get("model_dir"):
            log_transformers_model(self.run_id, summary["model_dir"], summary["config"]["model"]["name"])
