"""MLflow tracking, registry and the `main` chain, against a throwaway sqlite tracking store."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from versatune_mlops.cli import main
from versatune_mlops.errors import ConfigError
from versatune_mlops.integrations.mlflow.registry import register_best
from versatune_mlops.integrations.mlflow.tracking import configure_tracking, tracked_run

DOMAINS = ["law", "medicine", "finance", "science", "code", "general"]
ROOT = Path(__file__).resolve().parent.parent
FAST = ["--set", "train.max_steps=12", "--set", "method.interval=4", "--set", "train.log_every=3",
        "--set", "probe.num_samples=8", "--set", "train.eval_accuracy=true"]


def _use_store(monkeypatch, folder):
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    configure_tracking(uri)
    return uri


@pytest.fixture
def store(tmp_path, monkeypatch):
    return _use_store(monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One tracked tiny training run shared by the read-only tests below."""
    folder = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _use_store(monkeypatch, folder)
        assert main(["train", "--preset", "tiny", "--experiment", "exp", "--output-dir", str(folder / "out"), *FAST]) == 0
        client = MlflowClient()
        (run,) = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
        yield run


def _steps(client, run_id, key):
    return [m.step for m in client.get_metric_history(run_id, key)]


def _artifacts(client, run_id, path=None):
    found = []
    for item in client.list_artifacts(run_id, path):
        found.extend(_artifacts(client, run_id, item.path) if item.is_dir else [item.path])
    return found


def test_train_run_logs_params_metrics_artifacts_inputs_and_model(trained_run):
    client = MlflowClient()
    run_id = trained_run.info.run_id
    assert trained_run.info.status == "FINISHED"
    params, tags = trained_run.data.params, trained_run.data.tags
    assert params["train.max_steps"] == "12" and params["method.alpha"] == "1.0" and params["model.name"] == "tiny"
    assert tags["versatune.method"] == "versatune" and tags["versatune.mode"] == "fostering"
    assert tags["versatune.preset"] == "tiny" and tags["versatune.domains"] == ",".join(DOMAINS)
    assert "versatune.git_commit" in tags and tags["versatune.model_uri"].startswith("models:/m-")

    for d in DOMAINS:
        assert _steps(client, run_id, f"weight/{d}") == [0, 4, 8], "initial weights, then each re-weighting point"
        assert _steps(client, run_id, f"potential/{d}") == [4, 8]
        assert _steps(client, run_id, f"forgetting/{d}") == [4, 8]
        assert _steps(client, run_id, f"eval_loss/{d}") == [0, 4, 8, 12]
        assert _steps(client, run_id, f"accuracy/{d}") == [0, 12]
        assert _steps(client, run_id, f"share/{d}") == [3, 6, 9, 12]
    for key in ("eval_loss/mean", "eval_loss/worst", "score/multi_domain"):
        assert _steps(client, run_id, key) == [0, 4, 8, 12]
    assert _steps(client, run_id, "train_loss") == [3, 6, 9, 12]
    assert any(k.startswith("system/") for k in trained_run.data.metrics), "system metrics are logged"

    artifacts = set(_artifacts(client, run_id))
    assert {"summary.json", "weight_trajectory.csv", "weight_trajectory.json", "figures/weights.png",
            "figures/eval_loss.png", "data/sizes.json"} <= artifacts
    assert "probe/distribution.json" in artifacts and "probe/distribution.png" in artifacts, "the probe ran inside train"
    assert tags["versatune.probe_estimator"] == "tfidf_logreg"
    metrics = trained_run.data.metrics
    assert 0 <= metrics["probe/other_share"] <= 1 and 0 <= metrics["probe/estimator_accuracy"] <= 1
    samples = json.loads(Path(client.download_artifacts(run_id, "probe/samples.json")).read_text())
    assert samples["columns"] == ["text", *DOMAINS, "other"] and len(samples["data"]) == 8, "one row per probe sample"
    assert all(abs(sum(row[1:]) - 1) < 1e-3 for row in samples["data"]), "each row is on the simplex"

    inputs = [{t.key: t.value for t in i.tags} for i in trained_run.inputs.dataset_inputs]
    assert sorted(i["mlflow.data.context"] for i in inputs) == ["evaluation", "training"]
    assert all(set(json.loads(i["domain_sizes"])) == set(DOMAINS) for i in inputs)


