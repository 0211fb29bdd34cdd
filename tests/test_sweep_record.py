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
                                                           close_abandoned_runs, read_record, record_callback,
                                                           start_record, sweep_identity, told_points, trial_status)
from versatune_mlops.integrations.ray.tuning import SweepResult

# An Aioli-like sweep: only eta is drawn from a range, the interval from a one-value list.
SWEEP = {"tune.searcher": "optuna", "tune.num_samples": 4, "tune.alpha": [1.0, 1.0], "tune.beta": [1.0, 1.0],
         "tune.eta": [0.5, 30.0], "tune.epsilon": [0.0, 0.0], "tune.interval": [16], "train.max_steps": 64}


def _config(**overrides):
    return load_config("tiny", overrides={**SWEEP, **overrides})


def _trial(eta, objective, status="finished", run_id=None):
    return TrialRecord({"alpha": 1.0, "beta": 1.0, "eta": eta, "epsilon": 0.0, "interval": 16}, objective,
                       run_id or f"run-{eta}", status, steps=64 if status == "finished" else 16)


def _record(tmp_path, trials, baseline=None, config=None, parent_run_id=None):
    path = tmp_path / "out" / RECORD_NAME
    start_record(path, config or _config(), parent_run_id=parent_run_id)
    if baseline is not None:
        append_trial(path, "baseline", baseline)
    for trial in trials:
        append_trial(path, "trial", trial)
    return path


def test_a_record_reads_back_its_trials_and_baseline_marked_as_resumed(tmp_path):
    baseline = TrialRecord({BASELINE_KEY: "uniform", "interval": 16}, 0.14199, "run-b", "finished", steps=64)
    path = _record(tmp_path, [_trial(16.69, 0.14213), _trial(3.0, 0.12, "stopped"), _trial(9.0, None, "error")],
                   baseline=baseline, parent_run_id="sweep-run")
    record = read_record(path.parent)  # the folder finds its record
    assert record.parent_run_id == "sweep-run"
    assert record.path == path and record.identity == sweep_identity(_config())
    assert [(t.params["eta"], t.status) for t in record.trials] == [(16.69, "finished"), (3.0, "stopped"),
                                                                      (9.0, "error")]
    assert all(t.resumed for t in record.trials) and record.baseline.resumed
    assert record.baseline.params == {BASELINE_KEY: "uniform", "interval": 16} and record.baseline.objective == 0.14199
    assert [t.params["eta"] for t in record.counted] == [16.69, 3.0], \
        "finished and early-stopped trials were the sweep's budget and carry over; the failed one does not"


def test_a_resumed_sweep_starts_its_record_with_what_it_carries_over(tmp_path):
    baseline = TrialRecord({BASELINE_KEY: "uniform", "interval": 16}, 0.14199, "run-b", "finished")
    old = read_record(_record(tmp_path, [_trial(16.69, 0.14213), _trial(9.0, None, "error"),
                                         _trial(3.0, 0.12, "stopped")], baseline=baseline))
    new_path = tmp_path / "new" / RECORD_NAME
    start_record(new_path, _config(), old)
    append_trial(new_path, "trial", _trial(5.0, 0.1415))
    new = read_record(new_path)
    assert new.baseline.run_id == "run-b"
    assert [(t.params["eta"], t.status) for t in new.trials] == [(16.69, "finished"), (3.0, "stopped"),
                                                                   (5.0, "finished")], \
        "the errored trial is not carried, the new one follows"


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


def test_a_record_written_before_a_setting_existed_resumes_at_that_settings_default(tmp_path):
    path = _record(tmp_path, [_trial(16.69, 0.14213)])
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    del header["identity"]["method.signal_min_tokens"]  # as in a record an older version wrote
    path.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    record = read_record(path)
    check_resumable(record, _config())
    with pytest.raises(ConfigError, match=r"method.signal_min_tokens: recorded 0, now 500"):
        check_resumable(record, _config(**{"method.signal": "train", "method.signal_min_tokens": 500}))


def test_resuming_refuses_points_outside_the_search_space_no_trials_left_and_a_grid(tmp_path):
    record = read_record(_record(tmp_path, [_trial(16.69, 0.14213), _trial(25.0, 0.1396, "stopped"),
                                            _trial(9.0, None, "error")]))
    with pytest.raises(ConfigError, match=r"eta=16.69, outside this sweep's tune.eta=\[0.5, 10.0\]"):
        check_resumable(record, _config(**{"tune.eta": [0.5, 10.0]}))
    with pytest.raises(ConfigError, match=r"interval=16, outside this sweep's tune.interval=\[8\]"):
        check_resumable(record, _config(**{"tune.interval": [8]}))
    with pytest.raises(ConfigError, match="already holds 2 finished or early-stopped trials and tune.num_samples is "
                                          "2.*above 2"):
        check_resumable(record, _config(**{"tune.num_samples": 2}))
    with pytest.raises(ConfigError, match="needs tune.searcher optuna or random"):
        check_resumable(record, _config(**{"tune.searcher": "grid"}))


def test_optuna_is_told_the_finished_and_stopped_trials_and_does_not_redraw_them(tmp_path):
    from versatune_mlops.integrations.ray.tuning import optuna_search

    # 8 trials: optuna draws the first 3 at random, so a resumed sampler with the recorded seed would
    # draw the recorded sweep's own next random point again.
    config = _config(**{"tune.num_samples": 8})
    record = read_record(_record(tmp_path, [_trial(16.69, 0.14213), _trial(2.0, 0.1397, "stopped"),
                                            _trial(9.0, None, "error")], config=config))
    points, objectives = told_points(record, config)
    assert set(searched_space(config)) == {"eta", "interval"}
    # The stopped trial with the score it was stopped at, as Ray tells optuna within one sweep.
    assert points == [{"eta": 16.69, "interval": 16}, {"eta": 2.0, "interval": 16}] and objectives == [0.14213, 0.1397]

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


