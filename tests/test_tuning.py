"""Ray Tune sweeps: search space, concurrency, picking the best, and a real 2-trial sweep."""

import pytest
from mlflow.tracking import MlflowClient

from versatune_mlops.config import load_config
from versatune_mlops.config.schema import sweep_baseline
from versatune_mlops.errors import ConfigError
from versatune_mlops.integrations.ray.reports import ASHA_TIME_ATTR, asha_time
from versatune_mlops.integrations.ray.search_space import (BASELINE_KEY, baseline_params, grid_size, param_space,
                                                           trial_config, trial_name)
from versatune_mlops.integrations.ray.tuning import (FAIL_TRIAL_ENV, SweepResult, TrialRecord, asha_milestones,
                                                     fault_drill, gain_over_baseline, pick_best, trial_concurrency,
                                                     trial_cpus)

DOMAINS = ["law", "medicine", "finance", "science", "code", "general"]


@pytest.mark.parametrize("overrides, fragment", [
    ({"tune.alpha": [2.0, 0.5]}, "tune.alpha=[2.0, 0.5] is an inverted range"),
    ({"tune.beta": [1.0]}, "must be a range [low, high]"),
    ({"tune.epsilon": [0.0, 3.0]}, "leaves the allowed range [0, 1]"),
    ({"tune.interval": []}, "non-empty list of positive step counts"),
    ({"tune.searcher": "bayes"}, "Unknown searcher 'bayes'"),
    ({"tune.objective": "accuracy/law"}, "tune.objective='accuracy/law' is unknown"),
    ({"tune.baseline": "random"}, "tune.baseline='random': Unknown method"),
    ({"tune.baseline": "target_only"}, "tune.baseline='target_only': method='target_only' is an expansion baseline"),
    ({"tune.max_domain_share": [0.3, 1.5]}, "must be a list of shares in (0, 1] (null: no cap)"),
    ({"tune.max_domain_share": [0.3], "method.method": "doremi"}, "this sweep is method='doremi'"),
    ({"tune.max_domain_share": [0.1, 0.3], "data.domains": DOMAINS}, "tune.max_domain_share: 0.1 is below 1/6"),
    ({"method.max_domain_share": 0.15, "data.domains": DOMAINS}, "method.max_domain_share: 0.15 is below 1/6"),
    ({"tune.target_initial_share": [0.5]}, "tunes the target's starting share in expansion mode"),
    ({"tune.target_initial_share": [0.5, 0.95], "method.mode": "expansion", "method.target": "law"},
     "must be a list of shares in (0, method.target_max_share=0.9]"),
])
def test_bad_search_space_is_rejected_before_ray_starts(overrides, fragment):
    with pytest.raises(ConfigError) as info:
        load_config("tiny", overrides=overrides)
    assert fragment in str(info.value)


def test_grid_size_and_concurrency_follow_the_config_and_the_cluster():
    config = load_config("tiny", overrides={"tune.searcher": "grid", "tune.grid_points": 2, "tune.interval": [5, 10],
                                            "tune.epsilon": [0.0, 0.0], "tune.workers_per_trial": 1,
                                            "tune.asha": False})
    assert grid_size(config) == 2 * 2 * 2 * 1 * 2  # a degenerate range contributes one value
    assert trial_concurrency(config, cluster_cpus=2) == 1, "trial driver + one Train worker fill both CPUs"
    assert trial_concurrency(config, cluster_cpus=16) == 8
    assert trial_concurrency(config, cluster_cpus=16, cluster_memory_gb=7) == 3, "2 GB per tiny trial"
    assert trial_concurrency(config, cluster_cpus=16, cluster_gpus=2) == 2, "one GPU per Train worker"
    smollm2 = load_config("smollm2", overrides={"tune.workers_per_trial": 0})
    assert trial_concurrency(smollm2, cluster_cpus=16, cluster_memory_gb=16) == 1, "12 GB per SmolLM2 trial"
    sized = load_config("tiny", overrides={"tune.memory_per_trial_gb": 0.5})
    assert trial_concurrency(sized, cluster_cpus=16, cluster_memory_gb=2) == 4