def test_model_round_trips_through_the_registry_alias(trained_run):
    client = MlflowClient()
    registration = register_best("vt-test", experiment_ids=[trained_run.info.experiment_id])
    assert registration.created and registration.version == "1" and registration.run_id == trained_run.info.run_id
    again = register_best("vt-test", experiment_ids=[trained_run.info.experiment_id])
    assert not again.created and again.version == "1"
    assert len(client.search_model_versions("name = 'vt-test'")) == 1, "re-registering creates no duplicate"

    version = client.get_model_version_by_alias("vt-test", "champion")
    assert version.tags["method"] == "versatune" and "metric.score/multi_domain" in version.tags
    model = mlflow.pyfunc.load_model("models:/vt-test@champion")
    (text,) = model.predict(["Write an exam question on law."], params={"max_new_tokens": 8})
    assert isinstance(text, str) and len(text) > len("Write an exam question on law.")


def test_failed_run_is_marked_failed_and_never_registered(store, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "response": "r", "domain": "law"}\nnot json\n')
    code = main(["train", "--preset", "tiny", "--experiment", "broken", "--output-dir", str(tmp_path / "out"),
                 "--set", f"data.source={bad}", "--set", "data.max_examples_per_domain=null"])
    assert code == 2 and "bad.jsonl line 2" in capsys.readouterr().err
    client = MlflowClient()
    experiment_id = client.get_experiment_by_name("broken").experiment_id
    (run,) = client.search_runs([experiment_id])
    assert run.info.status == "FAILED"
    assert "bad.jsonl line 2" in run.data.tags["versatune.error"]
    assert "error.txt" in _artifacts(client, run.info.run_id)
    with pytest.raises(ConfigError, match="No finished run with a logged model"):
        register_best("never", experiment_ids=[experiment_id])
    assert client.search_registered_models("name = 'never'") == []


def test_run_statuses_on_success_error_and_interrupt(store):
    client = MlflowClient()
    with tracked_run(experiment="status", run_name="ok", system_metrics=False) as ok:
        pass
    with pytest.raises(RuntimeError):
        with tracked_run(experiment="status", run_name="boom", system_metrics=False) as failed:
            raise RuntimeError("boom")
    with pytest.raises(KeyboardInterrupt):
        with tracked_run(experiment="status", run_name="ctrl-c", system_metrics=False) as killed:
            raise KeyboardInterrupt
    with pytest.raises(SystemExit):  # what Ray's SIGTERM handler raises in a trial that ASHA stops
        with tracked_run(experiment="status", run_name="sigterm", system_metrics=False) as terminated:
            raise SystemExit(1)
    with pytest.raises(RuntimeError):  # what a trial sees when Ray tears down the Train controller of a stopped trial
        with tracked_run(experiment="status", run_name="stopped", system_metrics=False,
                         told_to_stop=lambda: True) as stopped:
            raise RuntimeError("The actor died unexpectedly")
    assert client.get_run(ok).info.status == "FINISHED"
    assert client.get_run(stopped).info.status == "KILLED"
    assert client.get_run(stopped).data.tags["versatune.error"] == "stopped (RuntimeError on the way out)"
    assert "error.txt" not in _artifacts(client, stopped)
    assert client.get_run(failed).info.status == "FAILED"
    assert client.get_run(failed).data.tags["versatune.error"] == "RuntimeError: boom"
    assert client.get_run(killed).info.status == "KILLED"
    assert client.get_run(terminated).info.status == "KILLED"
    assert client.get_run(terminated).data.tags["versatune.error"] == "terminated (SystemExit 1)"


