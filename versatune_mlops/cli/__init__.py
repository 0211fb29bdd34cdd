"""`versatune` command line: probe, train, register, main, tune and the benchmarks.

Errors caused by input (bad config, data, model path) print one clear message and exit with 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from ..integrations.mlflow import run_context
from ..config import METHODS, MODES, available_presets, load_config
from ..errors import VersaTuneError

log = logging.getLogger("versatune_mlops")


def _optional_int(text: str) -> Optional[int]:
    """An integer option that MLproject may pass as "" (unset) or "40.0"."""
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
    return int(value)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help=f"experiment preset in projects/ ({', '.join(available_presets())})")
    parser.add_argument("--config", help="YAML config file (applied after the preset)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.learning_rate=2e-5 (repeatable)")
    parser.add_argument("--seed", type=_optional_int, help="training and probe seed")
    parser.add_argument("--output-dir", required=True, help="folder for results (created; a run-id subfolder when tracking)")
    _tracking_args(parser)


def _tracking_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-tracking", dest="tracking", action="store_false",
                        help="do not log to MLflow (plain local run)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///$PWD/mlflow.db)")
    parser.add_argument("--experiment", help="MLflow experiment name (default: the current one)")
    parser.add_argument("--run-name", help="MLflow run name")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="versatune", description="VersaTune multi-domain SFT.")
    sub = parser.add_subparsers(dest="command", required=True)

    probe = sub.add_parser("probe", help="detect the base model's knowledge distribution over domains")
    _common(probe)
    probe.add_argument("--num-samples", type=_optional_int, help="number of free generations (probe.num_samples)")

    train = sub.add_parser("train", help="multi-domain SFT with VersaTune or a baseline mixture")
    _common(train)
    train.add_argument("--method", choices=METHODS, help="mixture method (default versatune)")
    train.add_argument("--mode", choices=MODES, help="fostering (all domains) or expansion (grow --target)")
    train.add_argument("--target", help="target domain in expansion mode")
    train.add_argument("--max-steps", type=_optional_int, help="optimizer steps (default: the preset's)")
    train.add_argument("--prior-file", help="distribution.json from `versatune probe`, a path or a runs:/ URI (skips the probe)")
    train.add_argument("--resume", help="checkpoint folder, or an output folder to resume from its newest checkpoint")
    train.add_argument("--num-workers", type=_optional_int,
                       help="Ray Train workers (0: single process, no Ray); distributed.num_workers")
    train.add_argument("--ray-address", help="Ray cluster address (default: start a local Ray)")
    train.add_argument("--storage-path", help="Ray checkpoint storage (shared on a cluster)")
    train.add_argument("--max-failures", type=_optional_int, help="restarts of a failed worker group")
    train.add_argument("--use-gpu", action=argparse.BooleanOptionalAction, default=None,
                       help="one GPU per worker (default: when the cluster has GPUs)")

    register = sub.add_parser("register", help="register the best finished run's model and point an alias at it")
    register.add_argument("--model-name", required=True, help="registered model name")
    register.add_argument("--alias", default="champion", help="alias to set on the chosen version")
    register.add_argument("--metric", default="score/multi_domain",
                          help="objective (eval_loss/* is minimised, everything else maximised)")
    register.add_argument("--parent-run-id", help="choose among the children of this run")
    register.add_argument("--run-ids", help="choose among these comma-separated runs")
    _tracking_args(register)

    main = sub.add_parser("main", help="probe -> train -> register as MLflow child runs (reuses finished steps)")
    main.add_argument("--preset", default="smollm2")
    main.add_argument("--config", default="", help="YAML config file applied after the preset")
    main.add_argument("--method", default="versatune", choices=METHODS)
    main.add_argument("--mode", default="fostering", choices=MODES)
    main.add_argument("--target", default="")
    main.add_argument("--max-steps", default="", type=lambda t: "" if _optional_int(t) is None else str(_optional_int(t)),
                      help="optimizer steps (default: the preset's)")
    main.add_argument("--seed", default="0", type=lambda t: str(_optional_int(t) or 0))
    main.add_argument("--model-name", default="", help="registered model name (default versatune-<preset>)")
    main.add_argument("--alias", default="champion")
    main.add_argument("--metric", default="score/multi_domain")
    main.add_argument("--use-tune", default="false", choices=("true", "false"),
                      help="sweep the coefficients with Ray Tune instead of one training run")
    main.add_argument("--num-trials", default="4", help="trials of the sweep (with --use-tune true)")
    _tracking_args(main)

    tune = sub.add_parser("tune", help="Ray Tune sweep over the re-weighting coefficients; registers the best model")
    tune.add_argument("--preset", help=f"experiment preset ({', '.join(available_presets())})")
    tune.add_argument("--config", help="YAML config file (applied after the preset)")
    tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. tune.alpha=[0,1]")
    tune.add_argument("--searcher", choices=("random", "grid", "optuna"), help="tune.searcher")
    tune.add_argument("--num-trials", type=_optional_int, help="trials for random/optuna (tune.num_samples)")
    tune.add_argument("--objective", help="tune.objective")
    tune.add_argument("--max-steps", type=_optional_int, help="steps per trial")
    tune.add_argument("--prior-file", help="distribution.json of a probe (path or runs:/ URI); default: each trial probes")
    tune.add_argument("--model-name", default="", help="register the best trial's model (default versatune-<preset>)")
    tune.add_argument("--alias", default="champion")
    tune.add_argument("--output-dir", default="outputs/tune")
    _tracking_args(tune)

    methods = sub.add_parser("bench", help="every mixing method at the same budget over seeds: fostering and expansion tables")
    methods.add_argument("--preset", help=f"experiment preset ({', '.join(available_presets())})")
    methods.add_argument("--config", help="YAML config file (applied after the preset)")
    methods.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.max_steps=60")
    methods.add_argument("--max-steps", type=_optional_int, help="training steps of every run (the shared budget)")
    methods.add_argument("--seeds", default="", help="comma-separated seeds (default 0,1,2; --quick: 0)")
    methods.add_argument("--methods", default="", help="fostering methods, comma-separated (default: all); 'none' skips")
    methods.add_argument("--expansion-methods", default="", help="expansion methods, comma-separated (default: all)")
    methods.add_argument("--targets", default="", help="expansion targets, comma-separated, 'all' or 'none' "
                         "(default: all domains; --quick: the first)")
    methods.add_argument("--variant", action="append", default=[], metavar="LABEL:KEY=VALUE[,KEY=VALUE...]",
                         help="an extra fostering row with its own method.* settings (an ablation), e.g. "
                         "--variant versatune_paper:method=versatune,beta=0 (keys without a section are method.*)")
    methods.add_argument("--quick", nargs="?", const="true", default="false", choices=("true", "false"),
                         help="smoke run: one seed, one target, at most 8 steps, 8 eval items per domain, no accuracy")
    methods.add_argument("--report-only", action="store_true",
                         help="train nothing: tables from the runs already finished in --output-dir")
    methods.add_argument("--output-dir", default="outputs/bench",
                         help="results; rerunning with the same folder reuses finished runs (resume)")
    _tracking_args(methods)

    bench = sub.add_parser("bench-loop", help="tokens/s of the training loop vs a bare torch loop, side by side")
    bench.add_argument("--preset", default="tiny")
    bench.add_argument("--config")
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    bench.add_argument("--steps", type=int, default=30, help="measured steps per loop")
    bench.add_argument("--repeats", type=int, default=3, help="alternating repeats of each loop")
    bench.add_argument("-v", "--verbose", action="store_true")
    bench_ray = sub.add_parser("bench-ray", help="training tokens/s: single process vs Ray Train with 1 and 2 workers")
    bench_ray.add_argument("--preset", default="tiny")
    bench_ray.add_argument("--config")
    bench_ray.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    bench_ray.add_argument("--steps", type=int, default=30)
    bench_ray.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    bench_ray.add_argument("-v", "--verbose", action="store_true")
    bench_tune = sub.add_parser("bench-tune", help="Tune efficiency: ASHA + Optuna vs a full grid, compute to reach "
                                                   "the grid's best")
    bench_tune.add_argument("--preset", default="tiny")
    bench_tune.add_argument("--config")
    bench_tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="override the benchmark's space, e.g. tune.grid_points=2")
    bench_tune.add_argument("--trials", type=int, help="ASHA + Optuna trials (default: as many as the grid has)")
    bench_tune.add_argument("--tolerance", type=float, default=0.01, help="relative distance to the grid's best")
    bench_tune.add_argument("-v", "--verbose", action="store_true")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for item in args.set:
        if "=" not in item:
            raise VersaTuneError(f"--set {item!r} must look like KEY=VALUE, e.g. --set train.max_steps=40.")
        key, value = item.split("=", 1)
        overrides[key.strip()] = yaml.safe_load(value)
    mapping = {
        "seed": ["train.seed", "probe.seed"], "method": ["method.method"], "mode": ["method.mode"],
        "target": ["method.target"], "max_steps": ["train.max_steps"], "num_samples": ["probe.num_samples"],
        "num_trials": ["tune.num_samples"],
        "num_workers": ["distributed.num_workers"], "ray_address": ["distributed.address"],
        "storage_path": ["distributed.storage_path"], "max_failures": ["distributed.max_failures"],
        "use_gpu": ["distributed.use_gpu"], "searcher": ["tune.searcher"], "objective": ["tune.objective"],
    }
    for attribute, keys in mapping.items():
        value = getattr(args, attribute, None)
        if value is not None and value != "":  # MLproject passes "" for "not set"
            overrides.update({key: value for key in keys})
    return overrides


def _prior_from_file(path: str) -> dict[str, float]:
    """Read a probe's distribution.json from a local path or an MLflow artifact URI (runs:/...)."""
    if "://" in path or path.startswith("runs:/"):
        import mlflow

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


