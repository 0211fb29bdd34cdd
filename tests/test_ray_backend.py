"""The `ray` MLflow project backend, reached through MLflow's backend loader (entry point
`mlflow.project_backend`): bad configs fail before anything exists, and real jobs on a local Ray head."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow.exceptions import ExecutionException
from mlflow.projects.backend.abstract_backend import AbstractBackend
from mlflow.projects.backend.loader import load_backend
from mlflow.tracking import MlflowClient

from mlflow_server import free_port
from versatune_mlops.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _store(tmp_path, monkeypatch, experiment):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    return uri, MlflowClient().create_experiment(experiment)


def _submit(experiment_id, backend_config, synchronous=True, **parameters):
    return mlflow.projects.run(str(ROOT), "train", parameters={"preset": "tiny", **parameters}, backend="ray",
                               backend_config=backend_config, experiment_id=experiment_id, synchronous=synchronous)


def test_the_ray_backend_is_loaded_through_its_entry_point():
    backend = load_backend("ray")
    assert isinstance(backend, AbstractBackend) and type(backend).__name__ == "RayBackend"


@pytest.mark.parametrize("backend_config, fragment", [
    (None, "needs a backend config with the cluster's address"),
    ({"adress": "http://127.0.0.1:8265"}, "Unknown ray backend config key 'adress'. Did you mean 'address'?"),
    ({"address": "127.0.0.1:8265"}, "must be the cluster's job server URL"),
    ({"address": "http://127.0.0.1:8265", "entrypoint_num_cpus": -1}, "'entrypoint_num_cpus'=-1 must be a number >= 0"),
    ({"address": "http://127.0.0.1:8265", "runtime_env": ["pip"]}, "'runtime_env' must be a mapping"),
    ("UNREACHABLE", "Cannot reach a Ray job server at http://127.0.0.1:"),
])
def test_bad_backend_config_fails_before_any_run_exists(backend_config, fragment, tmp_path, monkeypatch):
    _, experiment_id = _store(tmp_path, monkeypatch, "bad-config")
    if backend_config == "UNREACHABLE":
        backend_config = {"address": f"http://127.0.0.1:{free_port()}"}
    with pytest.raises(ConfigError) as info:
        _submit(experiment_id, backend_config)
    assert fragment in str(info.value)
    assert isinstance(info.value, ExecutionException), "mlflow run prints it as a clean error and exits 1"
    assert MlflowClient().search_runs([experiment_id]) == [], "nothing was created, so nothing is left RUNNING"


@pytest.mark.parametrize("content", [None, '{"address": '])
def test_cli_with_a_missing_or_unparsable_config_file_creates_no_run(content, tmp_path):
    """MLflow itself reads the --backend-config file; it fails naming the file, before the backend runs."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = tmp_path / "ray-config.json"
    if content is not None:
        config.write_text(content)
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri)
    result = subprocess.run([str(BIN / "mlflow"), "run", str(ROOT), "-e", "train", "--backend", "ray",
                             "--backend-config", str(config), "--experiment-name", "no-file"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "ray-config.json" in result.stderr
    experiment = MlflowClient(uri).get_experiment_by_name("no-file")
    assert experiment is None or MlflowClient(uri).search_runs([experiment.experiment_id]) == []


# ----------------------------------------------------------------------------------------------
# A real Ray head on 127.0.0.1, stopped by its own session id (never `ray stop`, which would also
# stop other Ray clusters of this user on the machine)

RAY_PORT_FLAGS = ("--port", "--dashboard-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                  "--metrics-export-port", "--runtime-env-agent-port", "--ray-client-server-port",
                  "--node-manager-port", "--object-manager-port")


def _stop_session(process: subprocess.Popen) -> None:
    """SIGTERM the `ray start --block` leader (it stops what it started), then SIGKILL whatever is left
    in its session: Ray workers get process groups of their own but stay in the session."""
    import psutil

    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    for pid in psutil.pids():
        with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
            if pid != os.getpid() and os.getsid(pid) == process.pid:
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """`ray start --head` with a job server on free loopback ports; yields the job server address."""
    folder = tmp_path_factory.mktemp("ray-head")
    temp_dir = tempfile.mkdtemp(prefix="vt-ray-")  # short: Ray's socket paths must stay under 108 chars
    ports = {flag: free_port() for flag in RAY_PORT_FLAGS}
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", VERSATUNE_CACHE=str(folder / "cache"))
    env.pop("MLFLOW_RUN_ID", None)
    command = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
               "--dashboard-host", "127.0.0.1", "--include-dashboard", "true", "--disable-usage-stats",
               "--temp-dir", temp_dir] + [str(part) for flag, port in ports.items() for part in (flag, port)]
    log_path = folder / "ray-start.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{ports['--dashboard-port']}"
    try:
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{address}/api/version", timeout=2).ok:
                    break
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(1)
        yield address
    finally:
        _stop_session(process)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_mlflow_run_train_on_a_ray_head_logs_into_the_submitting_store(ray_head, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = tmp_path / "ray.json"
    config.write_text(json.dumps({"address": ray_head, "entrypoint_num_cpus": 1}))
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    env.pop("MLFLOW_RUN_ID", None)
    result = subprocess.run([str(BIN / "mlflow"), "run", str(ROOT), "-e", "train", "--backend", "ray",
                             "--backend-config", str(config), "--experiment-name", "on-ray",
                             "-P", "preset=tiny", "-P", "max_steps=4"],
                            env=env, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "multi-domain score" in output, "the job's own output was streamed back"

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("on-ray").experiment_id])
    tags = run.data.tags
    assert run.info.status == "FINISHED"
    assert tags["mlflow.project.backend"] == "ray" and tags["versatune.ray_job_id"] == f"mlflow-{run.info.run_id}"
    assert tags["versatune.ray_job_status"] == "SUCCEEDED"
    assert tags["versatune.method"] == "versatune" and tags["versatune.preset"] == "tiny", "the job logged into this run"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval_loss/law")] == [0, 4]
    assert run.data.params["train.max_steps"] == "4"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, "ray_job")}
    assert {"summary.json", "ray_job/job.log"} <= artifacts


