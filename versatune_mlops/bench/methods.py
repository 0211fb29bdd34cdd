"""``versatune bench``: every mixing method at the same token budget, over seeds, in one command.

Fostering compares the baselines (uniform, size-proportional, inverse probe, VersaTune-constant, DoReMi,
ODM: every registered fostering method) with VersaTune (dynamic); expansion compares
100%-target SFT, target + uniform non-target and VersaTune expansion for each target domain.

What is shared so that only the mixture differs between runs: the data split, the base model, its
probe distribution (measured once and given to every method as the prior), its held-out evaluation
(measured once), the step count, batch size and learning-rate schedule. Static mixtures skip the
mid-run evaluations a dynamic method needs, so the side-by-side wall times give the overhead of
re-weighting.

Every run writes ``runs/<name>/summary.json``. A rerun with the same output folder reuses each run
whose stored config equals the planned one (a key added since takes its default; a fostering run's
expansion-only keys are not compared), so a multi-hour benchmark can be stopped and resumed, and a new
config knob or default does not throw the finished runs away.
Tracking stays outside: ``run_benchmark`` takes an optional ``run_context`` that wraps each run
(the CLI passes one that opens an MLflow child run and returns its hooks).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import hashlib
import json
import logging
import platform
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Optional, Sequence

from .figures import write_loss_curve_figures
from .markdown import render_markdown
from .tables import (RunRecord, expansion_table, fostering_table, head_to_head, overhead_by_row, overhead_ratio,
                     requested_precision)
from ..training.checkpointing import write_json_atomic
from ..config import RunConfig, from_dict, set_dotted, validate
from ..errors import ConfigError
from ..mixing.strategies import WeightingStrategy, build_strategy, method_names, strategy_class
from ..training.hooks import TrainingHooks

log = logging.getLogger(__name__)

# From the strategy registry, in its order (baselines first, VersaTune last).
FOSTERING_METHODS = method_names(expansion_only=False)
EXPANSION_METHODS = method_names(supports_expansion=True)

# run_context(run_config, run_name, reused_summary) -> context manager yielding the run's hooks.
RunContext = Callable[[RunConfig, str, Optional[dict]], ContextManager[Sequence[TrainingHooks]]]


@dataclass
class BenchVariant:
    """An extra row, an ablation: a method with its own ``method.*`` overrides, e.g.
    ``BenchVariant("versatune_paper", {"method.method": "versatune", "method.beta": 0.0})`` (fostering)
    or ``BenchVariant("versatune_share50", {"method.method": "versatune", "method.target_initial_share": 0.5})``
    (expansion, run for every target)."""

    label: str
    overrides: dict[str, Any]


# The reference ablations of VersaTune (`versatune bench --reference-ablations`): one row per reference
# strategy beside the default initial_fraction. released_code also drops beta, so the row is the
# released update w * exp(l_d) exactly.
REFERENCE_ABLATIONS = (
    BenchVariant("versatune_released_code", {"method.method": "versatune", "method.reference": "released_code",
                                             "method.beta": 0.0}),
    BenchVariant("versatune_curve_fit", {"method.method": "versatune", "method.reference": "curve_fit"}),
    BenchVariant("versatune_specialist", {"method.method": "versatune", "method.reference": "specialist"}),
)

# The row the head-to-head table compares with every other row unless --headline names another.
DEFAULT_HEADLINE = "versatune"

# Variants change how the mixture moves, nothing else: the budget, data and prior stay shared.
VARIANT_FORBIDDEN_KEYS = ("method.mode", "method.target", "method.prior")


@dataclass
class BenchPlan:
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    fostering_methods: list[str] = field(default_factory=lambda: list(FOSTERING_METHODS))
    expansion_methods: list[str] = field(default_factory=lambda: list(EXPANSION_METHODS))
    targets: list[str] = field(default_factory=list)
    """Expansion targets; empty runs no expansion benchmark."""
    variants: list[BenchVariant] = field(default_factory=list)
    """Extra fostering rows (ablations), run for every seed after the fostering methods."""
    expansion_variants: list[BenchVariant] = field(default_factory=list)
    """Extra expansion rows, run for every seed and target after the expansion methods, e.g. VersaTune
    expansion at another ``method.target_initial_share``."""
    static_curves: bool = False
    """Evaluate the static mixtures at the re-weighting points too (train.eval_static_mixtures), so
    every method has a loss curve. Off by default: it changes every static run's config, so a
    benchmark folder's finished static runs would train again, and it adds their evaluations to the
    cross-run overhead ratio (the within-run ratio is unaffected)."""
    headline: Optional[str] = None
    """The row compared head to head with every other fostering row (default: versatune), e.g. a
    tuned variant's label."""


