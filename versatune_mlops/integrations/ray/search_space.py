"""What a sweep searches: the Tune search space from the config's ``tune`` section, and each trial's
(and the baseline run's) RunConfig from its params. No Ray at import (``tune`` loads in param_space)."""

from __future__ import annotations

import copy
from typing import Any, Optional

import numpy as np

from ...config import TUNED, RunConfig, from_dict, validate
from ...config.schema import sweep_baseline


def param_space(config: RunConfig) -> dict[str, Any]:
    """The Tune search space from the config's ranges (grid: a grid over every range)."""
    from ray import tune

    tc = config.tune
    choices = {name: list(getattr(tc, name)) for name in CHOSEN if getattr(tc, name)}
    if tc.searcher == "grid":
        space = {name: tune.grid_search(_grid_values(config, name)) for name in TUNED}
        return space | {name: tune.grid_search(values) for name, values in choices.items()}
    space = {name: (tune.uniform(*getattr(tc, name)) if getattr(tc, name)[0] < getattr(tc, name)[1]
                    else getattr(tc, name)[0]) for name in TUNED}
    return space | {name: tune.choice(values) for name, values in choices.items()}


# Parameters a trial picks from a list (tune.<name>) rather than a range; an empty list is not tuned.
CHOSEN = ("interval", "max_domain_share", "target_initial_share")
# Short names of the chosen shares in trial names and the printed table.
SHARE_LABELS = {"max_domain_share": "cap", "target_initial_share": "init"}
# The key of the baseline run's params: its method (it has no coefficients of its own).
BASELINE_KEY = "baseline"


def trial_param_names(config: RunConfig) -> tuple[str, ...]:
    """The method.* keys a trial of this sweep sets (logged on each child run, shown in the table)."""
    return (*TUNED, *(name for name in CHOSEN if getattr(config.tune, name)))


def trial_config(base: dict[str, Any], params: dict[str, Any]) -> RunConfig:
    """A trial's RunConfig: the sweep's config with the trial's params; the baseline run's params name
    its method instead of coefficients, so it mixes by that method and has no share cap."""
    tree = copy.deepcopy(base)
    if params.get(BASELINE_KEY):
        tree["method"].update(method=params[BASELINE_KEY], max_domain_share=None)
        # The sweep's share dimensions belong to the tuned method (validation refuses a cap list on
        # uniform mixing); the baseline run is a plain run of its own method.
        tree["tune"].update({name: [] for name in SHARE_LABELS})
    else:
        for name in TUNED:
            tree["method"][name] = float(params[name])
        for name in SHARE_LABELS:
            if name in params:
                tree["method"][name] = None if params[name] is None else float(params[name])
    tree["method"]["interval"] = int(params["interval"])
    tree["distributed"]["num_workers"] = int(tree["tune"]["workers_per_trial"])
    return validate(from_dict(tree))


def baseline_params(config: RunConfig) -> Optional[dict[str, Any]]:
    """The baseline run's params, or None when the sweep has no baseline. It evaluates at the
    longest interval of the search space, so its curve shares those steps with every trial's."""
    method = sweep_baseline(config)
    return None if method is None else {BASELINE_KEY: method, "interval": max(config.tune.interval)}


def trial_name(params: dict[str, Any]) -> str:
    if params.get(BASELINE_KEY):
        return f"baseline-{params[BASELINE_KEY]}"
    name = (f"trial-a{params['alpha']:.2f}-b{params['beta']:.2f}-e{params['eta']:.2f}-s{params['epsilon']:.2f}"
            f"-k{int(params['interval'])}")
    for key, label in SHARE_LABELS.items():
        if key in params:
            name += f"-{label}none" if params[key] is None else f"-{label}{float(params[key]):.2f}"
    return name


def _grid_values(config: RunConfig, name: str) -> list[float]:
    """Evenly spaced values over a coefficient's range; a degenerate range gives one value."""
    tc = config.tune
    return sorted(set(np.linspace(*getattr(tc, name), tc.grid_points).round(6).tolist()))


def grid_size(config: RunConfig) -> int:
    """Trials of a grid sweep (the baseline run not counted)."""
    sizes = [len(_grid_values(config, n)) for n in TUNED] + [len(getattr(config.tune, n)) or 1 for n in CHOSEN]
    return int(np.prod(sizes))


def searched_space(config: RunConfig) -> dict[str, Any]:
    """The parameters a random or optuna sweep searches (those :func:`param_space` draws rather than
    fixes): each range ``(low, high)`` with low < high, and each non-empty list of choices."""
    tc = config.tune
    ranges = {name: tuple(getattr(tc, name)) for name in TUNED if getattr(tc, name)[0] < getattr(tc, name)[1]}
    return ranges | {name: list(getattr(tc, name)) for name in CHOSEN if getattr(tc, name)}