def test_how_a_trial_ended_is_decided_in_one_place():
    assert trial_status(errored=True, ended=True, run_status="FAILED") == "error"
    assert trial_status(errored=False, ended=False, run_status="RUNNING") == "interrupted"
    assert trial_status(errored=False, ended=True, run_status="FINISHED") == "finished"
    assert trial_status(errored=False, ended=True, run_status=None) == "finished"
    # Ray ended it without error, yet its run did not finish: the scheduler stopped it.
    assert trial_status(errored=False, ended=True, run_status="RUNNING") == "stopped"
    assert trial_status(errored=False, ended=True, run_status="KILLED") == "stopped"


class _FakeTrial:
    """What the record's callback reads of Ray's Trial."""

    def __init__(self, trial_id, eta, last_result, error=None):
        self.trial_id, self.config = trial_id, {"eta": eta, "interval": 16}
        self.last_result, self._error = last_result, error

    def get_error(self):
        return self._error


def _child_run(client, experiment_id, parent_id, trial_id, status=None, error=None):
    run_id = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent_id, "versatune.trial_id": trial_id,
                                                    **({"versatune.error": error} if error else {})}).info.run_id
    if status is not None:
        client.set_terminated(run_id, status=status)
    return run_id


def test_the_record_callback_classifies_records_and_ends_each_trials_run(tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment_id = client.create_experiment("record-callback")
    parent = client.create_run(experiment_id).info.run_id
    runs = {"done": _child_run(client, experiment_id, parent, "done", "FINISHED"),
            "asha": _child_run(client, experiment_id, parent, "asha"),  # stopped: Ray's SIGTERM left it RUNNING
            "boom": _child_run(client, experiment_id, parent, "boom", "FAILED", error="ValueError: bad batch"),
            "cut": _child_run(client, experiment_id, parent, "cut")}  # running when Ctrl-C came
    path = tmp_path / RECORD_NAME
    start_record(path, _config(), parent_run_id=parent)
    recorder = record_callback(path, "trial", ("eta", "interval"), _config(), experiment_id=experiment_id,
                               parent_run_id=parent)
    score = "score/multi_domain"
    trials = {"done": _FakeTrial("done", 16.7, {score: 0.142, "step": 64}),
              "asha": _FakeTrial("asha", 1.3, {score: 0.1397, "step": 38}),
              "boom": _FakeTrial("boom", 9.0, {}, error="Traceback ...\nRayTaskError: wrapped"),
              "cut": _FakeTrial("cut", 5.0, {score: 0.139, "step": 16})}
    for trial_id in ("done", "asha", "cut", "boom"):
        recorder.on_trial_start(0, [], trials[trial_id])
    recorder.on_trial_result(0, [], trials["done"], {"timestamp": 1700000000})
    recorder.on_trial_result(0, [], trials["done"], {"timestamp": 1700000900})
    recorder.on_trial_complete(0, [], trials["done"])
    recorder.on_trial_complete(0, [], trials["asha"])
    recorder.on_trial_error(0, [], trials["boom"])

    written = read_record(path).trials
    assert [(t.params["eta"], t.status, t.run_id) for t in written] == [
        (16.7, "finished", runs["done"]), (1.3, "stopped", runs["asha"]), (9.0, "error", runs["boom"])]
    assert written[0].started == 1700000000 and written[0].steps == 64 and written[1].objective == 0.1397
    assert written[2].error == "ValueError: bad batch", "the trial's own exception, not Ray's wrapper"

    ended = recorder.trial_records()  # after Tuner.fit returned: the order the trials started
    assert [(t.params["eta"], t.status) for t in ended] == [(16.7, "finished"), (1.3, "stopped"),
                                                            (5.0, "interrupted"), (9.0, "error")]
    status = {k: client.get_run(v).info.status for k, v in runs.items()}
    assert status == {"done": "FINISHED", "asha": "KILLED", "boom": "FAILED", "cut": "KILLED"}
    assert client.get_run(runs["asha"]).data.tags["versatune.stopped_early"] == "asha"
    assert "interrupted" in client.get_run(runs["cut"]).data.tags["versatune.error"]


def test_resuming_a_killed_sweep_ends_the_runs_it_left_running(tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment_id = client.create_experiment("abandoned")
    parent = client.create_run(experiment_id).info.run_id
    done = _child_run(client, experiment_id, parent, "done", "FINISHED")
    running = _child_run(client, experiment_id, parent, "running")
    record = read_record(_record(tmp_path, [_trial(16.69, 0.14213, run_id=done)], parent_run_id=parent))

    assert sorted(close_abandoned_runs(record)) == sorted([parent, running])
    assert [client.get_run(r).info.status for r in (parent, running, done)] == ["KILLED", "KILLED", "FINISHED"]
    assert "abandoned" in client.get_run(running).data.tags["versatune.error"]
    assert close_abandoned_runs(record) == [], "nothing is left running the second time"
    (tmp_path / "other").mkdir()
    foreign = read_record(_record(tmp_path / "other", [], parent_run_id="0123456789abcdef0123456789abcdef"))
    assert close_abandoned_runs(foreign) == [], "a sweep of another tracking store has nothing here to end"