@pytest.mark.slow
def test_failed_job_marks_the_run_failed_with_its_last_log_lines(ray_head, tmp_path, monkeypatch):
    _, experiment_id = _store(tmp_path, monkeypatch, "failing")
    with pytest.raises(ExecutionException):
        _submit(experiment_id, {"address": ray_head}, max_steps="0")
    (run,) = MlflowClient().search_runs([experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["versatune.ray_job_status"] == "FAILED"
    assert "train.max_steps=0 must be an integer >= 1" in run.data.tags["versatune.ray_job_error"]
    assert "ray_job/job.log" in {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "ray_job")}


@pytest.mark.slow
def test_a_job_the_cluster_refuses_leaves_the_run_failed_not_running(ray_head, tmp_path, monkeypatch):
    _, experiment_id = _store(tmp_path, monkeypatch, "refused")
    with pytest.raises(ExecutionException, match="Submitting the Ray job to http://127.0.0.1:.* failed"):
        _submit(experiment_id, {"address": ray_head, "runtime_env": {"pip": 5}})
    (run,) = MlflowClient().search_runs([experiment_id])
    assert run.info.status == "FAILED" and "Submitting the Ray job" in run.data.tags["versatune.ray_job_error"]


@pytest.mark.slow
def test_submitted_run_status_follows_the_job_and_cancel_kills_it(ray_head, tmp_path, monkeypatch):
    _, experiment_id = _store(tmp_path, monkeypatch, "cancel")
    submitted = _submit(experiment_id, {"address": ray_head, "wait": False}, synchronous=False, max_steps="100000",
                        method="uniform")
    deadline = time.monotonic() + 120
    while submitted.get_status() != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert submitted.get_status() == "RUNNING"
    submitted.cancel()
    assert submitted.get_status() == "KILLED" and submitted.job_status == "STOPPED"
    assert MlflowClient().get_run(submitted.run_id).info.status == "KILLED"