@contextlib.contextmanager
def _maybe_tracked(args, tags: dict[str, str], default_name: str):
    """A tracked MLflow run (yields its id) unless --no-tracking (yields None)."""
    if not args.tracking:
        yield None
        return
    from ..integrations.mlflow.tracking import tracked_run

    with tracked_run(experiment=args.experiment, run_name=args.run_name or default_name, tags=tags) as run_id:
        yield run_id


def _enter_run_context(args, values: dict[str, str]) -> None:
    """Mark this process (and every process it starts) as inside a VersaTune run until the command
    ends, so MLflow's run-context provider tags any run started here (versatune_mlops.plugins.context)."""
    args.exit_stack.enter_context(run_context.active(values))


def _start_tracking(args) -> None:
    if args.tracking:
        from ..integrations.mlflow.tracking import configure_tracking

        configure_tracking(args.tracking_uri)


def cmd_probe(args) -> int:
    from ..training.checkpointing import write_json_atomic
    from ..training.setup import prepare_inputs
    from ..mixing.probe import run_probe

    config = load_config(args.preset, args.config or None, _overrides(args))
    _enter_run_context(args, run_context.describe(config))
    _start_tracking(args)
    tags = {"versatune.step": "probe", "versatune.preset": config.preset or "custom", "versatune.model": config.model.name}
    with _maybe_tracked(args, tags, "probe") as run_id:
        inputs = prepare_inputs(config)
        result = run_probe(inputs.loaded.model, inputs.loaded.tokenizer, inputs.data, config.probe)
        out = Path(args.output_dir) / (run_id or "")
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "distribution.json", result.to_json())
        if run_id:
            from ..integrations.mlflow.tracking import log_params, log_probe_result

            log_params(run_id, {k: v for k, v in config.flat().items() if k.startswith(("probe.", "model.", "data."))})
            log_probe_result(run_id, result.to_json())
    print(f"Estimator held-out accuracy: {result.estimator_accuracy:.3f}")
    print("Knowledge distribution (from", result.num_samples, "generations):")
    for domain, p in result.distribution.items():
        print(f"  {domain:<12} {p:6.3f}")
    print(f"Wrote {out / 'distribution.json'}" + (f"; MLflow run {run_id}" if run_id else ""))
    return 0


