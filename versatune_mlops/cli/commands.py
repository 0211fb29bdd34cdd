"""The product commands: probe, train, register, main, tune. Each parses, validates the config
before anything starts, hands the work to the MLflow glue (integrations/mlflow/entrypoints.py) and
prints the result.

The glue is imported inside each command, not at the top: it loads torch, transformers and MLflow
(seconds), and `versatune --help` or a config error should not wait for them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ..config import METHODS, RunConfig
from ..mixing.strategies import MODES
from ..integrations.mlflow import run_context
from .options import add_config_options, add_tracking_options, config_from_args, optional_int

# Set by `versatune main` for its steps: see cli/main.py.
QUIET_ENV = "VERSATUNE_QUIET"


def add_parsers(sub) -> None:
    probe = sub.add_parser("probe", help="detect the base model's knowledge distribution over domains")
    _run_options(probe)
    probe.add_argument("--num-samples", type=optional_int, help="number of free generations (probe.num_samples)")
    probe.set_defaults(handler=cmd_probe)

    train = sub.add_parser("train", help="multi-domain SFT with VersaTune or a baseline mixture")
    _run_options(train)
    train.add_argument("--method", choices=METHODS, help="mixture method (default versatune)")
    train.add_argument("--mode", choices=MODES, help="fostering (all domains) or expansion (grow --target)")
    train.add_argument("--target", help="target domain in expansion mode")
    train.add_argument("--max-steps", type=optional_int, help="optimizer steps (default: the preset's)")
    train.add_argument("--prior-file", help="distribution.json from `versatune probe`, a path or a runs:/ URI (skips the probe)")
    train.add_argument("--resume", help="checkpoint folder, or an output folder to resume from its newest checkpoint")
    train.add_argument("--num-workers", type=optional_int,
                       help="Ray Train workers (0: single process, no Ray); distributed.num_workers")
    train.add_argument("--ray-address", help="Ray cluster address (default: start a local Ray)")
    train.add_argument("--storage-path", help="Ray checkpoint storage (shared on a cluster)")
    train.add_argument("--max-failures", type=optional_int, help="restarts of a failed worker group")
    train.add_argument("--use-gpu", action=argparse.BooleanOptionalAction, default=None,
                       help="one GPU per worker (default: when the cluster has GPUs)")
    train.set_defaults(handler=cmd_train)

    register = sub.add_parser("register", help="register the best finished run's model and point an alias at it")
    register.add_argument("--model-name", required=True, help="registered model name")
    register.add_argument("--alias", default="champion", help="alias to set on the chosen version")
    register.add_argument("--metric", default="score/multi_domain",
                          help="objective (eval_loss/* is minimised, everything else maximised)")
    register.add_argument("--parent-run-id", help="choose among the children of this run")
    register.add_argument("--run-ids", help="choose among these comma-separated runs")
    add_tracking_options(register)
    register.set_defaults(handler=cmd_register)

    main = sub.add_parser("main", help="probe -> train -> register as MLflow child runs (reuses finished steps)")
    main.add_argument("--preset", default="smollm2")
    main.add_argument("--config", default="", help="YAML config file applied after the preset")
    main.add_argument("--method", default="versatune", choices=METHODS)
    main.add_argument("--mode", default="fostering", choices=MODES)
    main.add_argument("--target", default="")
    main.add_argument("--max-steps", default="", type=lambda t: "" if optional_int(t) is None else str(optional_int(t)),
                      help="optimizer steps (default: the preset's)")
    main.add_argument("--seed", default="0", type=lambda t: str(optional_int(t) or 0))
    main.add_argument("--model-name", default="", help="registered model name (default versatune-<preset>)")
    main.add_argument("--alias", default="champion")
    main.add_argument("--metric", default="score/multi_domain")
    main.add_argument("--use-tune", default="false", choices=("true", "false"),
                      help="sweep the coefficients with Ray Tune instead of one training run")
    main.add_argument("--num-trials", default="4", help="trials of the sweep (with --use-tune true)")
    add_tracking_options(main)
    main.set_defaults(handler=cmd_main)

    tune = sub.add_parser("tune", help="Ray Tune sweep over the re-weighting coefficients; registers the best model")
    add_config_options(tune, set_help="override, e.g. tune.alpha=[0,1]")
    tune.add_argument("--searcher", choices=("random", "grid", "optuna"), help="tune.searcher")
    tune.add_argument("--num-trials", type=optional_int, help="trials for random/optuna (tune.num_samples)")
    tune.add_argument("--objective", help="tune.objective")
    tune.add_argument("--max-steps", type=optional_int, help="steps per trial")
    tune.add_argument("--prior-file", help="distribution.json of a probe (path or runs:/ URI); default: each trial probes")
    tune.add_argument("--model-name", default="", help="register the best trial's model (default versatune-<preset>)")
    tune.add_argument("--alias", default="champion")
    tune.add_argument("--output-dir", default="outputs/tune")
    tune.add_argument("--resume-from", metavar="RECORD",
                      help="continue an earlier sweep: its sweep_record.jsonl (or the folder holding it); its finished "
                           "and early-stopped trials count towards --num-trials and inform optuna, a finished "
                           "baseline is reused, runs the killed sweep left RUNNING are ended")
    add_tracking_options(tune)
    tune.set_defaults(handler=cmd_tune)


def _run_options(parser: argparse.ArgumentParser) -> None:
    add_config_options(parser)
    parser.add_argument("--seed", type=optional_int, help="training and probe seed")
    parser.add_argument("--output-dir", required=True, help="folder for results (created; a run-id subfolder when tracking)")
    add_tracking_options(parser)


def enter_run_context(args, values: dict[str, str]) -> None:
    """Mark this process (and every process it starts) as inside a VersaTune run until the command
    ends, so MLflow's run-context provider tags any run started here (integrations/mlflow/plugins/context)."""
    args.exit_stack.enter_context(run_context.active(values))