@dataclass
class PlannedRun:
    name: str
    config: RunConfig
    label: str
    """The row this run belongs to: its method, or its variant's label."""


def check_plan(plan: BenchPlan, domains: Sequence[str]) -> None:
    """Bad plans fail before anything trains."""
    if not plan.seeds or len(set(plan.seeds)) != len(plan.seeds):
        raise ConfigError(f"seeds={plan.seeds} must be a non-empty list of distinct integers, e.g. --seeds 0 1 2.")
    for method in plan.fostering_methods:
        if method not in FOSTERING_METHODS:
            raise ConfigError(f"Unknown fostering method {method!r}; use some of {', '.join(FOSTERING_METHODS)}.")
    for method in plan.expansion_methods:
        if method not in EXPANSION_METHODS:
            raise ConfigError(f"Unknown expansion method {method!r}; use some of {', '.join(EXPANSION_METHODS)}.")
    unknown = [t for t in plan.targets if t not in domains]
    if unknown:
        raise ConfigError(f"Expansion target(s) {unknown} are not domains of this data ({', '.join(domains)}); "
                          f"pick --targets from that list.")
    if plan.expansion_variants and not plan.targets:
        raise ConfigError("Expansion variants need expansion targets; give --targets, e.g. --targets code.")
    labels = [v.label for v in [*plan.variants, *plan.expansion_variants]]
    for variant in [*plan.variants, *plan.expansion_variants]:
        if not re.fullmatch(r"[a-z0-9_]+", variant.label):
            raise ConfigError(f"Variant label {variant.label!r} must be lower-case letters, digits and '_' "
                              f"(it names the run folder), e.g. versatune_paper.")
        if variant.label in FOSTERING_METHODS or variant.label in EXPANSION_METHODS or labels.count(variant.label) > 1:
            raise ConfigError(f"Variant label {variant.label!r} is already a method or another variant's label; "
                              f"give each variant its own name.")
        bad = [k for k in variant.overrides if not k.startswith("method.") or k in VARIANT_FORBIDDEN_KEYS]
        if bad:
            raise ConfigError(f"Variant {variant.label!r} overrides {', '.join(bad)}: a variant may change only "
                              f"method.* keys other than {', '.join(VARIANT_FORBIDDEN_KEYS)}, because every run of "
                              f"the benchmark shares the budget, data and prior.")
        if not variant.overrides:
            raise ConfigError(f"Variant {variant.label!r} has no overrides, so it would repeat a method; "
                              f"give it e.g. method.method=versatune,method.beta=0.")
    fostering_rows = [*plan.fostering_methods, *(v.label for v in plan.variants)]
    if plan.headline is not None and plan.headline not in fostering_rows:
        raise ConfigError(f"--headline {plan.headline!r} is not a fostering row of this benchmark; name one of "
                          f"{', '.join(fostering_rows) or '(none)'}, or add it with --methods "
                          f"or --variant.")
    if not plan.fostering_methods and not plan.variants and not (
            plan.targets and (plan.expansion_methods or plan.expansion_variants)):
        raise ConfigError("Nothing to run: give fostering methods, or expansion targets and methods.")


