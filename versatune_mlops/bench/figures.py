"""The benchmark's figures: per-domain loss change by method, weight trajectories side by side,
per-domain loss curves by method."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ..integrations.mlflow.figures import plt, save_figure, stack_weights
from .tables import loss_curves


def bench_loss_change_figure(fostering: Mapping, path: Path) -> Path:
    """Grouped bars: per-domain held-out loss change vs the base model, one bar per method (95% CI)."""
    domains, rows = fostering["domains"], fostering["rows"]
    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(max(7, 1.4 * len(domains)), 4))
    for i, row in enumerate(rows):
        cells = [row["loss_change"][d] for d in domains]
        ax.bar([j + i * width for j in range(len(domains))], [c["mean"] for c in cells], width,
               yerr=[c["ci95"] or 0.0 for c in cells], capsize=2, label=row["method"])
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(domains))], domains)
    ax.set(ylabel="held-out loss change (lower = better)", title="Fostering: per-domain change vs base model")
    ax.legend(loc="center left", bbox_to_anchor=(1, 0.5), fontsize=8)
    return save_figure(fig, path)


def bench_trajectories_figure(runs: Sequence[Mapping], path: Path) -> Path:
    """Weight trajectories side by side, one panel per (mode, target, method), first seed of each."""
    panels: dict[str, Mapping] = {}
    for run in runs:
        label = run.get("label", run["method"]) + (f" (expand {run['target']})" if run.get("target") else "")
        panels.setdefault(label, run)
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False, sharey=True)
    for ax, (label, run) in zip(axes.flat, panels.items()):
        stack_weights(ax, run["weight_trajectory"])
        ax.set(title=label, ylim=(0, 1), xlabel="step")
        ax.title.set_fontsize(9)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(loc="lower left", fontsize=6)
    return save_figure(fig, path)


def bench_loss_curves_figure(runs: Sequence[Mapping], path: Path, mode: str = "fostering",
                             target: Optional[str] = None) -> Path:
    """Held-out loss vs step, one panel per domain, one line per method: mean over seeds, band min..max."""
    curves = loss_curves(runs, mode, target)
    domains = list(next(iter(curves.values())))
    cols = min(3, len(domains))
    rows = -(-len(domains) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    for ax, domain in zip(axes.flat, domains):
        for i, (label, by_domain) in enumerate(curves.items()):
            curve = by_domain[domain]
            # The default cycle has 10 colours; a bench with variants has more rows than that.
            (line,) = ax.plot(curve.steps, curve.mean, marker="o", ms=2, lw=1, ls=("-", "--", ":")[i // 10 % 3],
                              label=label)
            ax.fill_between(curve.steps, curve.low, curve.high, color=line.get_color(), alpha=0.15, lw=0)
        ax.set(title=domain, xlabel="step")
        ax.title.set_fontsize(9)
    for ax in list(axes.flat)[len(domains):]:
        ax.axis("off")
    axes[0][0].set(ylabel="held-out loss")
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1, 0.5), fontsize=7)
    what = "Fostering" if target is None else f"Expansion, target = {target}"
    fig.suptitle(f"{what}: per-domain held-out loss (mean over seeds, band = min..max)", fontsize=10)
    return save_figure(fig, path)


def write_loss_curve_figures(report: Mapping[str, Any], folder: Path) -> list[Path]:
    """loss_curves.png (fostering) and loss_curves_expansion_<target>.png per target, for the runs present."""
    runs, folder = report.get("runs") or [], Path(folder)
    paths = []
    if any(r["mode"] == "fostering" for r in runs):
        paths.append(bench_loss_curves_figure(runs, folder / "loss_curves.png"))
    for target in dict.fromkeys(r["target"] for r in runs if r["mode"] == "expansion"):
        paths.append(bench_loss_curves_figure(runs, folder / f"loss_curves_expansion_{target}.png", "expansion", target))
    return paths
