"""Figures of a run: weight trajectory, per-domain eval loss, probe distribution (matplotlib, no MLflow)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures are written to files, never shown
import matplotlib.pyplot as plt  # noqa: E402


def weight_trajectory_figure(trajectory: Sequence[Mapping], path: Path, title: str = "Domain weights") -> Path:
    """Stacked area of the domain weights over training steps."""
    fig, ax = plt.subplots(figsize=(7, 4))
    stack_weights(ax, trajectory)
    ax.set(xlabel="step", ylabel="weight", ylim=(0, 1), title=title)
    ax.legend(loc="center left", bbox_to_anchor=(1, 0.5), fontsize=8)
    return save_figure(fig, path)


def eval_loss_figure(records: Sequence[Mapping], before: Mapping[str, float], after: Mapping[str, float],
                     final_step: int, path: Path) -> Path:
    """Per-domain held-out loss at step 0, each re-weighting point, and the end."""
    # Under method.signal=train the re-weighting points have no held-out evaluation.
    points = [(0, before)] + [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r] + [(final_step, after)]
    fig, ax = plt.subplots(figsize=(7, 4))
    for domain in before:
        ax.plot([s for s, _ in points], [losses[domain] for _, losses in points], marker="o", ms=3, label=domain)
    ax.set(xlabel="step", ylabel="held-out response loss", title="Per-domain eval loss")
    ax.legend(loc="center left", bbox_to_anchor=(1, 0.5), fontsize=8)
    return save_figure(fig, path)


def distribution_figure(distribution: Mapping[str, float], path: Path, title: str = "Probe: knowledge distribution") -> Path:
    return domain_bars_figure({"probability": distribution}, path, title)


def domain_bars_figure(panels: Mapping[str, Mapping[str, float]], path: Path, title: str) -> Path:
    """One bar per domain, value on top; one panel per mapping (e.g. loss and accuracy side by side)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 3.5), squeeze=False)
    for ax, (ylabel, values) in zip(axes[0], panels.items()):
        ax.bar(list(values), list(values.values()), color="tab:blue")
        ax.set(ylabel=ylabel)
        for i, value in enumerate(values.values()):
            ax.text(i, value, f"{value:.2f}", ha="center", va="bottom", fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)


def sweep_figure(trials: Sequence, objective: str, path: Path,
                 baseline: Optional[tuple[str, float]] = None) -> Path:
    """Objective against α and against β, one point per trial (failed/stopped trials hollow); a dashed
    line at the baseline run's objective when ``baseline`` is (method, objective)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
    for ax, name in zip(axes, ("alpha", "beta")):
        for trial in trials:
            if trial.objective is None:
                continue
            filled = trial.status == "finished"
            ax.scatter(trial.params[name], trial.objective, s=36, edgecolors="tab:blue",
                       facecolors="tab:blue" if filled else "none")
        if baseline is not None:
            ax.axhline(baseline[1], color="tab:gray", linestyle="--", linewidth=1, label=f"baseline ({baseline[0]})")
        ax.set(xlabel=f"{name} ({'potential' if name == 'alpha' else 'forgetting'} coefficient)")
    if baseline is not None:
        axes[1].legend(loc="best", fontsize=8)
    axes[0].set(ylabel=objective, title="Sweep: objective vs coefficients")
    return save_figure(fig, path)


def stack_weights(ax, trajectory: Sequence[Mapping]) -> None:
    """The weights as a stacked step function: each holds until the next re-weighting point."""
    steps = [point["step"] for point in trajectory]
    domains = list(trajectory[0]["weights"])
    end = steps[-1] + max(1, steps[-1] - steps[-2] if len(steps) > 1 else 1)
    ax.stackplot(steps + [end], [[p["weights"][d] for p in trajectory] + [trajectory[-1]["weights"][d]]
                                 for d in domains], labels=domains, step="post", alpha=0.85)


def save_figure(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