def test_the_baseline_is_uniform_mixing_for_fostering_and_target_plus_uniform_for_expansion():
    assert sweep_baseline(load_config("tiny")) == "uniform"
    expansion = load_config("tiny", overrides={"method.mode": "expansion", "method.target": "law"})
    assert sweep_baseline(expansion) == "target_uniform"
    assert sweep_baseline(load_config("tiny", overrides={"tune.baseline": "size_proportional"})) == "size_proportional"
    assert sweep_baseline(load_config("tiny", overrides={"tune.baseline": None})) is None
    assert baseline_params(load_config("tiny", overrides={"tune.interval": [4, 8]})) == {BASELINE_KEY: "uniform", "interval": 8}
    assert baseline_params(load_config("tiny", overrides={"tune.baseline": None})) is None


def test_the_baseline_run_mixes_by_its_method_and_a_trial_by_its_coefficients_and_cap():
    base = load_config("tiny", overrides={"method.max_domain_share": 0.5,
                                          "tune.max_domain_share": [0.3, None]}).to_dict()
    baseline = trial_config(base, {BASELINE_KEY: "uniform", "interval": 8})
    assert (baseline.method.method, baseline.method.max_domain_share, baseline.method.interval) == ("uniform", None, 8)
    assert baseline.tune.max_domain_share == []  # a cap dimension would not validate on uniform mixing
    assert trial_name({BASELINE_KEY: "uniform", "interval": 8}) == "baseline-uniform"
    params = {"alpha": 1.5, "beta": 0.5, "eta": 2.0, "epsilon": 0.05, "interval": 4, "max_domain_share": 0.3}
    trial = trial_config(base, params)
    assert trial.method.method == "versatune" and trial.method.max_domain_share == 0.3
    assert (trial.method.alpha, trial.method.beta, trial.method.eta, trial.method.interval) == (1.5, 0.5, 2.0, 4)
    assert trial_name(params) == "trial-a1.50-b0.50-e2.00-s0.05-k4-cap0.30"
    uncapped = trial_config(base, {**params, "max_domain_share": None})
    assert uncapped.method.max_domain_share is None
    assert trial_config(base, {k: v for k, v in params.items() if k != "max_domain_share"}).method.max_domain_share == 0.5
    expansion = load_config("tiny", overrides={"method.mode": "expansion", "method.target": "law"}).to_dict()
    grown = {**{k: v for k, v in params.items() if k != "max_domain_share"}, "target_initial_share": 0.7}
    assert trial_config(expansion, grown).method.target_initial_share == 0.7
    assert trial_name(grown) == "trial-a1.50-b0.50-e2.00-s0.05-k4-init0.70"
    assert trial_config(expansion, {BASELINE_KEY: "target_uniform", "interval": 4}).method.method == "target_uniform"


def test_the_share_cap_joins_the_search_space_only_when_values_are_listed():
    plain = load_config("tiny", overrides={"tune.searcher": "grid", "tune.grid_points": 2, "tune.interval": [5]})
    assert "max_domain_share" not in param_space(plain)
    capped = load_config("tiny", overrides={"tune.searcher": "grid", "tune.grid_points": 2, "tune.interval": [5],
                                            "tune.max_domain_share": [0.25, 0.3, None]})
    assert param_space(capped)["max_domain_share"] == {"grid_search": [0.25, 0.3, None]}
    assert grid_size(capped) == 3 * grid_size(plain)
    optuna = load_config("tiny", overrides={"tune.max_domain_share": [0.25, 0.3]})
    assert sorted(param_space(optuna)["max_domain_share"].categories) == [0.25, 0.3]


def test_gain_over_the_baseline_is_positive_when_better_in_the_objectives_direction():
    assert gain_over_baseline(0.11, 0.10, "max") == pytest.approx(0.10)
    assert gain_over_baseline(0.09, 0.10, "max") == pytest.approx(-0.10)
    assert gain_over_baseline(1.8, 2.0, "min") == pytest.approx(0.10), "a lower loss is a gain"
    assert gain_over_baseline(2.2, 2.0, "min") == pytest.approx(-0.10)
    for objective, baseline in ((None, 0.1), (0.1, None), (float("nan"), 0.1), (0.1, 0.0)):
        assert gain_over_baseline(objective, baseline, "max") is None