def plan_runs(config: RunConfig, plan: BenchPlan, prior: dict[str, float]) -> list[PlannedRun]:
    """One validated config per (mode, target, method, seed); everything but the mixture is shared."""
    base = config.to_dict()
    base["method"]["prior"] = dict(prior)
    base["train"].update(save_model=False, checkpoint_every=0, eval_static_mixtures=plan.static_curves)
    base["distributed"]["num_workers"] = 0
    runs = []
    # (mode, target, row label, method.* overrides)
    cases = [("fostering", None, m, {"method.method": m}) for m in plan.fostering_methods]
    cases += [("fostering", None, v.label, v.overrides) for v in plan.variants]
    cases += [("expansion", t, m, {"method.method": m}) for t in plan.targets for m in plan.expansion_methods]
    cases += [("expansion", t, v.label, v.overrides) for t in plan.targets for v in plan.expansion_variants]
    # Seed-major: a benchmark stopped part-way has every method on its first seeds.
    for seed in plan.seeds:
        for mode, target, label, overrides in cases:
            tree = copy.deepcopy(base)
            for dotted, value in overrides.items():
                set_dotted(tree, dotted, value)
            tree["method"].update(mode=mode, target=target)
            tree["train"]["seed"] = seed
            fit_probe_interval(tree["method"], list(prior))
            name = f"{mode}-{target + '-' if target else ''}{label}-seed{seed}"
            try:
                config_of_run = validate(from_dict(tree))
            except ConfigError as exc:
                raise ConfigError(f"Bench run {name}: {exc}") from None
            runs.append(PlannedRun(name=name, config=config_of_run, label=label))
    return runs