def cmd_train(args) -> int:
    config = _config_and_tracking(args)
    from ..integrations.mlflow.tracking import run_tags

    if config.distributed.num_workers:
        from ..integrations.ray.distributed import check_resources

        check_resources(config)  # before any run exists or Ray starts
    with _maybe_tracked(args, run_tags(config) | {"versatune.step": "train"}, f"train-{config.method.method}") as run_id:
        out = Path(args.output_dir) / (run_id or "")
        if config.distributed.num_workers:
            summary = _train_on_ray(config, out, run_id, args.resume)
        else:
            summary = _train_here(config, out, run_id, args.resume)
    print(f"{'domain':<12} {'loss before':>12} {'loss after':>11} {'weight 0':>9} {'final w':>8}")
    for d in summary["domains"]:
        print(f"{d:<12} {summary['eval_loss_before'][d]:>12.4f} {summary['eval_loss_after'][d]:>11.4f} "
              f"{summary['initial_weights'][d]:>9.3f} {summary['final_weights'][d]:>8.3f}")
    after = summary["metrics_after"]
    print(f"mean loss {after['eval_loss/mean']:.4f}, worst {after['eval_loss/worst']:.4f}, "
          f"multi-domain score {after['score/multi_domain']:.4f}")
    print(f"{summary['tokens_trained']} tokens in {summary['wall_seconds']:.1f} s; wrote {out / 'summary.json'}"
          + (f"; MLflow run {run_id}" if run_id else ""))
    return 0