def test_the_sweep_table_shows_the_gain_over_the_baseline_and_says_when_no_trial_beats_it():
    from versatune_mlops.cli.commands import sweep_table

    params = {"alpha": 1.0, "beta": 1.0, "eta": 2.0, "epsilon": 0.0, "interval": 16}
    losing = SweepResult("score/multi_domain", "max", trials=[
        TrialRecord({**params, "max_domain_share": 0.3}, 0.14184, "a", "finished", gain=-0.001),
        TrialRecord({**params, "max_domain_share": None}, 0.14099, "b", "finished", gain=-0.007),
        TrialRecord({**params, "max_domain_share": 0.45}, None, "c", "error", error="ValueError: boom")],
        baseline=TrialRecord({BASELINE_KEY: "uniform", "interval": 16}, 0.14199, "u", "finished"))
    losing.best = pick_best(losing.trials, "max")
    table = sweep_table(losing)
    lines = table.splitlines()
    assert "cap" in lines[0] and "vs uniform" in lines[0]
    assert lines[1].split()[5:8] == ["0.300", "0.14184", "-0.10%"]
    assert lines[2].split()[5:8] == ["none", "0.14099", "-0.70%"]
    assert lines[3].split()[5:8] == ["0.450", "-", "-"]
    assert "Trial c failed: ValueError: boom" in table
    assert "Baseline (uniform): score/multi_domain = 0.14199 (run u)" in table
    assert "Warning: no trial beat the uniform baseline (best -0.10%)" in table
    winning = SweepResult("score/multi_domain", "max", trials=[TrialRecord(params, 0.15, "a", "finished", gain=0.056)],
                          baseline=losing.baseline)
    winning.best = winning.trials[0]
    assert winning.beaten() is True and "Warning" not in sweep_table(winning)
    without = SweepResult("score/multi_domain", "max", trials=[TrialRecord(params, 0.15, "a", "finished")])
    without.best = without.trials[0]
    assert without.beaten() is None and "vs" not in sweep_table(without).splitlines()[0]


def test_a_trial_without_train_workers_gets_its_share_of_the_cpus():
    in_process = load_config("smollm2", overrides={"tune.workers_per_trial": 0})
    one_at_a_time = trial_concurrency(in_process, cluster_cpus=2, cluster_memory_gb=20)
    assert one_at_a_time == 1
    assert trial_cpus(in_process, cluster_cpus=2, concurrency=one_at_a_time) == 2, "the one trial uses both CPUs"
    assert trial_cpus(in_process, cluster_cpus=16, concurrency=3) == 5
    assert trial_cpus(in_process, cluster_cpus=2, concurrency=4) == 1, "never less than one CPU"
    with_workers = load_config("tiny", overrides={"tune.workers_per_trial": 2})
    assert trial_cpus(with_workers, cluster_cpus=16, concurrency=5) == 1, "the driver only; workers ask for their own"


def test_asha_compares_trials_at_equal_steps_whatever_their_interval():
    config = load_config("tiny", overrides={"tune.interval": [8, 16], "tune.grace_intervals": 1, "train.max_steps": 64})
    # Interval 16 updates first at step 16; one interval later is step 32, and a trial with interval 8
    # is compared there too (it reports at step 32 as well), not at its own third report (step 16).
    assert asha_milestones(config) == {"grace_period": 32, "max_t": 64}
    single = load_config("tiny", overrides={"tune.interval": [2], "tune.grace_intervals": 2, "train.max_steps": 10})
    assert asha_milestones(single) == {"grace_period": 6, "max_t": 10}
    # The final evaluation carries no ASHA time, so ASHA never stops a trial that has run every step.
    assert asha_time(6, 10) == {ASHA_TIME_ATTR: 6}
    assert asha_time(10, 10) == {}


def test_best_trial_is_picked_among_finished_trials_only():
    trials = [TrialRecord({"alpha": 0}, 0.9, "a", "error", "boom"), TrialRecord({"alpha": 1}, 0.5, "b", "finished"),
              TrialRecord({"alpha": 2}, 0.7, "c", "finished"), TrialRecord({"alpha": 3}, 0.8, "d", "stopped")]
    assert pick_best(trials, "max").run_id == "c"
    assert pick_best(trials, "min").run_id == "b"
    assert pick_best([trials[0]], "max") is None


@pytest.mark.parametrize("value", ["gamma=1", "alpha=", "alpha=one", "alpha=nan"])
def test_a_malformed_fault_drill_is_rejected(value, monkeypatch):
    monkeypatch.setenv(FAIL_TRIAL_ENV, value)
    with pytest.raises(ConfigError, match="must look like PARAM=VALUE"):
        fault_drill()


