"""The benchmark's arithmetic: per-method tables over seeds, confidence intervals, loss curves
(``markdown.py`` renders them).

Pure functions over plain records (numpy + scipy only), so the tables are unit-tested without
training anything. A record is one finished run: its mode, method, target, seed, the base model's
and the trained model's per-domain held-out loss and accuracy, its timings, weight trajectory and
held-out loss at each re-weighting point.

Definitions (the paper's aggregate, and the loss-based score this scale needs: ARCHITECTURE.md "Measuring"):

- per-domain score = exp(−held-out loss) (the per-token likelihood); the run's score is the mean over
  domains (``score/multi_domain``);
- relative gain over uniform = score(method) / score(uniform) − 1, paired by seed, in %;
- pairs compare like with like: a seed whose two runs computed at different precisions (one in bf16,
  one in fp32 because its CPU had no bf16 instructions) is left out of that pair's interval and
  listed, because the precision offset is the order of the effects measured (SmolLM2's base model
  scores 0.09% higher in fp32 than in bf16; mixtures differ by 0.02-0.9%);
- head to head: score(headline row) / score(other row) − 1, paired by seed, for every other row; the
  headline "beats" a row when the whole 95% interval is above zero, "loses" when it is below, and
  otherwise the two are not told apart at this number of seeds;
- loss-reduction gain over uniform = Δ̄(method) / Δ̄(uniform) − 1 where Δ̄ is the mean per-domain
  loss reduction vs the base model: the same comparison on a scale where the base model is 0;
- expansion: target gain = loss reduction on the target; non-target change = Σ over the other
  domains of (loss after − loss before); non-target degradation = Σ over the other domains of the
  increases only, max(0, loss after − loss before), because a specialist that forgets one domain
  while its genre-mates improve has a negative net change yet degrades; kept = target gain / the
  100%-target run's target gain; degradation reduction = 1 − degradation / the 100%-target run's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np

FOSTERING_BASELINE = "uniform"
SPECIALIST = "target_only"


@dataclass
class RunRecord:
    mode: str
    method: str
    seed: int
    domains: list[str]
    loss_before: dict[str, float]
    loss_after: dict[str, float]
    accuracy_before: dict[str, float] = field(default_factory=dict)
    accuracy_after: dict[str, float] = field(default_factory=dict)
    target: Optional[str] = None
    train_seconds: float = 0.0
    midrun_eval_seconds: float = 0.0
    steps: int = 0
    reweighting_evaluations: int = 0
    """Mid-run evaluations of the held-out set, one per re-weighting point."""
    weight_trajectory: list[dict] = field(default_factory=list)
    loss_curve: list[dict] = field(default_factory=list)
    """``{"step", "eval_loss"}`` at each re-weighting point (static mixtures: only with train.eval_static_mixtures)."""
    run_id: Optional[str] = None
    label: Optional[str] = None
    """The table row: a variant's label, or None for the method's own row."""
    precision: Optional[str] = None
    """What the run computed in, "bfloat16" or "float32" (None: unknown)."""

    @property
    def row(self) -> str:
        return self.label or self.method

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any], run_id: Optional[str] = None,
                     label: Optional[str] = None) -> "RunRecord":
        # The re-weighting points with a held-out evaluation (none under method.signal=train).
        evaluated = [r for r in summary.get("reweighting_records", []) if "eval_loss" in r]
        return cls(mode=summary["mode"], method=summary["method"], seed=int(summary["config"]["train"]["seed"]),
                   domains=list(summary["domains"]), loss_before=dict(summary["eval_loss_before"]),
                   loss_after=dict(summary["eval_loss_after"]), accuracy_before=dict(summary["accuracy_before"]),
                   accuracy_after=dict(summary["accuracy_after"]), target=summary.get("target"),
                   train_seconds=float(summary["train_seconds"]),
                   midrun_eval_seconds=float(summary.get("midrun_eval_seconds", 0.0)),
                   steps=int(summary.get("steps", 0)), reweighting_evaluations=len(evaluated),
                   weight_trajectory=list(summary["weight_trajectory"]),
                   loss_curve=[{"step": r["step"], "eval_loss": r["eval_loss"]} for r in evaluated],
                   run_id=run_id,
                   label=label if label and label != summary["method"] else None,
                   precision=summary_precision(summary))

    def score(self) -> float:
        return float(np.mean([math.exp(-self.loss_after[d]) for d in self.domains]))

    def base_score(self) -> float:
        return float(np.mean([math.exp(-self.loss_before[d]) for d in self.domains]))

    def change(self, domain: str) -> float:
        """Held-out loss after − before (negative: the domain improved)."""
        return self.loss_after[domain] - self.loss_before[domain]

    def mean_reduction(self) -> float:
        return -float(np.mean([self.change(d) for d in self.domains]))


def summary_precision(summary: Mapping[str, Any]) -> Optional[str]:
    """The precision a run computed in. Summaries written before the field existed computed in what
    their config asked for: bf16 autocast was then used on every machine."""
    if summary.get("precision"):
        return summary["precision"]
    bf16 = summary.get("config", {}).get("model", {}).get("bf16")
    return None if bf16 is None else requested_precision(bf16)


def requested_precision(bf16: bool) -> str:
    """What ``model.bf16`` asks for; what a run or base evaluation without a recorded precision computed in."""
    return "bfloat16" if bf16 else "float32"


@dataclass
class Estimate:
    """Mean over seeds with a two-sided 95% Student-t interval (half-width None with one seed)."""

    mean: float
    half_width: Optional[float]
    n: int

    @property
    def low(self) -> float:
        return self.mean - (self.half_width or 0.0)

    @property
    def high(self) -> float:
        return self.mean + (self.half_width or 0.0)

    def format(self, digits: int = 4, scale: float = 1.0, suffix: str = "", signed: Optional[bool] = None) -> str:
        """Gains in % carry their sign unless ``signed=False`` (a share such as "93.4% kept")."""
        if not math.isfinite(self.mean):
            return "n/a"
        signed = suffix == "%" if signed is None else signed
        text = f"{self.mean * scale:+.{digits}f}" if signed else f"{self.mean * scale:.{digits}f}"
        if self.half_width is not None and math.isfinite(self.half_width):
            text += f" ± {self.half_width * scale:.{digits}f}"
        return text + suffix

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "ci95": self.half_width, "n": self.n}


def estimate(values: Sequence[float]) -> Estimate:
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if a.size == 0:
        return Estimate(float("nan"), None, 0)
    if a.size == 1:
        return Estimate(float(a[0]), None, 1)
    from scipy import stats

    half = float(stats.t.ppf(0.975, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size))
    return Estimate(float(a.mean()), half, int(a.size))


def _by_method(records: Sequence[RunRecord]) -> dict[str, list[RunRecord]]:
    grouped: dict[str, list[RunRecord]] = {}
    for r in records:
        grouped.setdefault(r.row, []).append(r)
    return grouped


def _comparable(a: RunRecord, b: RunRecord) -> bool:
    return a.precision is None or b.precision is None or a.precision == b.precision


def _same_seed(records: Sequence[RunRecord], baseline: Sequence[RunRecord]) -> list[tuple[RunRecord, RunRecord]]:
    """(run, baseline run of the same seed) for every seed both have, in seed order."""
    base = {r.seed: r for r in baseline}
    return [(r, base[r.seed]) for r in sorted(records, key=lambda r: r.seed) if r.seed in base]


def _pairs(records: Sequence[RunRecord], baseline: Sequence[RunRecord]) -> list[tuple[RunRecord, RunRecord]]:
    """(run, baseline run of the same seed) for every seed both have at the same precision."""
    return [(r, b) for r, b in _same_seed(records, baseline) if _comparable(r, b)]


def _paired(records: Sequence[RunRecord], baseline: Sequence[RunRecord], value) -> list[float]:
    """value(run, baseline run of the same seed) for every seed both have at the same precision."""
    return [value(r, b) for r, b in _pairs(records, baseline)]


def _paired_seeds(records: Sequence[RunRecord], baseline: Sequence[RunRecord]) -> list[int]:
    return [r.seed for r, _ in _pairs(records, baseline)]


def _mixed_precision(records: Sequence[RunRecord], baseline: Sequence[RunRecord]) -> dict[str, str]:
    """Seeds left out of a pair because its two runs computed at different precisions: seed -> why."""
    return {str(r.seed): f"{r.precision} vs {b.precision}" for r, b in _same_seed(records, baseline)
            if not _comparable(r, b)}


def _ratio_minus_one(a: float, b: float) -> float:
    return a / b - 1.0 if b != 0 else float("nan")


def fostering_table(records: Sequence[RunRecord]) -> dict[str, Any]:
    """One row per method: per-domain loss change and accuracy, mean/worst loss, score, gains over uniform."""
    records = [r for r in records if r.mode == "fostering"]
    if not records:
        return {"domains": [], "rows": []}
    domains = records[0].domains
    grouped = _by_method(records)
    uniform = grouped.get(FOSTERING_BASELINE, [])
    rows = []
    for method, runs in grouped.items():
        rows.append({
            "method": method,
            "seeds": sorted(r.seed for r in runs),
            "loss_change": {d: estimate([r.change(d) for r in runs]).to_json() for d in domains},
            "accuracy": {d: estimate([r.accuracy_after.get(d, float("nan")) for r in runs]).to_json() for d in domains},
            "mean_loss": estimate([float(np.mean([r.loss_after[d] for d in domains])) for r in runs]).to_json(),
            "worst_loss": estimate([max(r.loss_after[d] for d in domains) for r in runs]).to_json(),
            "score": estimate([r.score() for r in runs]).to_json(),
            # Over the domains that have MC items (multigenre's code and general have none).
            "mean_accuracy": estimate([float(np.mean([r.accuracy_after[d] for d in domains if d in r.accuracy_after]))
                                       if r.accuracy_after else float("nan") for r in runs]).to_json(),
            "gain_over_uniform": estimate(_paired(runs, uniform, lambda r, u: _ratio_minus_one(r.score(), u.score())))
            .to_json(),
            "reduction_gain_over_uniform": estimate(_paired(
                runs, uniform, lambda r, u: _ratio_minus_one(r.mean_reduction(), u.mean_reduction()))).to_json(),
            "precision": sorted({r.precision or "unknown" for r in runs}),
            "left_out_of_pairing": _mixed_precision(runs, uniform),
        })
    base = records[0]
    by_precision = {r.precision: {"loss": r.loss_before, "score": r.base_score()} for r in records if r.precision}
    return {"domains": domains, "rows": rows,
            "base": {"loss": base.loss_before, "accuracy": base.accuracy_before, "score": base.base_score(),
                     "precision": base.precision},
            # Each run is measured against the base model evaluated in its own precision.
            "base_by_precision": by_precision if len(by_precision) > 1 else {}}


def head_to_head(records: Sequence[RunRecord], headline: str) -> dict[str, Any]:
    """The headline row against every other fostering row, paired by seed: is it better, with intervals?

    This is the comparison the method has to win (every baseline, not just uniform), so the verdict
    is spelled out per row rather than left to reading two overlapping intervals."""
    grouped = _by_method([r for r in records if r.mode == "fostering"])
    if headline not in grouped:
        return {"headline": headline, "rows": []}
    mine = grouped[headline]
    rows = []
    for other, runs in grouped.items():
        if other == headline:
            continue
        gain = estimate(_paired(mine, runs, lambda m, o: _ratio_minus_one(m.score(), o.score())))
        rows.append({"method": other, "seeds": _paired_seeds(mine, runs), "gain": gain.to_json(),
                     "verdict": _verdict(gain), "left_out_of_pairing": _mixed_precision(mine, runs)})
    return {"headline": headline, "rows": rows}


def _verdict(gain: Estimate) -> str:
    if gain.n == 0:
        return "no common seed"
    if gain.half_width is None:
        return "one seed: no interval"
    if gain.low > 0:
        return "beats"
    if gain.high < 0:
        return "loses"
    return "not separated"


def expansion_table(records: Sequence[RunRecord]) -> dict[str, Any]:
    """Per target: target gain, non-target change, share of the specialist's gain kept, degradation cut."""
    records = [r for r in records if r.mode == "expansion"]
    targets: dict[str, list[RunRecord]] = {}
    for r in records:
        targets.setdefault(r.target, []).append(r)
    out = []
    for target, runs in targets.items():
        others = [d for d in runs[0].domains if d != target]
        grouped = _by_method(runs)
        specialist = grouped.get(SPECIALIST, [])

        def gain(r: RunRecord) -> float:
            return -r.change(target)

        def non_target(r: RunRecord) -> float:
            return float(sum(r.change(d) for d in others))

        def degradation(r: RunRecord) -> float:
            return float(sum(max(0.0, r.change(d)) for d in others))

        rows = []
        for method, method_runs in grouped.items():
            rows.append({
                "method": method,
                "seeds": sorted(r.seed for r in method_runs),
                "target_gain": estimate([gain(r) for r in method_runs]).to_json(),
                "non_target_change": estimate([non_target(r) for r in method_runs]).to_json(),
                "non_target_degradation": estimate([degradation(r) for r in method_runs]).to_json(),
                "kept": estimate(_paired(method_runs, specialist,
                                         lambda r, s: gain(r) / gain(s) if gain(s) > 0 else float("nan"))).to_json(),
                "degradation_reduction": estimate(_paired(
                    method_runs, specialist,
                    lambda r, s: 1.0 - degradation(r) / degradation(s) if degradation(s) > 0 else float("nan"))).to_json(),
                "left_out_of_pairing": _mixed_precision(method_runs, specialist),
            })
        out.append({"target": target, "rows": rows})
    return {"targets": out}