def _config_and_tracking(args):
    """Validate the config before any run exists, set up tracking, then add the prior from
    --prior-file (which may be a runs:/ URI, so it needs the tracking URI)."""
    overrides = _overrides(args)
    config = load_config(args.preset, args.config or None, overrides)
    _enter_run_context(args, run_context.describe(config))
    _start_tracking(args)
    if args.prior_file:  # "" from MLproject means "run the probe"
        overrides["method.prior"] = _prior_from_file(args.prior_file)
        config = load_config(args.preset, args.config or None, overrides)
    return config


def _train_here(config, out: Path, run_id: Optional[str], resume: Optional[str]) -> dict:
    """The single-process loop in this process."""
    from ..training.loop import train
    from ..training.setup import prepare_inputs

    inputs = prepare_inputs(config)
    hooks = []
    if run_id:
        from ..integrations.mlflow.tracking import MlflowTrackingHooks, log_dataset_inputs

        log_dataset_inputs(inputs.data, config.data.source)
        hooks.append(MlflowTrackingHooks(run_id))
    try:
        return train(config, out, hooks=hooks, resume_from=resume, inputs=inputs)
    except KeyboardInterrupt:
        if run_id:
            _log_last_checkpoint(run_id, out)
        raise


def _train_on_ray(config, out: Path, run_id: Optional[str], resume: Optional[str]) -> dict:
    """Ray Train workers; the main worker logs to this run by its id."""
    from ..integrations.ray.distributed import train_distributed

    if run_id:
        import mlflow

        from ..data.sources import load_domain_data
        from ..integrations.mlflow.tracking import log_dataset_inputs

        log_dataset_inputs(load_domain_data(config.data), config.data.source)
    try:
        return train_distributed(config, out, run_id=run_id, tracking_uri=mlflow.get_tracking_uri() if run_id else None,
                                 resume_from=resume)
    except KeyboardInterrupt:
        if run_id:
            _log_last_checkpoint(run_id, out)
        raise


