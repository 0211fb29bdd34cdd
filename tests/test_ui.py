"""End to end: `mlflow run . -e main` against a real tracking server, checked by REST and in the browser.

The MLflow server runs on loopback with a sqlite store in the test's tmp dir; headless Chromium
(Debian's /usr/bin/chromium, installed by `make browser`) renders the experiment's runs page.
"""

from __future__ import annotations

import html
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlflow_server import api, mlflow_server, render_dom, require_chromium, stop_process_group

REPO = Path(__file__).resolve().parent.parent
DOMAINS = ("law", "medicine", "finance", "science", "code", "general")
EXPERIMENT = "ui-test"
MODEL_NAME = "versatune-tiny"
MAIN_TIMEOUT_S = 15 * 60


def _run_env(tracking_uri: str) -> dict:
    env = dict(os.environ)
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    bin_dir = str(Path(sys.executable).parent)  # the entry points call `versatune` and `mlflow` by name
    env.update(
        MLFLOW_TRACKING_URI=tracking_uri, MLFLOW_DISABLE_TELEMETRY="true", HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0", PATH=bin_dir + os.pathsep + env.get("PATH", ""),
    )
    return env


def _copy_project(dest: Path) -> Path:
    """A copy of the MLflow Project: `mlflow run` works in the project folder, so outputs land in the copy."""
    shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(
        ".venv", "outputs", "mlruns", "mlartifacts", "mlflow.db", "ray_results", ".pytest_cache", "__pycache__",
        "*.egg-info", ".cache", "build"))
    return dest


def _run_main(project: Path, tracking_uri: str, log_path: Path) -> tuple[int, str]:
    cmd = [str(Path(sys.executable).parent / "mlflow"), "run", str(project), "-e", "main", "--env-manager", "local",
           "-P", "preset=tiny", "--experiment-name", EXPERIMENT]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=log_path.parent, env=_run_env(tracking_uri), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=MAIN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            stop_process_group(proc)  # step processes started by `main` share the group
    tail = log_path.read_text(errors="replace")[-6000:]
    if timed_out:
        tail = f"(timed out after {MAIN_TIMEOUT_S} s and was stopped)\n{tail}"
    return proc.returncode, tail


def _tags(run: dict) -> dict:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def _artifact_files(url: str, run_id: str, path: str = "") -> list[str]:
    """Every artifact file of a run, listed recursively through the server."""
    params = {"run_id": run_id, "path": path} if path else {"run_id": run_id}
    files = []
    for entry in api(url, "artifacts/list", **params).get("files", []):
        if entry.get("is_dir"):
            files.append(entry["path"] + "/")
            files.extend(_artifact_files(url, run_id, entry["path"]))
        else:
            files.append(entry["path"])
    return files


def check_runs(url: str, experiment_id: str) -> dict:
    """A main run and its probe/train children, all FINISHED; returns the runs' REST records by entry point."""
    runs = api(url, "runs/search", method="POST", experiment_ids=[experiment_id], max_results=1000).get("runs", [])
    assert len(runs) >= 3, f"expected a main run and child runs, got {len(runs)} run(s)"
    by_entry: dict = {}
    for run in runs:
        by_entry.setdefault(_tags(run).get("mlflow.project.entryPoint"), []).append(run)
    counts = {k: len(v) for k, v in by_entry.items()}
    for step in ("main", "probe", "train"):
        assert len(by_entry.get(step, [])) == 1, f"expected one {step} run; runs by entry point: {counts}"
    main = by_entry["main"][0]
    assert "mlflow.parentRunId" not in _tags(main)
    for run in runs:
        name = _tags(run).get("mlflow.runName")
        assert run["info"]["status"] == "FINISHED", f"run {name!r} is {run['info']['status']}"
        if run is not main:
            assert _tags(run).get("mlflow.parentRunId") == main["info"]["run_id"], (
                f"run {name!r} ({run['info']['run_id']}) is not a child of the main run")
    return {"all": runs, **{step: by_entry[step][0] for step in ("main", "probe", "train")}}


def check_train_metrics(url: str, train_id: str) -> None:
    for key in [f"weight/{d}" for d in DOMAINS] + ["eval_loss/mean"]:
        history = api(url, "metrics/get-history", run_id=train_id, metric_key=key).get("metrics", [])
        assert history, f"the train run has no history for {key}"
        if key.startswith("weight/"):
            steps = {m.get("step", 0) for m in history}
            assert len(steps) > 1, f"{key} was logged at only step(s) {sorted(steps)}"