def test_unreachable_tracking_uri_fails_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    code = main(["train", "--preset", "tiny", "--tracking-uri", "http://127.0.0.1:9", "--output-dir", str(tmp_path / "o")])
    assert code == 2
    assert "cannot be reached" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _mlflow_run(uri, *params, cwd):
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("MLFLOW_RUN_ID", None)
    command = [str(Path(sys.executable).parent / "mlflow"), "run", str(ROOT), "-e", "main", "--env-manager", "local",
               "--experiment-name", "chain", "-P", "preset=tiny", *params]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_main_resumes_after_a_failure_in_its_second_step(store, tmp_path):
    failed = _mlflow_run(store, "-P", "max_steps=0", cwd=tmp_path)
    assert failed.returncode != 0
    assert "train.max_steps=0" in failed.stdout + failed.stderr

    client = MlflowClient()
    experiment_id = client.get_experiment_by_name("chain").experiment_id
    runs = client.search_runs([experiment_id])
    (probe,) = [r for r in runs if r.data.tags.get("mlflow.project.entryPoint") == "probe"]
    assert probe.info.status == "FINISHED"
    assert {r.info.status for r in runs if r.data.tags.get("mlflow.project.entryPoint") == "train"} == {"FAILED"}
    assert client.search_registered_models("name = 'versatune-tiny'") == []

    resumed = _mlflow_run(store, "-P", "max_steps=6", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "reusing finished run " + probe.info.run_id in resumed.stdout + resumed.stderr
    assert "Start the UI: mlflow ui --backend-store-uri" in resumed.stdout
    assert "workflowType=machine_learning" in resumed.stdout  # the runs page, not the GenAI overview

    runs = client.search_runs([experiment_id])
    probes = [r for r in runs if r.data.tags.get("mlflow.project.entryPoint") == "probe"]
    assert [r.info.run_id for r in probes] == [probe.info.run_id], "the probe was not run again"
    (main_run,) = [r for r in runs if r.data.tags.get("mlflow.project.entryPoint") == "main" and r.info.status == "FINISHED"]
    (train_run,) = [r for r in runs if r.data.tags.get("mlflow.project.entryPoint") == "train" and r.info.status == "FINISHED"]
    assert train_run.data.tags["mlflow.parentRunId"] == main_run.info.run_id
    assert train_run.data.params["prior_uri"] == f"runs:/{probe.info.run_id}/probe/distribution.json"
    assert client.get_model_version_by_alias("versatune-tiny", "champion").run_id == train_run.info.run_id


def test_ctrl_c_ends_the_run_killed_with_the_last_checkpoint_logged(store, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, MLFLOW_TRACKING_URI=store)
    command = [sys.executable, "-m", "versatune_mlops.cli", "train", "--preset", "tiny", "--experiment", "interrupt",
               "--output-dir", str(out), "--set", "train.max_steps=100000", "--set", "train.checkpoint_every=2",
               "--set", "method.method=uniform", "--set", "train.eval_accuracy=false"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not list(out.glob("*/checkpoints/step-*")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)
    assert list(out.glob("*/checkpoints/step-*")), "no checkpoint was written"
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output[-2000:]
    assert "resume with --resume" in output

    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("interrupt").experiment_id])
    assert run.info.status == "KILLED"
    logged = _artifacts(client, run.info.run_id)
    assert any(p.startswith("checkpoints/step-") and p.endswith("state.json") for p in logged), logged
    assert "versatune.model_uri" not in run.data.tags


def test_a_local_dataset_source_resolves_without_mlflows_ambiguity_warning(tmp_path):
    import warnings

    from versatune_mlops.integrations.mlflow.tracking import dataset_source

    file = tmp_path / "data.jsonl"
    file.write_text("{}\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = dataset_source(str(file))
    assert not [w for w in caught if "interpreted in multiple ways" in str(w.message)]
    assert type(source).__name__ == "LocalArtifactDatasetSource" and str(file) in json.dumps(source.to_dict())