def _log_last_checkpoint(run_id: str, output_dir: Path) -> None:
    from mlflow.tracking import MlflowClient

    from ..training.checkpointing import latest

    checkpoint = latest(output_dir)
    if checkpoint is not None:
        MlflowClient().log_artifacts(run_id, str(checkpoint), artifact_path=f"checkpoints/{checkpoint.name}")
        log.warning("Interrupted: logged checkpoint %s to run %s", checkpoint.name, run_id)


def cmd_register(args) -> int:
    from ..integrations.mlflow.tracking import configure_tracking, experiment_id_for, tracked_run
    from ..integrations.mlflow.registry import register_best

    configure_tracking(args.tracking_uri)
    with tracked_run(experiment=args.experiment, run_name=args.run_name or "register",
                     tags={"versatune.step": "register"}, system_metrics=False) as run_id:
        import mlflow

        experiment_ids = [] if (args.parent_run_id or args.run_ids) else [
            mlflow.get_run(run_id).info.experiment_id if args.experiment is None else experiment_id_for(args.experiment)]
        run_ids = [r for r in (args.run_ids or "").split(",") if r]
        registration = register_best(args.model_name, metric=args.metric, alias=args.alias,
                                     experiment_ids=experiment_ids, parent_run_id=args.parent_run_id, run_ids=run_ids)
        mlflow.set_tags({"versatune.registered_model": registration.model_name,
                         "versatune.registered_version": registration.version,
                         "versatune.registered_run": registration.run_id, "versatune.alias": registration.alias})
    print(f"{'Registered' if registration.created else 'Already registered'}: {registration.model_name} "
          f"version {registration.version} (run {registration.run_id}, {registration.metric}={registration.value:.5g}); "
          f"alias @{registration.alias} -> models:/{registration.model_name}@{registration.alias}")
    return 0


def cmd_main(args) -> int:
    from ..integrations.mlflow.tracking import configure_tracking, tracked_run
    from ..integrations.mlflow.workflow import run_main

    config = load_config(args.preset, args.config or None, {})  # a missing preset fails before anything starts
    _enter_run_context(args, run_context.describe(config) | {"method": args.method, "mode": args.mode})
    uri = configure_tracking(args.tracking_uri)
    model_name = args.model_name or f"versatune-{args.preset}"
    with tracked_run(experiment=args.experiment, run_name=args.run_name or f"main-{args.preset}",
                     tags={"versatune.step": "main", "versatune.preset": args.preset}, system_metrics=False) as run_id:
        result = run_main(preset=args.preset, method=args.method, mode=args.mode, target=args.target,
                          max_steps=args.max_steps, seed=args.seed, config=args.config, model_name=model_name,
                          alias=args.alias, metric=args.metric, parent_run_id=run_id,
                          use_tune=args.use_tune == "true", num_trials=args.num_trials)
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    train_run = client.get_run(result.train_run_id)
    version = client.get_model_version_by_alias(model_name, args.alias)
    print(f"Experiment : {client.get_experiment(result.experiment_id).name} (id {result.experiment_id})")
    print(f"Best run   : {result.train_run_id} ({train_run.info.run_name}), "
          f"{args.metric} = {train_run.data.metrics.get(args.metric, float('nan')):.5g}")
    print(f"Registered : {model_name} version {version.version}, alias @{args.alias} "
          f"(load with mlflow.pyfunc.load_model('models:/{model_name}@{args.alias}'))")
    if uri.startswith(("http://", "https://")):
        print(f"Open the UI: {uri}/#/experiments/{result.experiment_id}")
    else:
        print(f"Open the UI: mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000")
    return 0