def fit_probe_interval(method: dict[str, Any], domains: list[str]) -> None:
    """A method that probes (Aioli) takes its probe steps inside one re-weighting interval. When the
    shared interval is too short for them, its interval becomes the smallest multiple of the shared one
    that holds them, so its re-weighting points stay on the other methods' grid (same budget)."""
    cls, interval = strategy_class(method["method"]), method["interval"]
    if cls.probe_step_count is WeightingStrategy.probe_step_count or not interval:
        return  # this method does not probe
    strategy = build_strategy(method["method"], domains, **{name: method[name] for name in cls.options})
    need = strategy.probe_step_count()
    if need >= interval:
        method["interval"] = interval * (need // interval + 1)


def _no_tracking(run_config: RunConfig, name: str, reused: Optional[dict]) -> ContextManager[Sequence[TrainingHooks]]:
    return contextlib.nullcontext(())


def run_benchmark(config: RunConfig, plan: BenchPlan, output_dir: str | Path,
                  run_context: RunContext = _no_tracking, report_only: bool = False) -> dict[str, Any]:
    """Run (or reuse) every planned run and return the report (also written as report.json/.md, with
    the loss curves as loss_curves*.png).

    ``report_only`` trains nothing: the report covers the runs already finished in ``output_dir``
    (for reading a long benchmark while it runs, or after it was stopped) and lists the missing ones.
    """
    from ..data.sources import load_domain_data
    from ..training.loop import train
    from ..training.setup import evaluate_base, prepare_inputs
    from ..training.state import BaseEvaluation
    from ..mixing.probe import run_probe
    from ..training.loss import precision_on
    from ..training.models import cache_root, resolve_device

    started = time.perf_counter()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    data = load_domain_data(config.data)
    check_plan(plan, data.domains)

    shared = _load_shared(output_dir, config)
    if shared is None and report_only:
        raise ConfigError(f"{output_dir} holds no benchmark of this config to report on. Check --output-dir and "
                          f"that the preset and --set values match the benchmark's.")
    precision = precision_on(resolve_device(config.model.device), config.model.bf16)
    if shared is None:
        log.info("Bench: probing and evaluating the base model once for every run")
        inputs = prepare_inputs(config, data)
        prior = dict(config.method.prior) if config.method.prior else \
            run_probe(inputs.loaded.model, inputs.loaded.tokenizer, data, config.probe,
                      cache_dir=cache_root(config.model)).to_json()["distribution"]
        base = evaluate_base(config, inputs)
        shared = {"key": _shared_key(config), "prior": prior, "eval_loss": base.eval_loss, "accuracy": base.accuracy,
                  "precision": precision}
        write_json_atomic(output_dir / "shared.json", shared)
        del inputs
    bases = base_evaluations(shared, config)
    if precision not in bases and not report_only:
        # This machine computes in another precision than the shared evaluation did (a benchmark resumed
        # on a CPU without bf16 instructions): its runs' "before" must be measured the way they are.
        log.info("Bench: evaluating the base model again in %s (the shared evaluation is in %s)",
                 precision, ", ".join(bases))
        inputs = prepare_inputs(config, data)
        base = evaluate_base(config, inputs)
        shared.setdefault("base_by_precision", {})[precision] = {"eval_loss": base.eval_loss, "accuracy": base.accuracy}
        write_json_atomic(output_dir / "shared.json", shared)
        bases[precision] = shared["base_by_precision"][precision]
        del inputs
    here = bases.get(precision) or bases[_shared_precision(shared, config)]
    base_eval = BaseEvaluation(eval_loss=here["eval_loss"], accuracy=here["accuracy"])

    runs = plan_runs(config, plan, shared["prior"])
    records: list[RunRecord] = []
    missing: list[str] = []
    for index, run in enumerate(runs, 1):
        folder = output_dir / "runs" / run.name
        reused = _reusable_summary(folder, run.config)
        if reused is None and report_only:
            missing.append(run.name)
            continue
        log.info("Bench run %d/%d: %s%s", index, len(runs), run.name, " (reused)" if reused else "")
        with run_context(run.config, run.name, reused) as hooks:
            if reused is None:
                inputs = prepare_inputs(run.config, data)
                inputs.base_eval = base_eval
                summary = train(run.config, folder, hooks=hooks, inputs=inputs)
                # Free this run's model before the next one loads (two would be alive at once otherwise).
                del inputs
                gc.collect()
            else:
                summary = reused
        records.append(rebase_on_precision(RunRecord.from_summary(summary, run_id=_hooks_run_id(hooks), label=run.label),
                                           bases))

    report = build_report(records, shared["prior"], plan, config)
    report["wall_seconds"] = time.perf_counter() - started
    report["missing_runs"] = missing
    write_report(report, output_dir)
    return report


def write_report(report: dict[str, Any], output_dir: Path) -> None:
    """report.json, report.md and the loss-curve figures, so --report-only draws them from finished runs."""
    write_json_atomic(output_dir / "report.json", report)
    (output_dir / "report.md").write_text(render_markdown(report))
    write_loss_curve_figures(report, output_dir)


def build_report(records: Sequence[RunRecord], prior: dict[str, float], plan: BenchPlan,
                 config: RunConfig) -> dict[str, Any]:
    t = config.train
    return {
        "preset": config.preset,
        "model": config.model.name,
        "budget": {"steps": t.max_steps, "batch_size": t.batch_size, "max_length": t.max_length,
                   "learning_rate": t.learning_rate, "interval": config.method.interval,
                   "eval_per_domain": config.data.max_eval_per_domain},
        "plan": asdict(plan),
        "prior": prior,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version()},
        "fostering": fostering_table(records),
        "expansion": expansion_table(records),
        "head_to_head": head_to_head(records, plan.headline or DEFAULT_HEADLINE),
        "overhead": overhead_ratio(records),
        "overhead_by_row": overhead_by_row(records, sorted({r.row for r in records if r.mode == "fostering"
                                                           and strategy_class(r.method).dynamic})),
        "runs": [{"mode": r.mode, "method": r.method, "label": r.row, "target": r.target, "seed": r.seed,
                  "run_id": r.run_id,
                  "score": r.score(), "loss_before": r.loss_before, "loss_after": r.loss_after, "steps": r.steps,
                  "loss_curve": r.loss_curve, "train_seconds": r.train_seconds,
                  "midrun_eval_seconds": r.midrun_eval_seconds, "weight_trajectory": r.weight_trajectory}
                 for r in records],
    }


