"""A sweep's record and resuming from it: what is written, what is read back, what a resumed sweep
refuses, and what its optuna searcher is told. The sweeps themselves run in test_tuning.py."""

import json
import logging

import pytest

from versatune_mlops.cli.commands import sweep_table
from versatune_mlops.config import load_config
from versatune_mlops.errors import ConfigError
from versatune_mlops.integrations.ray.search_space import BASELINE_KEY, param_space, searched_space
from versatune_mlops.integrations.ray.sweep_record import (RECORD_NAME, TrialRecord, append_trial, check_resumable,
                                                           read_record, start_record, sweep_identity, told_points)
from versatune_mlops.integrations.ray.tuning import SweepResult

# An Aioli-like sweep: only eta is drawn from a range, the interval from a one-value list.
SWEEP = {"tune.searcher": "optuna", "tune.num_samples": 4, "tune.alpha": [1.0, 1.0], "tune.beta": [1.0, 1.0],
         "tune.eta": [0.5, 30.0], "tune.epsilon": [0.0, 0.0], "tune.interval": [16], "train.max_steps": 64}


def _config(**overrides):
    return load_config("tiny", overrides={**SWEEP, **overrides})


def _trial(eta, objective, status="finished", run_id=None):
    return TrialRecord({"alpha": 1.0, "beta": 1.0, "eta": eta, "epsilon": 0.0, "interval": 16}, objective,
                       run_id or f"run-{eta}", status, steps=64 if status == "finished" else 16)


def _record(tmp_path, trials, baseline=None, config=None):
    path = tmp_path / "out" / RECORD_NAME
    start_record(path, config or _config())
    if baseline is not None:
        append_trial(path, "baseline", baseline)
    for trial in trials:
        append_trial(path, "trial", trial)
    return path


def test_a_record_reads_back_its_trials_and_baseline_marked_as_resumed(tmp_path):
    baseline = TrialRecord({BASELINE_KEY: "uniform", "interval": 16}, 0.14199, "run-b", "finished", steps=64)
    path = _record(tmp_path, [_trial(16.69, 0.14213), _trial(3.0, 0.12, "stopped"), _trial(9.0, None, "error")],
                   baseline=baseline)
    record = read_record(path.parent)  # the folder finds its record
    assert record.path == path and record.identity == sweep_identity(_config())
    assert [(t.params["eta"], t.status) for t in record.trials] == [(16.69, "finished"), (3.0, "stopped"),
                                                                      (9.0, "error")]
    assert all(t.resumed for t in record.trials) and record.baseline.resumed
    assert record.baseline.params == {BASELINE_KEY: "uniform", "interval": 16} and record.baseline.objective == 0.14199
    assert [t.params["eta"] for t in record.finished] == [16.69], "only finished trials carry over"


def test_a_resumed_sweep_starts_its_record_with_what_it_carries_over(tmp_path):
    baseline = TrialRecord({BASELINE_KEY: "uniform", "interval": 16}, 0.14199, "run-b", "finished")
    old = read_record(_record(tmp_path, [_trial(16.69, 0.14213), _trial(9.0, None, "error")], baseline=baseline))
    new_path = tmp_path / "new" / RECORD_NAME
    start_record(new_path, _config(), old)
    append_trial(new_path, "trial", _trial(5.0, 0.1415))
    new = read_record(new_path)
    assert new.baseline.run_id == "run-b"
    assert [t.params["eta"] for t in new.trials] == [16.69, 5.0], "the errored trial is not carried, the new one follows"


def test_a_line_cut_short_at_the_end_is_ignored_but_one_in_the_middle_is_an_error(tmp_path, caplog):
    path = _record(tmp_path, [_trial(16.69, 0.14213)])
    with path.open("a") as f:
        f.write('{"kind": "trial", "params": {"eta": 3')  # killed mid-write
    with caplog.at_level(logging.WARNING):
        assert len(read_record(path).trials) == 1
    assert "incomplete" in caplog.text
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[2], lines[1]]) + "\n")
    with pytest.raises(ConfigError, match=r"line 2, is not a trial record"):
        read_record(path)