def cmd_tune(args) -> int:
    import mlflow

    from ..integrations.mlflow.registry import register_best
    from ..integrations.mlflow.tracking import configure_tracking, tracked_run
    from ..integrations.ray.tuning import log_sweep, run_sweep

    config = _config_and_tracking(args)  # bad ranges fail before Ray starts
    uri = configure_tracking(args.tracking_uri)
    model_name = args.model_name or f"versatune-{config.preset or 'custom'}"
    tags = {"versatune.step": "tune", "versatune.preset": config.preset or "custom", "versatune.searcher": config.tune.searcher}
    with tracked_run(experiment=args.experiment, run_name=args.run_name or f"tune-{config.tune.searcher}", tags=tags) as run_id:
        from ..integrations.mlflow.tracking import log_params

        log_params(run_id, {k: v for k, v in config.flat().items() if k.startswith(("tune.", "train.", "model.name"))})
        result = run_sweep(config, parent_run_id=run_id, experiment_id=mlflow.get_run(run_id).info.experiment_id,
                           tracking_uri=uri, output_dir=Path(args.output_dir) / run_id)
        log_sweep(result, run_id)
        if result.best is None:
            raise VersaTuneError("No trial finished, so there is nothing to register. See the trials' errors in "
                                 "trials.json on the sweep run and fix their cause.")
        registration = register_best(model_name, metric=result.objective, alias=args.alias, run_ids=[result.best.run_id]) \
            if config.tune.log_models else None
    print(f"{'alpha':>6} {'beta':>6} {'eta':>6} {'eps':>6} {'K':>4} {result.objective:>20} status")
    for t in result.trials:
        value = f"{t.objective:.5g}" if t.objective is not None else "-"
        print(f"{t.params['alpha']:>6.3f} {t.params['beta']:>6.3f} {t.params['eta']:>6.3f} {t.params['epsilon']:>6.3f} "
              f"{int(t.params['interval']):>4} {value:>20} {t.status}")
    for t in result.trials:
        if t.error:
            print(f"Trial {t.run_id} failed: {t.error.splitlines()[0]}")
    print(f"Best: {result.best.params} -> {result.objective} = {result.best.objective:.5g} (run {result.best.run_id})")
    if registration:
        print(f"Registered {registration.model_name} version {registration.version} @{registration.alias}")
    return 0


def cmd_bench_loop(args) -> int:
    from ..bench.loop_speed import run_loop_benchmark

    config = load_config(args.preset, args.config, _overrides(args))
    result = run_loop_benchmark(config, steps=args.steps, repeats=args.repeats)
    print(f"model {result['model']}, batch {result['batch_size']}, bf16={result['bf16']}, "
          f"{result['steps']} steps x {result['repeats']} repeats, threads {result['threads']}")
    print(f"bare torch loop   : {result['bare_tokens_per_s']:9.1f} tokens/s (median)")
    print(f"versatune loop    : {result['loop_tokens_per_s']:9.1f} tokens/s (median)")
    print(f"ratio loop / bare : {result['ratio']:.3f}  (target >= 0.95)")
    return 0


