"""Model registry: pick the best finished run, register its model once, point an alias at it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import mlflow
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from ...errors import ConfigError
from ...config import objective_mode
from .run_context import TAG_PREFIX

log = logging.getLogger(__name__)

# Metrics where lower is better; every other objective is maximised.


@dataclass
class Registration:
    model_name: str
    version: str
    alias: str
    run_id: str
    metric: str
    value: float
    created: bool
    """False when this run's model was already registered (no duplicate version)."""


def candidate_runs(
    client: MlflowClient,
    *,
    experiment_ids: Sequence[str] = (),
    parent_run_id: Optional[str] = None,
    run_ids: Sequence[str] = (),
) -> list[Run]:
    """Finished runs that logged a model, from explicit ids, a parent run, or whole experiments."""
    if run_ids:
        runs = [client.get_run(r) for r in run_ids]
    else:
        if parent_run_id:
            experiment_ids = [client.get_run(parent_run_id).info.experiment_id]
        query = f"tags.mlflow.parentRunId = '{parent_run_id}'" if parent_run_id else ""
        runs = client.search_runs(list(experiment_ids), filter_string=query, max_results=5000)
    return [r for r in runs if r.info.status == "FINISHED" and f"{TAG_PREFIX}model_uri" in r.data.tags]


def best_run(runs: Sequence[Run], metric: str) -> Run:
    scored = [r for r in runs if metric in r.data.metrics]
    if not scored:
        raise ConfigError(
            f"No finished run with a logged model has the metric {metric!r}. Train first (the `train` or `main` "
            f"entry point), or pick another --metric (e.g. score/multi_domain, eval_loss/mean)."
        )
    sign = -1.0 if objective_mode(metric) == "min" else 1.0
    return max(scored, key=lambda r: (sign * r.data.metrics[metric], r.info.end_time or 0))


def register_best(
    model_name: str,
    *,
    metric: str = "score/multi_domain",
    alias: str = "champion",
    experiment_ids: Sequence[str] = (),
    parent_run_id: Optional[str] = None,
    run_ids: Sequence[str] = (),
) -> Registration:
    client = MlflowClient()
    run = best_run(candidate_runs(client, experiment_ids=experiment_ids, parent_run_id=parent_run_id,
                                  run_ids=run_ids), metric)
    run_id = run.info.run_id
    existing = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    if existing:
        version, created = existing[0], False
    else:
        new_model = not client.search_registered_models(filter_string=f"name = '{model_name}'")
        # register_model resolves the logged model's id, which a tracking server requires for
        # a models:/m-<id> source (create_model_version with the bare URI is refused over REST).
        # It creates the registered model itself; creating it first made it print "already exists".
        version = mlflow.register_model(run.data.tags[f"{TAG_PREFIX}model_uri"], model_name)
        if new_model:
            client.update_registered_model(model_name, description="VersaTune multi-domain SFT models")
        created = True
    client.set_registered_model_alias(model_name, alias, version.version)
    tags = {key[len(TAG_PREFIX):]: value for key, value in run.data.tags.items()
            if key.startswith(TAG_PREFIX) and key[len(TAG_PREFIX):] in ("method", "mode", "target", "preset")}
    tags |= {f"param.{k}": v for k, v in run.data.params.items()
             if k in ("method.alpha", "method.beta", "method.eta", "method.epsilon", "method.interval")}
    tags |= {f"metric.{k}": f"{v:.6g}" for k, v in run.data.metrics.items()
             if k.startswith(("eval_loss/", "score/", "accuracy/"))}
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version.version, key, value)
    log.info("%s version %s of %s (run %s, %s=%.5g) -> alias %s", "Registered" if created else "Reused",
             version.version, model_name, run_id, metric, run.data.metrics[metric], alias)
    return Registration(model_name, str(version.version), alias, run_id, metric, run.data.metrics[metric], created)