def test_a_missing_or_foreign_record_is_refused_with_what_to_pass(tmp_path):
    with pytest.raises(ConfigError, match="No sweep record at .*sweep_record.jsonl"):
        read_record(tmp_path)
    (tmp_path / "other.jsonl").write_text(json.dumps({"kind": "trial"}) + "\n")
    with pytest.raises(ConfigError, match="is not a version-1 sweep record"):
        read_record(tmp_path / "other.jsonl")


def test_resuming_refuses_a_sweep_whose_trials_train_differently(tmp_path):
    record = read_record(_record(tmp_path, [_trial(16.69, 0.14213)]))
    check_resumable(record, _config())  # the same sweep
    check_resumable(record, _config(**{"tune.num_samples": 8, "method.eta": 3.0, "train.log_every": 1}))
    with pytest.raises(ConfigError, match=r"train.learning_rate: recorded 0.003, now 0.002.*same preset"):
        check_resumable(record, _config(**{"train.learning_rate": 0.002}))
    with pytest.raises(ConfigError, match="tune.objective"):
        check_resumable(record, _config(**{"tune.objective": "eval/loss/mean"}))


def test_resuming_refuses_points_outside_the_search_space_no_trials_left_and_a_grid(tmp_path):
    record = read_record(_record(tmp_path, [_trial(16.69, 0.14213), _trial(25.0, 0.1420)]))
    with pytest.raises(ConfigError, match=r"eta=16.69, outside this sweep's tune.eta=\[0.5, 10.0\]"):
        check_resumable(record, _config(**{"tune.eta": [0.5, 10.0]}))
    with pytest.raises(ConfigError, match=r"interval=16, outside this sweep's tune.interval=\[8\]"):
        check_resumable(record, _config(**{"tune.interval": [8]}))
    with pytest.raises(ConfigError, match="already holds 2 finished trials and tune.num_samples is 2.*above 2"):
        check_resumable(record, _config(**{"tune.num_samples": 2}))
    with pytest.raises(ConfigError, match="needs tune.searcher optuna or random"):
        check_resumable(record, _config(**{"tune.searcher": "grid"}))


def test_optuna_is_told_the_finished_trials_and_does_not_redraw_them(tmp_path):
    from versatune_mlops.integrations.ray.tuning import optuna_search

    # 8 trials: optuna draws the first 3 at random, so a resumed sampler with the recorded seed would
    # draw the recorded sweep's own next random point again.
    config = _config(**{"tune.num_samples": 8})
    record = read_record(_record(tmp_path, [_trial(16.69, 0.14213), _trial(2.0, 0.1418), _trial(9.0, None, "error")],
                                 config=config))
    points, objectives = told_points(record, config)
    assert set(searched_space(config)) == {"eta", "interval"}
    assert points == [{"eta": 16.69, "interval": 16}, {"eta": 2.0, "interval": 16}] and objectives == [0.14213, 0.1418]

    def first_draw(resumed):
        searcher = optuna_search(config, resumed)
        searcher.set_search_properties("score/multi_domain", "max", param_space(config))
        return searcher, searcher.suggest("t1")

    fresh, fresh_point = first_draw(None)
    resumed, resumed_point = first_draw(record)
    told = resumed._ot_study.trials
    assert [t.params["eta"] for t in told[:2]] == [16.69, 2.0] and [t.value for t in told[:2]] == objectives
    assert len(fresh._ot_study.trials) == 1 and len(told) == 3, "the told trials are completed trials of the study"
    assert resumed_point["eta"] != fresh_point["eta"], "a resumed sampler must not replay the recorded sweep's draws"


def test_the_sweep_table_marks_resumed_trials():
    resumed = _trial(16.69, 0.14213)
    resumed.resumed = True
    table = sweep_table(SweepResult("score/multi_domain", "max", trials=[resumed, _trial(5.0, 0.1415)]))
    rows = table.splitlines()[1:3]
    assert rows[0].endswith("finished (resumed)") and rows[1].endswith("finished")