def _tag_inherited_run(message: str) -> None:
    """Under `mlflow run`, record an error raised before our own run handling on the run it created
    (mlflow run marks that run FAILED when we exit non-zero)."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    try:
        from mlflow.tracking import MlflowClient

        MlflowClient().set_tag(run_id, "versatune.error", message[:5000])
    except Exception:  # noqa: BLE001 - best effort; the message is already on stderr
        pass


def cmd_bench_ray(args) -> int:
    from ..bench.loop_speed import run_ray_benchmark

    config = load_config(args.preset, args.config, _overrides(args))
    workers = tuple(int(w) for w in args.workers.split(","))
    results = run_ray_benchmark(config, steps=args.steps, worker_counts=workers)
    print(f"{'variant':<22} {'tokens/s':>10} {'vs single':>10} {'wall s':>8}  (same global batch {config.train.batch_size})")
    for name, row in results.items():
        print(f"{name:<22} {row['tokens_per_s']:>10.1f} {row['ratio']:>10.3f} {row['wall_s']:>8.1f}")
    return 0


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def cmd_bench(args) -> int:
    from ..bench.methods import EXPANSION_METHODS, FOSTERING_METHODS, BenchPlan, run_benchmark
    from ..bench.tables import render_markdown
    from ..data.sources import load_domain_data

    args.quick = args.quick == "true"
    overrides = _overrides(args)
    if args.quick:  # caps the preset's budget; explicit --set/--max-steps still win
        preset = load_config(args.preset, args.config or None, overrides)
        # Sized so the 10 runs of SmolLM2 fit in about 15 minutes on 2 CPU cores.
        quick = {"train.max_steps": min(preset.train.max_steps, 8), "method.interval": min(preset.method.interval or 3, 3),
                 "data.max_eval_per_domain": min(preset.data.max_eval_per_domain or 8, 8), "train.eval_accuracy": False,
                 "probe.num_samples": min(preset.probe.num_samples, 32)}
        overrides = {**quick, **overrides}
    config = load_config(args.preset, args.config or None, overrides)
    domains = config.data.domains or load_domain_data(config.data).domains
    try:
        seeds = [int(s) for s in _csv(args.seeds)] or ([0] if args.quick else [0, 1, 2])
    except ValueError:
        raise VersaTuneError(f"--seeds {args.seeds!r} must be comma-separated integers, e.g. --seeds 0,1,2.") from None
    fostering = [] if args.methods == "none" else (_csv(args.methods) or list(FOSTERING_METHODS))
    targets = [] if args.targets == "none" else (
        list(domains) if args.targets in ("", "all") and not args.quick else (_csv(args.targets) or [domains[0]]))
    plan = BenchPlan(seeds=seeds, fostering_methods=fostering, targets=targets,
                     expansion_methods=_csv(args.expansion_methods) or list(EXPANSION_METHODS),
                     variants=[_parse_variant(text) for text in args.variant])
    from ..bench.methods import check_plan

    check_plan(plan, domains)  # before any run exists
    _start_tracking(args)
    tags = {"versatune.step": "bench", "versatune.preset": config.preset or "custom"}
    with _maybe_tracked(args, tags, "bench" + ("-quick" if args.quick else "")) as run_id:
        context = {}
        if run_id is not None:
            import mlflow

            from ..integrations.mlflow.tracking import bench_run_context, log_params

            log_params(run_id, {"bench.seeds": seeds, "bench.methods": fostering, "bench.targets": targets,
                                "bench.expansion_methods": plan.expansion_methods, "bench.quick": args.quick,
                                "bench.variants": {v.label: v.overrides for v in plan.variants},
                                **config.flat()})
            context["run_context"] = bench_run_context(run_id, mlflow.get_run(run_id).info.experiment_id)
        report = run_benchmark(config, plan, args.output_dir, report_only=args.report_only, **context)
        markdown = render_markdown(report)
        if run_id is not None:
            from ..integrations.mlflow.tracking import log_bench_report

            log_bench_report(run_id, report, markdown)
    print(markdown)
    if report["missing_runs"]:
        print(f"Not finished yet ({len(report['missing_runs'])}): {', '.join(report['missing_runs'])}")
    print(f"Bench wall time {report['wall_seconds']:.0f} s; tables in {Path(args.output_dir) / 'report.md'}")
    return 0


def _parse_variant(text: str):
    """``LABEL:KEY=VALUE[,KEY=VALUE...]`` -> BenchVariant; values are YAML, bare keys are method.* keys."""
    from ..bench.methods import BenchVariant

    label, sep, body = text.partition(":")
    items = [item for item in re.split(r",(?=\s*[A-Za-z_][\w.]*\s*=)", body) if item.strip()] if sep else []
    if not label.strip() or not items or not all("=" in item for item in items):
        raise VersaTuneError(f"--variant {text!r} must look like LABEL:KEY=VALUE[,KEY=VALUE...], "
                             f"e.g. --variant versatune_paper:method=versatune,beta=0.")
    overrides = {}
    for item in items:
        key, value = (part.strip() for part in item.split("=", 1))
        overrides[key if "." in key else f"method.{key}"] = yaml.safe_load(value)
    return BenchVariant(label=label.strip(), overrides=overrides)


def cmd_bench_tune(args) -> int:
    from ..bench.tune_efficiency import DEFAULT_SPACE, in_run_order, run_tune_benchmark

    config = load_config(args.preset, args.config, {**DEFAULT_SPACE, **_overrides(args)})
    bench = run_tune_benchmark(config, asha_trials=args.trials, tolerance=args.tolerance)
    print(f"Tune efficiency on {config.preset or 'custom'}: {bench.objective} ({bench.mode}), "
          f"{config.train.max_steps} steps per trial, one trial at a time")
    print(f"{'searcher':<12} {'trials':>6} {'finished':>8} {'stopped':>7} {'error':>5} {'steps':>6} {'wall s':>7} "
          f"{'best':>10}")
    for run in (bench.grid, bench.asha):
        best = run.sweep.best
        print(f"{run.name:<12} {len(run.sweep.trials):>6} {run.count('finished'):>8} {run.count('stopped'):>7} "
              f"{run.count('error'):>5} {run.steps:>6} {run.wall_seconds:>7.1f} "
              f"{best.objective if best else float('nan'):>10.6g}")
    print(f"{'trial':<16} {'alpha':>7} {'beta':>7} {'eta':>6} {'eps':>6} {'K':>3} {'steps':>5} {bench.objective:>20} status")
    for run in (bench.grid, bench.asha):
        for number, t in enumerate(in_run_order(run.sweep.trials), 1):
            value = f"{t.objective:.6g}" if t.objective is not None else "-"
            print(f"{run.name + ' ' + str(number):<16} {t.params['alpha']:>7.3f} {t.params['beta']:>7.3f} "
                  f"{t.params['eta']:>6.3f} {t.params['epsilon']:>6.3f} {int(t.params['interval']):>3} "
                  f"{t.steps or 0:>5} {value:>20} {t.status}")
    if bench.grid_best is None:
        print("No grid trial finished, so there is no best objective to reach.")
        return 0
    finished = [t.objective for t in bench.grid.sweep.trials if t.status == "finished"]
    print(f"grid best {bench.grid_best.objective:.6g} at {bench.grid_best.params}; finished grid trials span "
          f"{min(finished):.6g} .. {max(finished):.6g}")
    for tolerance, goal in ((bench.tolerance, f"within {bench.tolerance:.1%} of"), (0.0, "at least as good as")):
        fraction = bench.fraction(tolerance)
        if fraction is None:
            print(f"ASHA + Optuna never finished a trial {goal} the grid's best ({bench.asha.steps} steps in all).")
        else:
            print(f"ASHA + Optuna finished a trial {goal} the grid's best after {bench.steps_to_reach(tolerance)} "
                  f"steps = {fraction:.1%} of the grid's {bench.grid.steps} steps")
    return 0


COMMANDS = {"probe": cmd_probe, "train": cmd_train, "register": cmd_register, "main": cmd_main, "tune": cmd_tune,
            "bench": cmd_bench, "bench-loop": cmd_bench_loop, "bench-ray": cmd_bench_ray, "bench-tune": cmd_bench_tune}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        with contextlib.ExitStack() as args.exit_stack:
            return COMMANDS[args.command](args)
    except VersaTuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        _tag_inherited_run(f"{type(exc).__name__}: {exc}")
        return 2
    except KeyboardInterrupt:
        print("interrupted: the newest checkpoint in the output folder is intact; resume with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
