"""Tune-efficiency benchmark: compute to reach the grid's best, from trial records in the order they ran."""

from versatune_mlops.bench.tune_efficiency import (DEFAULT_SPACE, SearcherRun, TuneBenchmark, compute_to_reach, compute_used,
                                        searcher_configs, within)
from versatune_mlops.config import load_config
from versatune_mlops.integrations.ray.search_space import grid_size
from versatune_mlops.integrations.ray.tuning import SweepResult, TrialRecord, pick_best


def _trial(started, steps, objective, status="finished"):
    return TrialRecord(params={}, objective=objective, run_id=None, status=status, steps=steps, started=started)


def test_within_is_relative_to_the_target_and_follows_the_mode():
    assert within(0.991, 1.0, "max", 0.01) and not within(0.989, 1.0, "max", 0.01)
    assert within(1.2, 1.0, "max", 0.01), "better than the target is within"
    assert within(5.04, 5.0, "min", 0.01) and not within(5.06, 5.0, "min", 0.01)
    assert within(-1.005, -1.0, "max", 0.01), "relative to |target|, so negative objectives work"


def test_compute_to_reach_sums_the_steps_of_the_trials_that_ran_before_in_start_order():
    trials = [
        _trial(started=30, steps=30, objective=0.995),                 # third: reaches (within 1% of 1.0)
        _trial(started=10, steps=5, objective=0.999, status="stopped"),  # first: close, but stopped early
        _trial(started=20, steps=30, objective=0.90),                  # second: finished, too far
        _trial(started=40, steps=30, objective=1.0),                   # after the one that reached
    ]
    assert compute_to_reach(trials, target=1.0, mode="max", tolerance=0.01) == 5 + 30 + 30
    assert compute_used(trials) == 95
    assert compute_to_reach(trials, target=1.0, mode="max", tolerance=0.0) == 95
    assert compute_to_reach(trials, target=1.2, mode="max", tolerance=0.01) is None


def test_failed_trials_cost_their_steps_but_never_reach():
    trials = [_trial(1, 12, 2.0, status="error"), _trial(2, 30, 2.95), _trial(None, 30, 2.9)]
    assert compute_to_reach(trials, target=2.0, mode="min", tolerance=0.5) == 12 + 30
    assert compute_to_reach(trials, target=2.0, mode="min", tolerance=0.46) == 12 + 30 + 30, "unknown start goes last"


def test_both_searchers_cover_the_same_space_with_in_process_trials():
    config = load_config("tiny", overrides={**DEFAULT_SPACE, "tune.workers_per_trial": 1, "tune.asha": False})
    grid, asha = searcher_configs(config, asha_trials=None)
    assert (grid.tune.searcher, grid.tune.asha, asha.tune.searcher, asha.tune.asha) == ("grid", False, "optuna", True)
    assert grid_size(grid) == 9 and asha.tune.num_samples == 9, "by default as many ASHA trials as grid points"
    assert grid.tune.workers_per_trial == asha.tune.workers_per_trial == 0, "in-process trials: no per-trial Ray Train start-up in the compute count"
    assert not grid.tune.log_models and not asha.tune.log_models
    assert (grid.tune.alpha, grid.tune.beta) == (asha.tune.alpha, asha.tune.beta) == (config.tune.alpha, config.tune.beta)
    assert searcher_configs(config, asha_trials=4)[1].tune.num_samples == 4


def test_fraction_of_the_grids_compute_against_the_grids_best_finished_trial():
    grid = [_trial(1, 30, 0.5), _trial(2, 30, 1.0), _trial(3, 30, 2.0, status="error"), _trial(4, 30, 0.8)]
    asha = [_trial(10, 10, 0.3, status="stopped"), _trial(11, 30, 0.995), _trial(12, 30, 1.1)]
    bench = TuneBenchmark("score/multi_domain", "max", 0.01, SearcherRun("grid", SweepResult("s", "max", grid), 1.0),
                          SearcherRun("asha+optuna", SweepResult("s", "max", asha), 1.0), pick_best(grid, "max"))
    assert bench.grid_best.objective == 1.0, "the errored trial's 2.0 is no target"
    assert bench.grid.steps == 120 and bench.asha.steps == 70
    assert bench.steps_to_reach(0.01) == 40 and bench.fraction(0.01) == 40 / 120
    assert bench.fraction(0.0) == 70 / 120
    assert TuneBenchmark("s", "max", 0.01, bench.grid, SearcherRun("a", SweepResult("s", "max", asha[:1]), 1.0),
                         bench.grid_best).fraction(0.01) is None