def overhead_ratio(records: Sequence[RunRecord], dynamic: str = "versatune",
                   static: str = "versatune_constant") -> Optional[dict[str, float]]:
    """Wall time of the dynamic method's steps and its re-weighting evaluations over the static
    mixture's steps at the same step count (means over the seeds both ran at the same precision)."""
    runs = _by_method([r for r in records if r.mode == "fostering"])
    # Seeds where both ran at the same precision: seeds resumed on another machine kind would
    # otherwise put one machine's steps over another's.
    pairs = _pairs(runs.get(dynamic, []), runs.get(static, []))
    if not pairs:
        return None
    dyn = float(np.mean([d.train_seconds + d.midrun_eval_seconds for d, _ in pairs]))
    sta = float(np.mean([s.train_seconds + s.midrun_eval_seconds for _, s in pairs]))
    # The same question inside each dynamic run (its evaluations over its own steps): immune to a
    # neighbour slowing one run and not the other on a shared machine.
    within = float(np.mean([1.0 + r.midrun_eval_seconds / r.train_seconds for r in runs[dynamic] if r.train_seconds > 0]))
    return {"dynamic_seconds": dyn, "static_seconds": sta, "ratio": dyn / sta if sta > 0 else float("nan"),
            "seeds": [d.seed for d, _ in pairs], "within_run_ratio": within, **_interval_for_overhead(runs[dynamic], OVERHEAD_TARGET)}