def check_artifacts(url: str, train_id: str, probe_id: str) -> None:
    train_files = _artifact_files(url, train_id)
    assert "summary.json" in train_files, f"train artifacts: {train_files}"
    assert any(f.startswith("figures/") and not f.endswith("/") for f in train_files), (
        f"the train run has no figures: {train_files}")
    probe_files = _artifact_files(url, probe_id)
    assert any(f.endswith("distribution.json") for f in probe_files), f"probe artifacts: {probe_files}"


def check_registry(url: str, train_id: str) -> None:
    version = api(url, "registered-models/alias", name=MODEL_NAME, alias="champion")["model_version"]
    assert version["run_id"] == train_id, (
        f"{MODEL_NAME}@champion is version {version['version']} of run {version['run_id']}, not the train run {train_id}")


def check_ui(url: str, experiment_id: str, runs: list, screenshot: Path) -> None:
    """The runs page lists every run by name, linked to its run page.

    Sorting by name lists the children flat; the default (date) order nests them, collapsed, under
    the main run. The bare experiment URL opens MLflow 3's GenAI overview, not the runs table.
    """
    page = f"{url}/#/experiments/{experiment_id}/runs?orderByKey=attributes.run_name&orderByAsc=true"
    dom = render_dom(page, screenshot=screenshot)
    for run in runs:
        name, run_id = _tags(run).get("mlflow.runName"), run["info"]["run_id"]
        assert name, f"run {run_id} has no name"
        assert f'href="#/experiments/{experiment_id}/runs/{run_id}"' in dom and f">{html.escape(name)}<" in dom, (
            f"run {name!r} ({run_id}) is not on the rendered runs page {page} (screenshot: {screenshot})")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{screenshot} is not a PNG"


@pytest.mark.slow
def test_main_entry_point_is_tracked_registered_and_shown_in_the_ui(tmp_path):
    require_chromium()  # fail before the long run, not after it
    with mlflow_server(tmp_path / "server") as url:
        workdir = tmp_path / "work"
        workdir.mkdir()
        project = _copy_project(tmp_path / "project")
        rc, tail = _run_main(project, url, workdir / "mlflow-run.log")
        assert rc == 0, f"`mlflow run -e main -P preset=tiny` failed with exit code {rc}:\n{tail}"

        experiment_id = api(url, "experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]["experiment_id"]
        runs = check_runs(url, experiment_id)
        train_id, probe_id = runs["train"]["info"]["run_id"], runs["probe"]["info"]["run_id"]
        check_train_metrics(url, train_id)
        check_artifacts(url, train_id, probe_id)
        check_registry(url, train_id)
        check_ui(url, experiment_id, runs["all"], tmp_path / "experiment-runs.png")


def test_missing_chromium_fails_with_the_install_hint(monkeypatch, tmp_path):
    import mlflow_server as helpers

    monkeypatch.setattr(helpers, "CHROMIUM", tmp_path / "no-chromium")
    with pytest.raises(pytest.fail.Exception, match="make browser"):
        helpers.render_dom("http://127.0.0.1:9/")


def _live_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are still running (zombies waiting for a reaper do not count)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def test_stop_process_group_ends_the_whole_group():
    proc = subprocess.Popen(["bash", "-c", "sleep 300 & sleep 300 & wait"], start_new_session=True)
    deadline = time.monotonic() + 5
    while len(_live_members(proc.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_live_members(proc.pid)) == 3
    stop_process_group(proc, timeout=5)
    assert proc.returncode is not None
    deadline = time.monotonic() + 5
    while _live_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _live_members(proc.pid) == []


@pytest.mark.slow  # needs Chromium (`make browser`), which `make test-fast` does not install
def test_render_dom_runs_the_page_script_and_saves_a_screenshot(tmp_path):
    require_chromium()
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text(
        "<html><body><div id=app></div><script>"
        "setTimeout(() => { document.getElementById('app').textContent = 'rendered-by-script'; }, 2000);"
        "</script></body></html>")
    server = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1"],
                              cwd=tmp_path / "site", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    try:
        line = server.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N (...)"
        port = int(line.split(" port ")[1].split()[0])
        screenshot = tmp_path / "page.png"
        dom = render_dom(f"http://127.0.0.1:{port}/", screenshot=screenshot, budget_ms=5000)
    finally:
        stop_process_group(server, timeout=5)
    assert "rendered-by-script" in dom
    assert screenshot.stat().st_size > 0
