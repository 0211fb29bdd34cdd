"""The benchmark's tables as the markdown of report.md and BENCHMARKS.md (the arithmetic is in tables.py)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .tables import FOSTERING_BASELINE, SPECIALIST, Estimate


def _left_out_of_pairing(report: Mapping[str, Any]) -> list[str]:
    """One line per pair that lost a seed because its two runs computed at different precisions."""
    pairs = [(row["method"], FOSTERING_BASELINE, row.get("left_out_of_pairing"))
             for row in (report.get("fostering") or {}).get("rows", [])]
    duel = report.get("head_to_head") or {}
    pairs += [(duel.get("headline"), row["method"], row.get("left_out_of_pairing")) for row in duel.get("rows", [])]
    pairs += [(row["method"], f"{SPECIALIST} (expansion, target {block['target']})", row.get("left_out_of_pairing"))
              for block in (report.get("expansion") or {}).get("targets", []) for row in block["rows"]]
    found = [f"- {a} vs {b}: " + ", ".join(f"seed {seed} ({why})" for seed, why in seeds.items())
             for a, b, seeds in pairs if seeds]
    if not found:
        return []
    return ["Left out of the paired comparisons above (the two runs of that seed computed at different "
            "precisions, so their difference would carry the precision offset):", "", *found, ""]


def _est(cell: Mapping[str, Any]) -> Estimate:
    return Estimate(cell["mean"], cell["ci95"], cell["n"])


def _seeds(overhead: Mapping[str, Any]) -> str:
    seeds = overhead.get("seeds")
    return f" (seeds {', '.join(map(str, seeds))}, each pair at one precision)" if seeds else ""


def render_markdown(report: Mapping[str, Any]) -> str:
    """The tables of BENCHMARKS.md from a report (fostering, expansion, overhead)."""
    lines: list[str] = []
    fostering = report.get("fostering") or {}
    if fostering.get("rows"):
        domains = fostering["domains"]
        lines += ["### Fostering: held-out loss change vs the base model (negative = better), mean ± 95% CI", "",
                  "| method | seeds | " + " | ".join(domains) + " | mean loss | worst loss | score | gain vs uniform |"
                  " loss-reduction gain vs uniform |",
                  "|---" * (len(domains) + 7) + "|"]
        for row in fostering["rows"]:
            cells = [_est(row["loss_change"][d]).format(4) for d in domains]
            lines.append(f"| {row['method']} | {len(row['seeds'])} | " + " | ".join(cells)
                         + f" | {_est(row['mean_loss']).format(4)} | {_est(row['worst_loss']).format(4)}"
                         f" | {_est(row['score']).format(5)} | {_est(row['gain_over_uniform']).format(2, 100, '%')}"
                         f" | {_est(row['reduction_gain_over_uniform']).format(1, 100, '%')} |")
        base = fostering["base"]
        bases = fostering.get("base_by_precision") or {base.get("precision"): base}
        lines.append("")
        for precision, measured in bases.items():
            label = f" ({precision}: the runs computed in it are measured against it)" if len(bases) > 1 else ""
            lines.append(f"Base model{label}: score {measured['score']:.5f}; loss "
                         + ", ".join(f"{d} {measured['loss'][d]:.4f}" for d in domains))
        lines.append("")
        if base.get("accuracy"):
            lines += ["### Fostering: multiple-choice accuracy after training (secondary: near chance at this scale)",
                      "", "| method | " + " | ".join(domains) + " | mean |", "|---" * (len(domains) + 2) + "|"]
        for row in fostering["rows"] if base.get("accuracy") else []:
            lines.append(f"| {row['method']} | " + " | ".join(_est(row["accuracy"][d]).format(3) for d in domains)
                         + f" | {_est(row['mean_accuracy']).format(3)} |")
        if base.get("accuracy"):
            lines.append("| (base model) | " + " | ".join(f"{base['accuracy'][d]:.3f}" if d in base["accuracy"]
                                                          else "n/a" for d in domains)
                         + f" | {float(np.mean(list(base['accuracy'].values()))):.3f} |")
        lines.append("")
    duel = report.get("head_to_head") or {}
    if duel.get("rows"):
        lines += [f"### Head to head: {duel['headline']} vs every other row (score ratio − 1, paired by seed, "
                  "mean ± 95% CI)", "", f"| {duel['headline']} vs | paired seeds | score gain | verdict |",
                  "|---|---|---|---|"]
        for row in duel["rows"]:
            lines.append(f"| {row['method']} | {len(row['seeds'])} | {_est(row['gain']).format(2, 100, '%')}"
                         f" | {row['verdict']} |")
        lines.append("")
    for block in (report.get("expansion") or {}).get("targets", []):
        lines += [f"### Expansion, target = {block['target']} (loss changes vs the base model)", "",
                  "| method | seeds | target gain (loss reduction) | non-target change (sum) |"
                  " non-target degradation (sum of increases) | target gain kept vs 100% target |"
                  " non-target degradation reduction |",
                  "|---|---|---|---|---|---|---|"]
        for row in block["rows"]:
            lines.append(f"| {row['method']} | {len(row['seeds'])} | {_est(row['target_gain']).format(4)}"
                         f" | {_est(row['non_target_change']).format(4)} | {_est(row['non_target_degradation']).format(4)}"
                         f" | {_est(row['kept']).format(1, 100, '%', signed=False)}"
                         f" | {_est(row['degradation_reduction']).format(1, 100, '%')} |")
        lines.append("")
    lines += _left_out_of_pairing(report)
    overhead = report.get("overhead")
    if overhead:
        lines += [f"Overhead of dynamic re-weighting (its evaluations included): versatune "
                  f"{overhead['dynamic_seconds']:.1f} s vs versatune_constant {overhead['static_seconds']:.1f} s of "
                  f"steps at the same step count{_seeds(overhead)}: ratio {overhead['ratio']:.3f}. Within the versatune runs, steps plus "
                  f"re-weighting evaluations over steps alone: {overhead['within_run_ratio']:.3f}."]
        if "interval_for_target" in overhead:
            lines[-1] += (f" One evaluation pass takes {overhead['seconds_per_evaluation']:.1f} s and one step "
                          f"{overhead['seconds_per_step']:.2f} s, so re-weighting every "
                          f"{overhead['interval_for_target']} steps or more keeps the overhead within "
                          f"{overhead['overhead_target']:.0%}.")
        lines.append("")
    by_row = report.get("overhead_by_row")
    if by_row:
        lines += ["Overhead per dynamic row: its steps plus its re-weighting evaluations over versatune_constant's "
                  "steps alone (a fixed mixture evaluates nothing mid-run), paired by seed:", "",
                  "| row | seeds | ratio | mid-run evaluations per run |", "|---|---|---|---|"]
        lines += [f"| {r['row']} | {len(r['seeds'])} | {r['ratio']:.2f}x | {r['evaluations']:.0f} |" for r in by_row]
        lines.append("")
    return "\n".join(lines)