def start_tracking(args) -> None:
    if args.tracking:
        from ..integrations.mlflow.tracking import configure_tracking

        configure_tracking(args.tracking_uri)


def config_and_tracking(args) -> RunConfig:
    """Validate the config before any run exists, set up tracking, then add the prior from
    --prior-file (which may be a runs:/ URI, so it needs the tracking URI)."""
    config = config_from_args(args)
    enter_run_context(args, run_context.describe(config))
    start_tracking(args)
    if args.prior_file:  # "" from MLproject means "run the probe"
        from ..integrations.mlflow.entrypoints import prior_from_file

        config = config_from_args(args, {"method.prior": prior_from_file(args.prior_file)})
    return config


def cmd_probe(args) -> int:
    from ..integrations.mlflow.entrypoints import maybe_tracked, probe

    config = config_from_args(args)
    enter_run_context(args, run_context.describe(config))
    start_tracking(args)
    tags = {"versatune.step": "probe", "versatune.preset": config.preset or "custom", "versatune.model": config.model.name}
    with maybe_tracked(args.tracking, experiment=args.experiment, run_name=args.run_name or "probe", tags=tags) as run_id:
        result, out = probe(config, args.output_dir, run_id)
    print(f"Estimator held-out accuracy: {result.estimator_accuracy:.3f}")
    print("Knowledge distribution (from", result.num_samples, "generations):")
    for domain, p in result.distribution.items():
        print(f"  {domain:<12} {p:6.3f}")
    print(f"Wrote {out / 'distribution.json'}" + (f"; MLflow run {run_id}" if run_id else ""))
    return 0


def cmd_train(args) -> int:
    config = config_and_tracking(args)
    from ..integrations.mlflow.entrypoints import maybe_tracked, train_here, train_on_ray, train_tags

    if config.distributed.num_workers:
        from ..integrations.ray.distributed import check_resources

        check_resources(config)  # before any run exists or Ray starts
    with maybe_tracked(args.tracking, experiment=args.experiment, run_name=args.run_name or f"train-{config.method.method}",
                       tags=train_tags(config)) as run_id:
        out = Path(args.output_dir) / (run_id or "")
        run = train_on_ray if config.distributed.num_workers else train_here
        summary = run(config, out, run_id, args.resume)
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


def cmd_register(args) -> int:
    from ..integrations.mlflow.entrypoints import register
    from ..integrations.mlflow.tracking import configure_tracking

    configure_tracking(args.tracking_uri)
    registration = register(model_name=args.model_name, metric=args.metric, alias=args.alias,
                            experiment=args.experiment, run_name=args.run_name, parent_run_id=args.parent_run_id,
                            run_ids=[r for r in (args.run_ids or "").split(",") if r])
    print(f"{'Registered' if registration.created else 'Already registered'}: {registration.model_name} "
          f"version {registration.version} (run {registration.run_id}, {registration.metric}={registration.value:.5g}); "
          f"alias @{registration.alias} -> models:/{registration.model_name}@{registration.alias}")
    return 0


def cmd_main(args) -> int:
    from ..config import load_config
    from ..integrations.mlflow.entrypoints import main_workflow

    config = load_config(args.preset, args.config or None, {})  # a missing preset fails before anything starts
    enter_run_context(args, run_context.describe(config) | {"method": args.method, "mode": args.mode})
    model_name = args.model_name or f"versatune-{args.preset}"
    if not args.verbose:
        _quiet_steps()
    report = main_workflow(preset=args.preset, method=args.method, mode=args.mode, target=args.target,
                           max_steps=args.max_steps, seed=args.seed, config=args.config, model_name=model_name,
                           alias=args.alias, metric=args.metric, use_tune=args.use_tune == "true",
                           num_trials=args.num_trials, tracking_uri=args.tracking_uri, experiment=args.experiment,
                           run_name=args.run_name, report=print)
    print()
    print(f"Experiment : {report.experiment_name} (id {report.experiment_id})")
    print(f"Best run   : {report.best_run_id} ({report.best_run_name}), {args.metric} = {report.metric_value:.5g}")
    print(f"Registered : {model_name} version {report.version}, alias @{args.alias} "
          f"(load with mlflow.pyfunc.load_model('models:/{model_name}@{args.alias}'))")
    if report.ui_command:
        print(f"Start the UI: {report.ui_command}   (or `make ui`)")
    print(f"Runs page  : {report.runs_url}")
    print(f"Model page : {report.model_url}")
    return 0