def _shared_key(config: RunConfig) -> str:
    """What the shared probe and base evaluation depend on: data, model, probe and eval settings."""
    tree = config.to_dict()
    key = {"data": tree["data"], "model": tree["model"], "probe": tree["probe"], "prior": tree["method"]["prior"],
           "eval": {k: tree["train"][k] for k in ("max_length", "eval_batch_size", "eval_accuracy")}}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _load_shared(output_dir: Path, config: RunConfig) -> Optional[dict]:
    path = output_dir / "shared.json"
    if path.is_file():
        shared = json.loads(path.read_text())
        if shared.get("key") == _shared_key(config):
            log.info("Bench: reusing the probe and base evaluation in %s", path)
            return shared
    return None


def _shared_precision(shared: dict, config: RunConfig) -> str:
    """The precision of shared.json's own base evaluation. Files written before it was recorded were
    evaluated in what the config asked for (bf16 autocast was then used on every machine)."""
    return shared.get("precision") or requested_precision(config.model.bf16)


def base_evaluations(shared: dict, config: RunConfig) -> dict[str, dict]:
    """precision -> the base model's {"eval_loss", "accuracy"} measured in it."""
    own = {"eval_loss": shared["eval_loss"], "accuracy": shared["accuracy"]}
    return {_shared_precision(shared, config): own, **shared.get("base_by_precision", {})}


def rebase_on_precision(record: RunRecord, bases: dict[str, dict]) -> RunRecord:
    """The run's "before" is the base model evaluated in the run's own precision, where that was
    measured: a loss change then compares like with like (summaries store the shared one)."""
    base = bases.get(record.precision or "")
    if base is not None:
        record.loss_before = dict(base["eval_loss"])
        record.accuracy_before = dict(base["accuracy"])
    return record


def _reusable_summary(folder: Path, config: RunConfig) -> Optional[dict]:
    """The finished run's summary when it ran with ``config``, else None (the run is trained again).

    The stored config is read through the schema first, so a config key added after the run finished
    takes its default there: adding a knob whose default keeps the old behaviour does not throw away
    hours of finished runs. A stored key the schema no longer knows makes the run stale."""
    path = folder / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    try:
        stored = from_dict(summary.get("config") or {}).to_dict()
    except ConfigError as error:
        log.info("Bench: %s ran with a config this version cannot read (%s); training it again", folder.name, error)
        return None
    return summary if _run_identity(stored) == _run_identity(config.to_dict()) else None


# Keys a fostering run never reads: a new default of one (target_initial_share .5 -> .9) must not retrain it.
_EXPANSION_ONLY = ("target_initial_share", "target_max_share")


def _run_identity(tree: dict) -> Any:
    """What makes two runs the same run: the config as a JSON round trip writes it (tuples become lists),
    without the keys its mode does not read."""
    tree = json.loads(json.dumps(tree))
    if tree.get("method", {}).get("mode") == "fostering":
        for key in _EXPANSION_ONLY:
            tree["method"].pop(key, None)
    return tree


def _hooks_run_id(hooks: Sequence[TrainingHooks]) -> Optional[str]:
    return next((h.run_id for h in hooks if hasattr(h, "run_id")), None)


def quick_plan(domains: Sequence[str]) -> BenchPlan:
    """One seed, every method, one expansion target: a smoke run of the whole benchmark."""
    return BenchPlan(seeds=[0], targets=[domains[0]])

