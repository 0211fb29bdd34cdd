"""End to end: `mlflow run . -e main` against a real tracking server, checked by REST and in the browser.

The MLflow server runs on loopback with a sqlite store in the test's tmp dir; Selenium drives headless
Chromium (Debian's chromium and chromium-driver, installed by `make browser`) through what a user looks
at: the runs page, the train run's charts, the main run's children and the registered model's alias.
A failed check leaves a screenshot and the page's DOM in outputs/test-artifacts/ui/ ($TEST_ARTIFACTS_DIR).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from browser import TRAINING_VIEW, Browser, artifacts_dir, browser, filter_charts, rendered_charts, require_browser
from mlflow_server import api, mlflow_server, stop_process_group

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


def check_registry(url: str, train_id: str) -> str:
    """The champion alias points at the train run's model; returns its version."""
    version = api(url, "registered-models/alias", name=MODEL_NAME, alias="champion")["model_version"]
    assert version["run_id"] == train_id, (
        f"{MODEL_NAME}@champion is version {version['version']} of run {version['run_id']}, not the train run {train_id}")
    return version["version"]


def check_runs_page(page: Browser, url: str, experiment_id: str, runs: list, screenshot: Path) -> None:
    """The runs table (model-training view) lists every run by name, linked to its run page.

    Sorting by name lists the children flat; the default (date) order nests them, collapsed, under
    the main run.
    """
    page.open(f"{url}/#/experiments/{experiment_id}/runs?{TRAINING_VIEW}"
              "&orderByKey=attributes.run_name&orderByAsc=true")
    expected = {run["info"]["run_id"]: _tags(run).get("mlflow.runName") for run in runs}

    def missing():
        absent = [f"{name} ({run_id})" for run_id, name in expected.items()
                  if not any(name == a.text.strip() for a in page.css(f"a[href$='/runs/{run_id}']"))]
        return ", ".join(absent) or None

    page.wait("runs-page", "the runs page did not list every run", missing)
    page.screenshot(screenshot)
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":  # refresh the README's picture from a real run
        shutil.copyfile(screenshot, REPO / "docs" / "runs-page.png")


def check_train_charts(page: Browser, url: str, experiment_id: str, run_id: str, timeout: float = 90.0) -> None:
    """The run's metrics tab draws a chart for weight/<domain> and eval_loss/<domain> of every domain."""
    page.open(f"{url}/#/experiments/{experiment_id}/runs/{run_id}/model-metrics?{TRAINING_VIEW}")
    for family in ("weight", "eval_loss"):
        filter_charts(page, f"{family}/")
        keys = [f"{family}/{d}" for d in DOMAINS]
        page.wait(f"charts-{family}-{run_id}", f"the metrics tab of run {run_id} did not draw the {family} charts",
                  lambda: rendered_charts(page, keys), timeout=timeout)


def check_child_runs(page: Browser, url: str, experiment_id: str, main_id: str, children: list) -> None:
    """The main run's page lists its child runs, each linked to its run page."""
    page.open(f"{url}/#/experiments/{experiment_id}/runs/{main_id}?{TRAINING_VIEW}")

    def missing():
        absent = [f"{_tags(run).get('mlflow.runName')} ({run['info']['run_id']})" for run in children
                  if not page.css(f"a[href*='/runs/{run['info']['run_id']}']")]
        return ", ".join(absent) or None

    page.wait(f"main-run-{main_id}", "the main run's page did not list its child runs", missing)


def check_model_page(page: Browser, url: str, model_name: str, version: str, alias: str) -> None:
    """The registered model's page shows the alias on the registered version."""
    from selenium.webdriver.common.by import By

    page.open(f"{url}/#/models/{model_name}?{TRAINING_VIEW}")
    row = (f"//*[@role='row'][.//a[normalize-space()='Version {version}']]"
           f"//*[@title='{alias}' and contains(@data-component-id, 'aliastag')]")
    page.wait(f"model-{model_name}", f"the page of {model_name} did not show @{alias} on version {version}",
              lambda: None if page.driver.find_elements(By.XPATH, row) else f"no @{alias} tag on version {version}")


@pytest.mark.slow
def test_main_entry_point_is_tracked_registered_and_shown_in_the_ui(tmp_path):
    require_browser()  # fail before the long run, not after it
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
        version = check_registry(url, train_id)
        with browser() as page:
            check_runs_page(page, url, experiment_id, runs["all"], artifacts_dir() / "experiment-runs.png")
            check_train_charts(page, url, experiment_id, train_id)
            children = [run for run in runs["all"] if run is not runs["main"]]
            check_child_runs(page, url, experiment_id, runs["main"]["info"]["run_id"], children)
            check_model_page(page, url, MODEL_NAME, version, "champion")


def test_missing_browser_fails_with_the_install_hint(monkeypatch, tmp_path):
    import browser as helpers

    monkeypatch.setattr(helpers, "CHROMEDRIVER", tmp_path / "no-chromedriver")
    with pytest.raises(pytest.fail.Exception, match="make browser.*chromium-driver"):
        helpers.require_browser()


@pytest.mark.slow  # needs a browser (`make browser`), which `make test-fast` does not install
def test_the_chart_check_fails_when_a_chart_is_missing(tmp_path):
    """The chart check is not vacuous: a run that logged eval_loss/* but no weight/* fails it, with a screenshot."""
    from mlflow.tracking import MlflowClient

    require_browser()
    with mlflow_server(tmp_path / "server") as url:
        client = MlflowClient(url)
        experiment_id = client.create_experiment("charts")
        runs = {}
        for name, families in (("complete", ("weight", "eval_loss")), ("no-weights", ("eval_loss",))):
            run_id = runs[name] = client.create_run(experiment_id, run_name=name).info.run_id
            for step in range(3):
                for family in families:
                    for i, domain in enumerate(DOMAINS):
                        client.log_metric(run_id, f"{family}/{domain}", 1.0 / (i + step + 1), step=step)
            client.set_terminated(run_id)
        with browser() as page:
            check_train_charts(page, url, experiment_id, runs["complete"])
            with pytest.raises(AssertionError, match=r"did not draw the weight charts.*weight/law: no chart") as info:
                check_train_charts(page, url, experiment_id, runs["no-weights"], timeout=20)
    screenshot = Path(str(info.value).split("screenshot: ")[1].split()[0])
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{screenshot} is not a PNG"


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