def _alpha_grid_sweep(tmp_path, *, alpha, eta, interval, max_steps, asha, workers_per_trial, baseline=None):
    """A 3-point grid over alpha on the tiny model, the prior given (no probe), no models logged
    (and no baseline run unless asked); returns the sweep's result and its parent run id."""
    import mlflow

    from versatune_mlops.integrations.mlflow.tracking import configure_tracking, tracked_run
    from versatune_mlops.integrations.ray.tuning import run_sweep

    uri = configure_tracking(f"sqlite:///{tmp_path / 'mlflow.db'}")
    config = load_config("tiny", overrides={
        "tune.searcher": "grid", "tune.grid_points": 3, "tune.alpha": alpha, "tune.beta": [1.0, 1.0],
        "tune.eta": [eta, eta], "tune.epsilon": [0.0, 0.0], "tune.interval": [interval], "tune.asha": asha,
        "tune.workers_per_trial": workers_per_trial, "tune.log_models": False, "train.max_steps": max_steps,
        "train.eval_accuracy": False, "method.prior": {d: 1 / len(DOMAINS) for d in DOMAINS}, "tune.baseline": baseline})
    with tracked_run(experiment="sweep", run_name="sweep", system_metrics=False) as parent:
        result = run_sweep(config, parent_run_id=parent, experiment_id=mlflow.get_run(parent).info.experiment_id,
                           tracking_uri=uri, output_dir=tmp_path / "out")
    return result, parent


@pytest.mark.slow
def test_a_failing_trial_is_reported_and_the_sweep_finishes_with_the_others(tmp_path, monkeypatch):
    monkeypatch.setenv(FAIL_TRIAL_ENV, "alpha=1.0")
    # A 3-point grid over alpha, in-process trials.
    result, parent = _alpha_grid_sweep(tmp_path, alpha=[0.0, 2.0], eta=1.0, interval=4, max_steps=8, asha=False,
                                       workers_per_trial=0, baseline="uniform")
    client = MlflowClient()
    # The drill selects by alpha; the baseline run has no alpha, so it runs normally and every trial
    # that reported has its gain over it.
    assert result.baseline.status == "finished" and result.baseline.objective is not None
    baseline_run = client.get_run(result.baseline.run_id)
    assert baseline_run.data.tags["versatune.sweep_role"] == "baseline" and baseline_run.data.params["method.method"] == "uniform"
    for trial in result.trials:
        assert trial.gain == pytest.approx(gain_over_baseline(trial.objective, result.baseline.objective, "max"))
    by_alpha = {t.params["alpha"]: t for t in result.trials}
    assert sorted(by_alpha) == [0.0, 1.0, 2.0]
    failed, finished = by_alpha[1.0], [by_alpha[0.0], by_alpha[2.0]]
    assert failed.status == "error" and failed.error.startswith("InjectedTrialFault: fault drill")
    assert failed.objective is not None, "it reported its final evaluation before raising, so only its status excludes it"
    failed_run = client.get_run(failed.run_id)
    assert failed_run.info.status == "FAILED" and failed_run.data.tags["versatune.error"] == failed.error
    assert "error.txt" in {a.path for a in client.list_artifacts(failed.run_id)}
    for trial in finished:
        assert trial.status == "finished" and client.get_run(trial.run_id).info.status == "FINISHED"
    assert result.best is max(finished, key=lambda t: t.objective)
    parent_run = client.get_run(parent)
    assert parent_run.info.status == "FINISHED"
    assert result.baseline.run_id not in {t.run_id for t in result.trials}, "the baseline is never a candidate"


@pytest.mark.slow
def test_asha_stops_a_trial_that_runs_its_own_torch_trainer_and_later_trials_still_run(tmp_path):
    """The placement-group leak that made us refuse ASHA with per-trial TorchTrainers: when ASHA
    stopped such a trial, its trainer's CPUs stayed reserved and the next trial waited forever.
    Two CPUs, one trial at a time (driver + one Train worker): a leaked CPU would hang the sweep."""
    # Grid order is fixed and the runs are seeded, so which trials ASHA stops is the same every time:
    # at its one rung (step 4) alpha=0 scores best and alpha=10 and 20, which push the weights towards
    # one domain, each score below the trials before them, so ASHA stops trials 2 and 3.
    result, _ = _alpha_grid_sweep(tmp_path, alpha=[0.0, 20.0], eta=10.0, interval=2, max_steps=10, asha=True,
                                  workers_per_trial=1)
    trials = sorted(result.trials, key=lambda t: t.started)
    assert len(trials) == 3 and all(t.status in ("finished", "stopped") for t in trials), [t.status for t in trials]
    stopped = [i for i, t in enumerate(trials) if t.status == "stopped"]
    assert stopped and stopped[0] < len(trials) - 1, f"ASHA must stop a trial before the last: {[t.status for t in trials]}"
    later = trials[stopped[0] + 1:]
    assert all(t.steps is not None and t.steps > 0 for t in later), "trials after the stopped one started and trained"
    assert any(t.status == "finished" and t.steps == 10 for t in trials)
    client = MlflowClient()
    statuses = {client.get_run(t.run_id).info.status for t in trials}
    assert "RUNNING" not in statuses and statuses <= {"FINISHED", "KILLED"}
    for t in trials:
        if t.status == "stopped":
            tags = client.get_run(t.run_id).data.tags
            assert tags["versatune.stopped_early"] == "asha"
            assert t.steps < 10
            # Tearing the trial down kills its Train controller mid-fit; the ActorDiedError that
            # raises in the trial is the stop's doing and must not end its run FAILED (it raced the
            # driver's KILLED and sometimes won).
            assert tags.get("versatune.error", "stopped").startswith(("stopped", "terminated")), tags["versatune.error"]


