"""The benchmark commands: bench (methods), bench-loop, bench-ray, bench-tune. They print figures;
the measuring lives in versatune_mlops/bench/. Imports of the benchmark code sit inside each command
for the same reason as in commands.py: `versatune --help` should not load torch."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from ..config import load_config
from ..errors import VersaTuneError
from .commands import start_tracking
from .options import add_config_options, add_tracking_options, add_verbose, config_from_args, csv, optional_int, overrides


def add_parsers(sub) -> None:
    methods = sub.add_parser("bench", help="every mixing method at the same budget over seeds: fostering and expansion tables")
    add_config_options(methods, set_help="override, e.g. train.max_steps=60")
    methods.add_argument("--max-steps", type=optional_int, help="training steps of every run (the shared budget)")
    methods.add_argument("--seeds", default="", help="comma-separated seeds (default 0,1,2; --quick: 0)")
    methods.add_argument("--methods", default="", help="fostering methods, comma-separated (default: all); 'none' skips")
    methods.add_argument("--expansion-methods", default="", help="expansion methods, comma-separated (default: all)")
    methods.add_argument("--targets", default="", help="expansion targets, comma-separated, 'all' or 'none' "
                         "(default: all domains; --quick: the first)")
    methods.add_argument("--variant", action="append", default=[], metavar="LABEL:KEY=VALUE[,KEY=VALUE...]",
                         help="an extra fostering row with its own method.* settings (an ablation), e.g. "
                         "--variant versatune_paper:method=versatune,beta=0 (keys without a section are method.*)")
    methods.add_argument("--expansion-variant", action="append", default=[], metavar="LABEL:KEY=VALUE[,KEY=VALUE...]",
                         help="an extra expansion row for every target, e.g. "
                         "--expansion-variant versatune_share50:method=versatune,target_initial_share=0.5")
    methods.add_argument("--reference-ablations", action="store_true",
                         help="add VersaTune rows with the released_code, curve_fit and specialist references")
    methods.add_argument("--headline", default=None, metavar="ROW",
                         help="the fostering row compared head to head with every other row, paired by seed "
                         "(default: versatune), e.g. a tuned --variant's label")
    methods.add_argument("--static-curves", action="store_true",
                         help="evaluate static mixtures at the re-weighting points too, so every method has a loss "
                         "curve (changes the static runs' configs: a finished folder's static runs train again)")
    methods.add_argument("--quick", nargs="?", const="true", default="false", choices=("true", "false"),
                         help="smoke run: one seed, one target, at most 8 steps, 8 eval items per domain, no accuracy")
    methods.add_argument("--report-only", action="store_true",
                         help="train nothing: tables from the runs already finished in --output-dir")
    methods.add_argument("--output-dir", default="outputs/bench",
                         help="results; rerunning with the same folder reuses finished runs (resume)")
    add_tracking_options(methods)
    methods.set_defaults(handler=cmd_bench)

    loop = sub.add_parser("bench-loop", help="throughput report: the loop before/after, a bare torch loop, memory, "
                                             "MFU against this machine's matmul rate, evaluation speed")
    add_config_options(loop, preset_default="tiny")
    loop.add_argument("--steps", type=int, default=16, help="measured steps per variant (a multiple of "
                      "train.length_group_batches keeps every group whole)")
    loop.add_argument("--repeats", type=int, default=2, help="alternating repeats of each variant")
    loop.add_argument("--compile", action="store_true", help="also measure train.compile=true (torch.compile)")
    add_verbose(loop)
    loop.set_defaults(handler=cmd_bench_loop)

    ray = sub.add_parser("bench-ray", help="training tokens/s: single process vs Ray Train with 1 and 2 workers")
    add_config_options(ray, preset_default="tiny")
    ray.add_argument("--steps", type=int, default=30)
    ray.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ray.add_argument("--strategies", default="ddp,fsdp", help="comma-separated: ddp, fsdp (FSDP rows need 2+ workers)")
    add_verbose(ray)
    ray.set_defaults(handler=cmd_bench_ray)

    fidelity = sub.add_parser("bench-probe", help="probe fidelity: TV between the recovered and a known domain mixture, "
                                                  "in-genre and out-of-genre, per estimator, and each one's prior")
    add_config_options(fidelity)
    fidelity.add_argument("--estimators", default="", help="rows, comma-separated: tfidf_logreg, embedding, llm_judge; "
                          "+mmlu or +FILE adds an 'other' class (default: tfidf_logreg,tfidf_logreg+mmlu,embedding,"
                          "embedding+mmlu,llm_judge)")
    fidelity.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds: one skewed mixture each")
    fidelity.add_argument("--per-class", type=int, default=24, help="prompted texts generated per domain and for 'other'")
    fidelity.add_argument("--mixture-size", type=int, default=120, help="texts per drawn mixture")
    fidelity.add_argument("--bos-samples", type=optional_int, help="BOS generations for the priors (default probe.num_samples)")
    fidelity.add_argument("--output-dir", default="outputs/bench-probe",
                          help="generated texts and finished rows; rerunning with the same folder resumes")
    add_tracking_options(fidelity)
    fidelity.set_defaults(handler=cmd_bench_probe)

    tune = sub.add_parser("bench-tune", help="Tune efficiency: ASHA + Optuna vs a full grid, compute to reach "
                                             "the grid's best")
    add_config_options(tune, preset_default="tiny", set_help="override the benchmark's space, e.g. tune.grid_points=2")
    tune.add_argument("--trials", type=int, help="ASHA + Optuna trials (default: as many as the grid has)")
    tune.add_argument("--tolerance", type=float, default=0.01, help="relative distance to the grid's best")
    add_verbose(tune)
    tune.set_defaults(handler=cmd_bench_tune)


def cmd_bench(args) -> int:
    from ..bench.methods import (EXPANSION_METHODS, FOSTERING_METHODS, REFERENCE_ABLATIONS, BenchPlan, check_plan,
                                 run_benchmark)
    from ..bench.markdown import render_markdown
    from ..data.sources import load_domain_data
    from ..integrations.mlflow.entrypoints import maybe_tracked

    args.quick = args.quick == "true"
    extra = {}
    if args.quick:  # caps the preset's budget; explicit --set/--max-steps still win
        preset = config_from_args(args)
        # Sized so the 10 runs of SmolLM2 fit in about 15 minutes on 2 CPU cores.
        extra = {"train.max_steps": min(preset.train.max_steps, 8), "method.interval": min(preset.method.interval or 3, 3),
                 "data.max_eval_per_domain": min(preset.data.max_eval_per_domain or 8, 8), "train.eval_accuracy": False,
                 "probe.num_samples": min(preset.probe.num_samples, 32)}
    config = load_config(args.preset, args.config or None, {**extra, **overrides(args)})
    domains = config.data.domains or load_domain_data(config.data).domains
    try:
        seeds = [int(s) for s in csv(args.seeds)] or ([0] if args.quick else [0, 1, 2])
    except ValueError:
        raise VersaTuneError(f"--seeds {args.seeds!r} must be comma-separated integers, e.g. --seeds 0,1,2.") from None
    fostering = [] if args.methods == "none" else (csv(args.methods) or list(FOSTERING_METHODS))
    targets = [] if args.targets == "none" else (
        list(domains) if args.targets in ("", "all") and not args.quick else (csv(args.targets) or [domains[0]]))
    plan = BenchPlan(seeds=seeds, fostering_methods=fostering, targets=targets,
                     expansion_methods=csv(args.expansion_methods) or list(EXPANSION_METHODS),
                     variants=[parse_variant(text) for text in args.variant]
                     + (list(REFERENCE_ABLATIONS) if args.reference_ablations else []),
                     expansion_variants=[parse_variant(text, "--expansion-variant") for text in args.expansion_variant],
                     static_curves=args.static_curves, headline=args.headline)
    check_plan(plan, domains)  # before any run exists
    start_tracking(args)
    tags = {"versatune.step": "bench", "versatune.preset": config.preset or "custom"}
    with maybe_tracked(args.tracking, experiment=args.experiment, tags=tags,
                       run_name=args.run_name or "bench" + ("-quick" if args.quick else "")) as run_id:
        context = {}
        if run_id is not None:
            import mlflow

            from ..bench.tracking import bench_run_context, log_bench_params

            log_bench_params(run_id, plan, args.quick, config)
            context["run_context"] = bench_run_context(run_id, mlflow.get_run(run_id).info.experiment_id)
        report = run_benchmark(config, plan, args.output_dir, report_only=args.report_only, **context)
        markdown = render_markdown(report)
        if run_id is not None:
            from ..bench.tracking import log_bench_report

            log_bench_report(run_id, report, markdown)
    print(markdown)
    if report["missing_runs"]:
        print(f"Not finished yet ({len(report['missing_runs'])}): {', '.join(report['missing_runs'])}")
    print(f"Bench wall time {report['wall_seconds']:.0f} s; tables in {Path(args.output_dir) / 'report.md'}")
    return 0


def parse_variant(text: str, flag: str = "--variant"):
    """``LABEL:KEY=VALUE[,KEY=VALUE...]`` -> BenchVariant; values are YAML, bare keys are method.* keys."""
    from ..bench.methods import BenchVariant

    label, sep, body = text.partition(":")
    items = [item for item in re.split(r",(?=\s*[A-Za-z_][\w.]*\s*=)", body) if item.strip()] if sep else []
    if not label.strip() or not items or not all("=" in item for item in items):
        raise VersaTuneError(f"{flag} {text!r} must look like LABEL:KEY=VALUE[,KEY=VALUE...], "
                             f"e.g. {flag} versatune_paper:method=versatune,beta=0.")
    variant_overrides = {}
    for item in items:
        key, value = (part.strip() for part in item.split("=", 1))
        variant_overrides[key if "." in key else f"method.{key}"] = yaml.safe_load(value)
    return BenchVariant(label=label.strip(), overrides=variant_overrides)


def cmd_bench_loop(args) -> int:
    from ..bench.throughput import DEFAULT_VARIANTS, run_throughput_report

    config = config_from_args(args)
    variants = DEFAULT_VARIANTS + (("after + compile",) if args.compile else ())
    report = run_throughput_report(config, steps=args.steps, repeats=args.repeats, variants=variants)
    rows, rates = report["rows"], report["matmul_flops"]
    print(f"model {report['model']} ({'LoRA' if report['lora'] else 'full FT'}, bf16 autocast={report['bf16']}), "
          f"batch {report['batch_size']} x max {report['max_length']}, {report['steps']} steps x {report['repeats']} "
          f"repeats, {report['device']}, {report['threads']} threads")
    print(f"matmul 2048^2: bf16 {rates['bfloat16'] / 1e9:.1f} GFLOP/s, fp32 {rates['float32'] / 1e9:.1f} GFLOP/s "
          f"(MFU against {report['peak_dtype']})")
    print(f"{'variant':<22} {'resp tok/s':>10} {'tokens/s':>9} {'padding':>8} {'peak GB':>8} {'MFU':>6} {'eval seq/s':>10}")
    for name, row in rows.items():
        print(f"{name:<22} {row['response_tokens_per_s']:>10.1f} {row['tokens_per_s']:>9.1f} {row['padding']:>8.1%} "
              f"{row['peak_memory_gb']:>8.2f} {row['mfu']:>6.1%} {row['eval_sequences_per_s']:>10.2f}")
    if "before" in rows and "after" in rows:
        before, after = rows["before"], rows["after"]
        print(f"after / before    : {after['tokens_per_s'] / before['tokens_per_s']:.2f}x non-padding tokens/s, "
              f"{after['response_tokens_per_s'] / before['response_tokens_per_s']:.2f}x response tokens/s, "
              f"{after['eval_sequences_per_s'] / before['eval_sequences_per_s']:.2f}x eval sequences/s (targets 1.5x, 2x)")
    if "bare torch" in rows and "after" in rows:
        print(f"bare torch loop   : {rows['bare torch']['tokens_per_s']:9.1f} tokens/s (median)")
        print(f"versatune loop    : {rows['after']['tokens_per_s']:9.1f} tokens/s (median)")
        print(f"ratio loop / bare : {rows['after']['tokens_per_s'] / rows['bare torch']['tokens_per_s']:.3f}  (target >= 0.95)")
    print(report["flop_formula"])
    return 0


def cmd_bench_ray(args) -> int:
    from ..bench.loop_speed import run_ray_benchmark

    config = config_from_args(args)
    workers = tuple(int(w) for w in args.workers.split(","))
    strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
    unknown = sorted(set(strategies) - {"ddp", "fsdp"})
    if unknown:
        raise VersaTuneError(f"--strategies {args.strategies!r}: unknown {', '.join(unknown)}; use ddp and/or fsdp.")
    results = run_ray_benchmark(config, steps=args.steps, worker_counts=workers, strategies=strategies)
    print(f"{'variant':<22} {'tokens/s':>10} {'vs single':>10} {'wall s':>8} {'start-up s':>10} "
          f"{'peak RSS GB per worker':>24} {'params+optimizer GB per worker':>31}  (same global batch {config.train.batch_size})")
    for name, row in results.items():
        rss = " / ".join(f"{gb:.2f}" for gb in row["peak_rss_gb"])
        state = " / ".join(f"{gb:.3f}" for gb in row["state_gb"])
        print(f"{name:<22} {row['tokens_per_s']:>10.1f} {row['ratio']:>10.3f} {row['wall_s']:>8.1f} "
              f"{row['startup_s']:>10.1f} {rss:>24} {state:>31}")
    return 0


def cmd_bench_tune(args) -> int:
    from ..bench.tune_efficiency import DEFAULT_SPACE, in_run_order, run_tune_benchmark

    config = load_config(args.preset, args.config, {**DEFAULT_SPACE, **overrides(args)})
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


def cmd_bench_probe(args) -> int:
    from ..bench.probe_fidelity import DEFAULT_ROWS, parse_rows, render_fidelity_markdown, run_probe_fidelity
    from ..integrations.mlflow.entrypoints import maybe_tracked

    config = config_from_args(args)
    try:
        seeds = [int(s) for s in csv(args.seeds)]
    except ValueError:
        raise VersaTuneError(f"--seeds {args.seeds!r} must be comma-separated integers, e.g. --seeds 0,1,2.") from None
    for name, value in (("--per-class", args.per_class), ("--mixture-size", args.mixture_size),
                        ("--bos-samples", args.bos_samples or 1)):
        if value < 1:
            raise VersaTuneError(f"{name} {value} must be >= 1.")
    rows = parse_rows(args.estimators or DEFAULT_ROWS)
    start_tracking(args)
    tags = {"versatune.step": "bench-probe", "versatune.preset": config.preset or "custom"}
    with maybe_tracked(args.tracking, experiment=args.experiment, tags=tags, run_name=args.run_name or "bench-probe") as run_id:
        report = run_probe_fidelity(config, rows, seeds, args.output_dir, per_class=args.per_class,
                                    mixture_size=args.mixture_size, bos_samples=args.bos_samples)
        markdown = render_fidelity_markdown(report)
        if run_id is not None:
            from ..bench.tracking import log_fidelity_report

            log_fidelity_report(run_id, report, markdown, config)
    print(markdown)
    return 0