def _quiet_steps() -> None:
    """One line per step instead of each step's own log: the steps inherit this environment.

    MLflow's INFO lines (system-metrics monitor start/stop, "=== Running command ..."), its
    artifact-download progress bar, transformers' bars for loading and saving a checkpoint, and
    MLflow's "View run/experiment at" links (which open the GenAI overview, not the runs) would otherwise
    repeat for every step; a user who sets these variables keeps their own values.
    """
    os.environ.setdefault(QUIET_ENV, "1")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the train step's 1-file prior download
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights", "Writing shards"
    logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"].upper())


def sweep_table(result) -> str:
    """The trials as a table (with the chosen shares when the sweep tunes them, and each trial's gain
    over the baseline run when it has one), the failed trials' errors, the best trial and the verdict."""
    from ..integrations.ray.search_space import SHARE_LABELS

    shares = [key for key in SHARE_LABELS if any(key in t.params for t in result.trials)]
    baseline = result.baseline_method
    header = f"{'alpha':>6} {'beta':>6} {'eta':>6} {'eps':>6} {'K':>4}" + "".join(f" {SHARE_LABELS[k]:>5}" for k in shares)
    header += f" {result.objective:>20}" + (f" {'vs ' + baseline:>14}" if baseline else "") + " status"
    lines = [header]
    for t in result.trials:
        p = t.params
        row = f"{p['alpha']:>6.3f} {p['beta']:>6.3f} {p['eta']:>6.3f} {p['epsilon']:>6.3f} {int(p['interval']):>4}"
        for key in shares:
            row += f" {'none' if p.get(key) is None else format(p[key], '.3f'):>5}"
        row += f" {format(t.objective, '.5g') if t.objective is not None else '-':>20}"
        if baseline:
            row += f" {format(100 * t.gain, '+.2f') + '%' if t.gain is not None else '-':>14}"
        lines.append(f"{row} {t.status}{' (resumed)' if t.resumed else ''}")
    lines += [f"Trial {t.run_id} failed: {t.error.splitlines()[0]}" for t in result.trials if t.error]
    if result.baseline is not None:
        b = result.baseline
        if b.status == "finished" and b.objective is not None:
            lines.append(f"Baseline ({baseline}): {result.objective} = {b.objective:.5g} (run {b.run_id})")
        else:
            reason = b.error.splitlines()[0] if b.error else b.status
            lines.append(f"Baseline ({baseline}) did not finish, so the trials have no gain over it: {reason}")
    if result.best is not None:
        lines.append(f"Best: {result.best.params} -> {result.objective} = {result.best.objective:.5g} "
                     f"(run {result.best.run_id})")
    if result.beaten() is False:
        lines.append(f"Warning: no trial beat the {baseline} baseline (best {100 * result.best.gain:+.2f}%). "
                     f"These coefficients lose to {baseline} mixing at this budget; widen the ranges or train longer.")
    return "\n".join(lines)


def cmd_tune(args) -> int:
    config = config_and_tracking(args)  # bad ranges fail before Ray starts
    from ..integrations.mlflow.entrypoints import sweep
    from ..integrations.ray.sweep_record import check_resumable, read_record
    from ..integrations.ray.tuning import SweepInterrupted

    resume = read_record(args.resume_from) if args.resume_from else None
    if resume is not None:
        check_resumable(resume, config)  # so does a record that does not fit this sweep
    model_name = args.model_name or f"versatune-{config.preset or 'custom'}"
    try:
        result, registration = sweep(config, tracking_uri=args.tracking_uri, experiment=args.experiment,
                                     run_name=args.run_name, output_dir=args.output_dir, model_name=model_name,
                                     alias=args.alias, resume=resume)
    except SweepInterrupted as stop:
        print(sweep_table(stop.result))
        done = sum(t.kept for t in stop.result.trials)
        print(f"Interrupted with {done} of {config.tune.num_samples} trials finished; nothing registered. Run the same "
              f"command with --resume-from {stop.result.record_path} to run the rest.", file=sys.stderr)
        return 130
    print(sweep_table(result))
    print(f"Sweep record: {result.record_path} (continue it with --resume-from and a larger --num-trials)")
    if registration:
        print(f"Registered {registration.model_name} version {registration.version} @{registration.alias}")
    return 0
