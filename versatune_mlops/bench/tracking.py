"""The benchmark's MLflow side: one child run per method and seed, the tables on the parent run."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from mlflow.tracking import MlflowClient

from .. import __version__
from ..integrations.mlflow.run_context import TAG_PREFIX
from ..integrations.mlflow.tracking import MlflowTrackingHooks, ended_with_status, log_metrics, log_params, run_tags
from ..training.hooks import TrainingHooks
from .figures import bench_loss_change_figure, bench_trajectories_figure, write_loss_curve_figures


def bench_run_context(parent_run_id: str, experiment_id: str):
    """A ``bench.RunContext``: each benchmark run becomes an MLflow child run of ``parent_run_id``.

    A run reused from an earlier benchmark invocation gets a child run too (params, final metrics
    and summary.json, tagged ``versatune.reused``), so the parent always lists every method and seed.
    """

    @contextlib.contextmanager
    def context(config, name: str, reused: Optional[dict]) -> Iterator[list[TrainingHooks]]:
        client = MlflowClient()
        tags = {"mlflow.parentRunId": parent_run_id, f"{TAG_PREFIX}version": __version__,
                f"{TAG_PREFIX}step": "bench", **run_tags(config)}
        if reused is not None:
            tags[f"{TAG_PREFIX}reused"] = "true"
        run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        hooks = MlflowTrackingHooks(run_id, log_model=False)
        with ended_with_status(run_id, end=lambda status: client.set_terminated(run_id, status=status)):
            if reused is not None:
                log_params(run_id, config.flat())
                log_metrics(run_id, reused["metrics_after"], reused["steps"])
                hooks.on_end(reused)
            yield [hooks]

    return context


def log_bench_report(run_id: str, report: Mapping[str, Any], markdown: str) -> None:
    """The benchmark's tables (markdown + JSON), headline metrics and figures on its parent run."""
    client = MlflowClient()
    client.log_dict(run_id, dict(report), "bench/report.json")
    client.log_text(run_id, markdown, "bench/report.md")
    metrics: dict[str, float] = {}
    for row in (report.get("fostering") or {}).get("rows", []):
        metrics[f"bench/score/{row['method']}"] = row["score"]["mean"]
        metrics[f"bench/gain_over_uniform/{row['method']}"] = row["gain_over_uniform"]["mean"]
    duel = report.get("head_to_head") or {}
    for row in duel.get("rows", []):
        metrics[f"bench/head_to_head/{duel['headline']}_vs/{row['method']}"] = row["gain"]["mean"]
    for block in (report.get("expansion") or {}).get("targets", []):
        for row in block["rows"]:
            metrics[f"bench/expansion/{block['target']}/kept/{row['method']}"] = row["kept"]["mean"]
            metrics[f"bench/expansion/{block['target']}/degradation_reduction/{row['method']}"] = \
                row["degradation_reduction"]["mean"]
    if report.get("overhead"):
        metrics["bench/overhead_ratio"] = report["overhead"]["ratio"]
    log_metrics(run_id, metrics, step=0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if (report.get("fostering") or {}).get("rows"):
            bench_loss_change_figure(report["fostering"], folder / "loss_change_by_method.png")
        if report.get("runs"):
            bench_trajectories_figure(report["runs"], folder / "weight_trajectories.png")
        write_loss_curve_figures(report, folder)
        client.log_artifacts(run_id, str(folder), artifact_path="bench/figures")


def log_bench_params(run_id: str, plan, quick: bool, config) -> None:
    """The plan and the shared config as parameters of the benchmark's parent run."""
    log_params(run_id, {"bench.seeds": plan.seeds, "bench.methods": plan.fostering_methods,
                        "bench.targets": plan.targets, "bench.expansion_methods": plan.expansion_methods,
                        "bench.quick": quick, "bench.variants": {v.label: v.overrides for v in plan.variants},
                        "bench.expansion_variants": {v.label: v.overrides for v in plan.expansion_variants},
                        **config.flat()})


def log_fidelity_report(run_id: str, report: Mapping[str, Any], markdown: str, config) -> None:
    """bench-probe on its run: the tables, TV per estimator as metrics, the config as parameters."""
    client = MlflowClient()
    log_params(run_id, {"bench.seeds": report["seeds"], "bench.mixture_size": report["mixture_size"],
                        "bench.per_class": report["per_class"], **config.flat()})
    client.log_dict(run_id, dict(report), "bench/probe_fidelity.json")
    client.log_text(run_id, markdown, "bench/probe_fidelity.md")
    metrics = {}
    for label, row in report["rows"].items():
        key = label.replace(" + other (", "_other_").replace(")", "").replace(" ", "_")
        metrics[f"fidelity/{key}/in_genre_tv"] = row["in_genre"]["tv"]["mean"]
        metrics[f"fidelity/{key}/out_of_genre_tv"] = row["out_of_genre"]["tv"]["mean"]
        metrics[f"fidelity/{key}/out_of_genre_prior_tv"] = row["out_of_genre"]["tv_prior"]["mean"]
        metrics[f"fidelity/{key}/held_out_accuracy"] = row["held_out_accuracy"]
    log_metrics(run_id, metrics, step=0)