OVERHEAD_TARGET = 0.10


def overhead_by_row(records: Sequence[RunRecord], dynamic_rows: Sequence[str],
                    static: str = "versatune_constant") -> list[dict[str, Any]]:
    """Each dynamic fostering row's steps plus its re-weighting evaluations (Aioli's probes included)
    over the static mixture's steps alone, paired by seed at the same precision: what re-weighting
    costs against training on a fixed mixture that evaluates nothing mid-run (the overhead target)."""
    runs = _by_method([r for r in records if r.mode == "fostering"])
    out = []
    for row in dynamic_rows:
        pairs = [(d, s) for d, s in _pairs(runs.get(row, []), runs.get(static, [])) if s.train_seconds > 0]
        if pairs:
            out.append({"row": row, "seeds": [d.seed for d, _ in pairs],
                        "ratio": float(np.mean([(d.train_seconds + d.midrun_eval_seconds) / s.train_seconds
                                                for d, s in pairs])),
                        "evaluations": float(np.mean([d.reweighting_evaluations for d, _ in pairs]))})
    return out


def _interval_for_overhead(runs: Sequence[RunRecord], target: float) -> dict[str, float]:
    """The re-weighting interval at which evaluations cost ``target`` of the steps' time: one
    evaluation pass costs e seconds and a step s seconds, so every K steps adds e / (K·s)."""
    timed = [r for r in runs if r.steps > 0 and r.reweighting_evaluations > 0 and r.train_seconds > 0]
    if not timed:
        return {}
    step = float(np.mean([r.train_seconds / r.steps for r in timed]))
    evaluation = float(np.mean([r.midrun_eval_seconds / r.reweighting_evaluations for r in timed]))
    return {"seconds_per_step": step, "seconds_per_evaluation": evaluation, "overhead_target": target,
            "interval_for_target": math.ceil(evaluation / (target * step))}