@pytest.mark.slow
def test_two_trial_sweep_creates_child_runs_and_registers_the_best(tmp_path, monkeypatch):
    from versatune_mlops.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(["tune", "--preset", "tiny", "--num-trials", "2", "--experiment", "sweep", "--model-name", "vt-sweep",
                 "--output-dir", str(tmp_path / "out"), "--set", "train.max_steps=10", "--set", "tune.interval=[5]",
                 "--set", "probe.num_samples=8", "--set", "train.eval_accuracy=false",
                 # Each trial builds its own TorchTrainer (the Train V2 pattern).
                 "--set", "tune.workers_per_trial=1", "--set", "tune.asha=false"]) == 0
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    (baseline,) = [r for r in children if r.data.tags["versatune.sweep_role"] == "baseline"]
    children = [r for r in children if r.data.tags["versatune.sweep_role"] == "trial"]
    assert parent.info.status == "FINISHED" and len(children) == 2
    # The uniform baseline ran with the trials' budget; the parent has its score and the best trial's gain.
    assert baseline.info.status == "FINISHED" and baseline.data.params["method.method"] == "uniform"
    assert "versatune.model_uri" not in baseline.data.tags, "the baseline logs no model, so it is never registered"
    assert parent.data.tags["versatune.baseline_run"] == baseline.info.run_id
    objective = "score/multi_domain"
    assert parent.data.metrics[f"baseline/{objective}"] == pytest.approx(baseline.data.metrics[objective])
    best_score = parent.data.metrics[f"best/{objective}"]
    assert parent.data.metrics["best/gain_vs_baseline"] == pytest.approx(
        (best_score - baseline.data.metrics[objective]) / baseline.data.metrics[objective])
    assert parent.data.tags["versatune.best_beats_baseline"] == str(best_score > baseline.data.metrics[objective]).lower()
    for child in children:
        assert child.info.status == "FINISHED"
        assert {"method.alpha", "method.beta", "method.eta", "method.epsilon", "method.interval"} <= set(child.data.params)
        assert [m.step for m in client.get_metric_history(child.info.run_id, "weight/law")] == [0, 5]
        assert [m.step for m in client.get_metric_history(child.info.run_id, "score/multi_domain")] == [0, 5, 10]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)} | {
        a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert {"trials.json", "figures/objective_vs_alpha_beta.png"} <= artifacts
    best = parent.data.tags["versatune.best_run"]
    assert best in {c.info.run_id for c in children}
    assert client.get_model_version_by_alias("vt-sweep", "champion").run_id == best


@pytest.mark.slow
def test_mlflow_run_tune_entry_point_on_the_tiny_preset(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("MLFLOW_RUN_ID", None)
    result = subprocess.run([str(Path(sys.executable).parent / "mlflow"), "run", str(root), "-e", "tune", "--env-manager",
                             "local", "--experiment-name", "tune-entry", "-P", "preset=tiny",
                             "-P", f"output_dir={tmp_path / 'out'}"],
                            env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("tune-entry").experiment_id])
    (sweep,) = [r for r in runs if r.data.tags.get("mlflow.project.entryPoint") == "tune"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep.info.run_id]
    trials = [r for r in children if r.data.tags["versatune.sweep_role"] == "trial"]
    assert sweep.info.status == "FINISHED" and len(trials) == 4  # tune.num_samples of the preset's defaults
    assert [r.info.status for r in children if r.data.tags["versatune.sweep_role"] == "baseline"] == ["FINISHED"]
    assert {r.info.status for r in trials} <= {"FINISHED", "KILLED"}, "ASHA-stopped trials end KILLED, never RUNNING"
    assert client.get_model_version_by_alias("versatune-tiny", "champion").run_id == sweep.data.tags["versatune.best_run"]


def test_optuna_models_the_trials_after_a_third_of_them_not_after_its_default_ten():
    from versatune_mlops.integrations.ray.tuning import optuna_search, startup_trials

    def startup(**overrides):
        return startup_trials(load_config("tiny", overrides={f"tune.{k}": v for k, v in overrides.items()}))

    assert [startup(num_samples=n) for n in (1, 4, 8, 20, 30, 100)] == [2, 2, 3, 7, 10, 10]
    assert startup(num_samples=8, optuna_startup_trials=5) == 5
    searcher = optuna_search(load_config("tiny", overrides={"tune.num_samples": 8, "tune.seed": 3}))
    assert searcher._sampler._n_startup_trials == 3  # Ray's own default sampler would wait for 10
    with pytest.raises(ConfigError, match="tune.optuna_startup_trials=0 must be a number of trials >= 1"):
        load_config("tiny", overrides={"tune.optuna_startup_trials": 0})


@pytest.mark.slow
def test_ctrl_c_ends_a_sweep_with_what_finished_and_resume_from_its_record_runs_the_rest(tmp_path, monkeypatch):
    """Ctrl-C once the first trial is recorded: the command exits 130, the sweep's run ends KILLED
    with no run left RUNNING and nothing registered; resuming from its record reuses the baseline,
    counts the finished trials and runs only the rest."""
    import json
    import os
    import signal
    import threading
    import time

    from versatune_mlops.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    sweep = ["tune", "--preset", "tiny", "--searcher", "optuna", "--num-trials", "3", "--experiment", "sweep",
             "--model-name", "vt-resume", "--output-dir", str(tmp_path / "out"), "--set", "train.max_steps=10",
             "--set", "tune.interval=[5]", "--set", "probe.num_samples=8", "--set", "train.eval_accuracy=false",
             "--set", "tune.asha=false", "--set", "tune.eta=[0.5,5]"]

    def recorded(role):
        return [line for path in (tmp_path / "out").glob("*/sweep_record.jsonl")
                for line in map(json.loads, path.read_text().splitlines()) if line["kind"] == role]

    def interrupt_after_the_first_trial():
        deadline = time.time() + 600
        while not recorded("trial") and time.time() < deadline:
            time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)  # Ray's handler, in the main thread, ends the sweep

    threading.Thread(target=interrupt_after_the_first_trial, daemon=True).start()
    assert main(sweep) == 130
    client = MlflowClient()
    experiment = client.get_experiment_by_name("sweep").experiment_id
    (first,) = [r for r in client.search_runs([experiment]) if "mlflow.parentRunId" not in r.data.tags]
    assert first.info.status == "KILLED"
    runs = client.search_runs([experiment])
    assert "RUNNING" not in {r.info.status for r in runs}
    assert not client.search_registered_models(), "an interrupted sweep registers nothing"
    done = [t for t in recorded("trial") if t["status"] == "finished"]
    assert 1 <= len(done) < 3 and len(recorded("baseline")) == 1
    (record,) = (tmp_path / "out").glob("*/sweep_record.jsonl")

    assert main([*sweep, "--resume-from", str(record)]) == 0
    (second,) = [r for r in client.search_runs([experiment])
                 if "mlflow.parentRunId" not in r.data.tags and r.info.run_id != first.info.run_id]
    children = [r for r in client.search_runs([experiment])
                if r.data.tags.get("mlflow.parentRunId") == second.info.run_id]
    assert second.info.status == "FINISHED" and second.data.tags["versatune.resumed_from"] == str(record)
    assert all(c.data.tags["versatune.sweep_role"] == "trial" for c in children), "the baseline is reused"
    assert len(children) == 3 - len(done), "only the trials left run"
    assert second.data.metrics["trials/resumed"] == len(done) and second.data.metrics["trials/finished"] == 3
    (new_record,) = [p for p in (tmp_path / "out").glob("*/sweep_record.jsonl") if p != record]
    lines = [json.loads(line) for line in new_record.read_text().splitlines()]
    assert [line["kind"] for line in lines] == ["sweep", "baseline", "trial", "trial", "trial"]
    assert {line["run_id"] for line in lines[2:2 + len(done)]} == {t["run_id"] for t in done}
    assert client.get_model_version_by_alias("vt-resume", "champion").run_id == second.data.tags["versatune.best_run"]