@dataclass
class LossCurve:
    """One row's held-out loss on one domain over training steps: mean, min and max over seeds."""

    steps: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]


def _loss_points(run: Mapping[str, Any]) -> dict[int, Mapping[str, float]]:
    """step -> per-domain held-out loss of a report run: the base model, each re-weighting point, the end."""
    points: dict[int, Mapping[str, float]] = {0: run["loss_before"]}
    points.update({point["step"]: point["eval_loss"] for point in run["loss_curve"]})
    points[run["steps"]] = run["loss_after"]
    return points


def loss_curves(runs: Sequence[Mapping[str, Any]], mode: str = "fostering",
                target: Optional[str] = None) -> dict[str, dict[str, LossCurve]]:
    """Row label -> domain -> curve, over the report runs of one mode (and expansion target)."""
    seeds: dict[str, list[dict[int, Mapping[str, float]]]] = {}
    for run in runs:
        if run["mode"] == mode and run.get("target") == target:
            seeds.setdefault(run["label"], []).append(_loss_points(run))
    return {label: _curves_over_seeds(points) for label, points in seeds.items()}


def _curves_over_seeds(seeds: Sequence[dict[int, Mapping[str, float]]]) -> dict[str, LossCurve]:
    # Only the steps every seed evaluated: a mean over a subset of the seeds would jump where one is missing.
    steps = sorted(set.intersection(*(set(points) for points in seeds)))
    curves = {}
    for domain in seeds[0][0]:
        values = np.array([[points[step][domain] for step in steps] for points in seeds], dtype=float)
        curves[domain] = LossCurve(steps, values.mean(0).tolist(), values.min(0).tolist(), values.max(0).tolist())
    return curves
