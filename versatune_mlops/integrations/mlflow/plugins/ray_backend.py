"""MLflow project backend ``ray``: ``mlflow run . -e train --backend ray --backend-config ray.json``.

The entry point's command is submitted as a Ray job (``ray.job_submission.JobSubmissionClient``) to
the cluster in the config; the job gets the MLflow run id, experiment id and tracking URI of the
submitting side as environment variables, so the entry point logs into the run ``mlflow run``
created. ``ray.json``::

    {"address": "http://127.0.0.1:8265",            # the cluster's dashboard (job server), required
     "runtime_env": {"pip": [...], "env_vars": {...}},  # optional; working_dir defaults to the project
     "entrypoint_num_cpus": 1, "entrypoint_num_gpus": 0, "entrypoint_memory": null,
     "entrypoint_resources": {}, "wait": true, "log_lines": 50}

``wait`` (default true) makes ``mlflow run`` stream the job's log and wait for it, so its exit code
is the job's (MLflow's CLI does not wait for non-local backends itself). A config that is missing,
malformed, or names a cluster that cannot be reached fails before any run exists. A job that fails
marks the run FAILED with its last ``log_lines`` lines as tag ``versatune.ray_job_error`` and the
whole log as artifact ``ray_job/job.log``.

The job runs in the cluster's Python environment plus ``runtime_env``; ``--env-manager`` does not
apply. The tracking URI must be reachable from the cluster (a sqlite file only works when the
cluster runs on this machine; use an ``mlflow server`` URL otherwise).
"""

from __future__ import annotations

import difflib
import logging
import math
import time
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional

from mlflow.entities import RunStatus
from mlflow.exceptions import ExecutionException
from mlflow.projects.backend.abstract_backend import AbstractBackend
from mlflow.projects.submitted_run import SubmittedRun
from mlflow.tracking import MlflowClient

from ....errors import ConfigError
from ..run_context import TAG_PREFIX

log = logging.getLogger(__name__)
job_log = logging.getLogger(f"{__name__}.job")

# Keys MLflow itself puts into backend_config (mlflow.projects.utils PROJECT_*, the local run id).
MLFLOW_KEYS = ("ENV_MANAGER", "SYNCHRONOUS", "DOCKER_ARGS", "STORAGE_DIR", "build_image", "docker_auth",
               "_mlflow_local_backend_run_id")
EXAMPLE = '{"address": "http://127.0.0.1:8265"}'
# Ray job status -> MLflow run status.
RUN_STATUS = {"PENDING": "SCHEDULED", "RUNNING": "RUNNING", "SUCCEEDED": "FINISHED", "FAILED": "FAILED",
              "STOPPED": "KILLED"}


class RayBackendError(ExecutionException, ConfigError):
    """The backend config is missing or malformed, or the cluster cannot be reached. An MLflow
    ExecutionException, so ``mlflow run`` prints the message and exits 1, and a project ConfigError."""


@dataclass
class RayBackendConfig:
    address: str
    """The cluster's job server: its dashboard URL, e.g. http://127.0.0.1:8265."""
    runtime_env: dict[str, Any] = field(default_factory=dict)
    entrypoint_num_cpus: Optional[float] = None
    entrypoint_num_gpus: Optional[float] = None
    entrypoint_memory: Optional[int] = None
    entrypoint_resources: Optional[dict[str, float]] = None
    wait: bool = True
    """Stream the job's log and wait for it inside ``run()`` (MLflow's CLI does not wait for plugin backends)."""
    log_lines: int = 50
    """How many of the job's last log lines a failed run keeps as a tag."""
    poll_seconds: float = 1.0

    @classmethod
    def parse(cls, backend_config: Optional[Mapping[str, Any]]) -> "RayBackendConfig":
        """Check the user's part of ``backend_config``; every problem names the key and the fix."""
        user = {k: v for k, v in (backend_config or {}).items() if k not in MLFLOW_KEYS}
        if not user:
            raise RayBackendError(f"The ray backend needs a backend config with the cluster's address, e.g. "
                                  f"--backend-config ray.json holding {EXAMPLE}.")
        known = [f.name for f in fields(cls)]
        for key in user:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                raise RayBackendError(f"Unknown ray backend config key {key!r}."
                                      f"{f' Did you mean {close[0]!r}?' if close else ''} Known keys: {', '.join(known)}.")
        address = user.get("address")
        if not isinstance(address, str) or not address.startswith(("http://", "https://")):
            raise RayBackendError(f"Ray backend config 'address' is {address!r}; it must be the cluster's job server "
                                  f"URL (its dashboard), e.g. {EXAMPLE}. Start one with `ray start --head "
                                  f"--dashboard-host 0.0.0.0` (needs ray[default]).")
        if not isinstance(user.get("runtime_env", {}), dict):
            raise RayBackendError(f"Ray backend config 'runtime_env' must be a mapping (working_dir, pip, env_vars, ...), "
                                  f"got {user['runtime_env']!r}.")
        for key in ("entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory"):
            value = user.get(key)
            if value is not None and not (_is_number(value) and value >= 0):
                raise RayBackendError(f"Ray backend config {key!r}={value!r} must be a number >= 0 (or null).")
        resources = user.get("entrypoint_resources")
        if resources is not None and not (isinstance(resources, dict) and all(
                isinstance(k, str) and _is_number(v) and v >= 0 for k, v in resources.items())):
            raise RayBackendError(f"Ray backend config 'entrypoint_resources'={resources!r} must map resource names "
                                  f"to amounts >= 0.")
        if not isinstance(user.get("wait", True), bool):
            raise RayBackendError(f"Ray backend config 'wait'={user['wait']!r} must be true or false.")
        for key in ("log_lines", "poll_seconds"):
            value = user.get(key)
            if value is not None and not (_is_number(value) and value > 0):
                raise RayBackendError(f"Ray backend config {key!r}={value!r} must be a number > 0.")
        return cls(**user)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def connect(address: str):
    """A job client for ``address``; checks the job server answers before anything is submitted."""
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001 - connection refused, DNS, HTTP and version errors alike
        raise RayBackendError(
            f"Cannot reach a Ray job server at {address} ({type(exc).__name__}: {str(exc)[:300]}). Check 'address' "
            f"in the backend config (the cluster's dashboard URL, default port 8265) and that the cluster runs "
            f"with its dashboard: `ray start --head --dashboard-host 0.0.0.0` (needs ray[default]). Nothing was "
            f"submitted."
        ) from exc


def job_runtime_env(settings: RayBackendConfig, work_dir: str, run_id: str, experiment_id: str,
                    tracking_uri: str) -> dict[str, Any]:
    """The user's runtime_env, with the project as working_dir by default and the run's MLflow variables."""
    runtime_env = dict(settings.runtime_env)
    runtime_env.setdefault("working_dir", work_dir)
    if runtime_env["working_dir"] == work_dir:
        runtime_env.setdefault("excludes", [".git"])  # .gitignore'd files are left out by Ray already
    env_vars = {str(k): str(v) for k, v in (runtime_env.get("env_vars") or {}).items()}
    env_vars.update({"MLFLOW_RUN_ID": run_id, "MLFLOW_EXPERIMENT_ID": str(experiment_id),
                     "MLFLOW_TRACKING_URI": tracking_uri})
    runtime_env["env_vars"] = env_vars
    return runtime_env


def _console_logging() -> None:
    """Under ``mlflow run`` nothing configures logging for this package: show the job's log and our
    progress lines on stderr (as MLflow does for its own logger). A configured root logger wins."""
    if logging.getLogger().handlers or log.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


class RayBackend(AbstractBackend):
    """Registered as ``ray`` through the ``mlflow.project_backend`` entry point."""

    def run(self, project_uri, entry_point, params, version, backend_config, tracking_uri, experiment_id):
        from mlflow.projects.utils import (
            PROJECT_ENV_MANAGER,
            PROJECT_STORAGE_DIR,
            PROJECT_SYNCHRONOUS,
            fetch_and_validate_project,
            get_entry_point_command,
            get_or_create_run,
            load_project,
        )

        from ..tracking import resolve_tracking_uri

        _console_logging()
        # Everything that can be checked is checked before a run exists or a job is submitted.
        settings = RayBackendConfig.parse(backend_config)
        client = connect(settings.address)
        if backend_config.get(PROJECT_ENV_MANAGER) not in (None, "local"):
            log.warning("--env-manager %s does not apply to the ray backend: the job runs in the cluster's Python "
                        "environment plus runtime_env (use its pip/conda/uv keys).", backend_config[PROJECT_ENV_MANAGER])
        tracking_uri = resolve_tracking_uri(tracking_uri)
        work_dir = fetch_and_validate_project(project_uri, version, entry_point, params)
        project = load_project(work_dir)
        command = " && ".join(get_entry_point_command(project, entry_point, params, backend_config.get(PROJECT_STORAGE_DIR)))

        run = get_or_create_run(None, project_uri, experiment_id, work_dir, version, entry_point, params)
        run_id = run.info.run_id
        mlflow_client = MlflowClient()
        mlflow_client.set_tag(run_id, "mlflow.project.backend", "ray")
        try:
            job_id = client.submit_job(
                entrypoint=command,
                runtime_env=job_runtime_env(settings, work_dir, run_id, experiment_id, tracking_uri),
                submission_id=f"mlflow-{run_id}",
                metadata={"mlflow_run_id": run_id, "mlflow_experiment_id": str(experiment_id)},
                entrypoint_num_cpus=settings.entrypoint_num_cpus,
                entrypoint_num_gpus=settings.entrypoint_num_gpus,
                entrypoint_memory=settings.entrypoint_memory,
                entrypoint_resources=settings.entrypoint_resources,
            )
        except Exception as exc:  # noqa: BLE001 - the run must not stay RUNNING whatever went wrong
            message = f"Submitting the Ray job to {settings.address} failed: {type(exc).__name__}: {str(exc)[:2000]}"
            mlflow_client.set_tag(run_id, f"{TAG_PREFIX}ray_job_error", message[:5000])
            mlflow_client.set_terminated(run_id, "FAILED")
            raise ExecutionException(message) from exc
        mlflow_client.set_tag(run_id, f"{TAG_PREFIX}ray_job_id", job_id)
        mlflow_client.set_tag(run_id, f"{TAG_PREFIX}ray_address", settings.address)
        log.info("=== Submitted %s to Ray at %s as job %s (MLflow run %s) ===", command, settings.address, job_id, run_id)

        submitted = RaySubmittedRun(run_id, client, job_id, log_lines=settings.log_lines,
                                    poll_seconds=settings.poll_seconds)
        # With synchronous=True MLflow waits itself; its CLI passes False for plugin backends.
        if settings.wait and not backend_config.get(PROJECT_SYNCHRONOUS):
            try:
                succeeded = submitted.wait()
            except KeyboardInterrupt:
                submitted.cancel()
                raise
            if not succeeded:
                raise ExecutionException(f"Ray job {job_id} of run {run_id} ended {submitted.job_status}. Last log "
                                         f"lines:\n{submitted.last_lines}")
        return submitted


class RaySubmittedRun(SubmittedRun):
    """An MLflow run whose status follows a Ray job: ``wait`` streams the job's log, ``cancel`` stops it."""

    def __init__(self, run_id: str, client, job_id: str, log_lines: int = 50, poll_seconds: float = 1.0):
        super().__init__()
        self._run_id = run_id
        self.client = client
        self.job_id = job_id
        self.log_lines = log_lines
        self.poll_seconds = poll_seconds
        self.job_status: Optional[str] = None
        """The job's final status once it ended (SUCCEEDED, FAILED, STOPPED)."""
        self.last_lines = ""
        self._streamed = 0

    @property
    def run_id(self) -> str:
        return self._run_id

    def get_status(self) -> str:
        return RUN_STATUS[str(self.client.get_job_status(self.job_id))]

    def wait(self) -> bool:
        """Stream the job's log until it ends; True when it succeeded. The run ends with the job's status."""
        while True:
            status = self.client.get_job_status(self.job_id)
            self._stream(self.client.get_job_logs(self.job_id), final=status.is_terminal())
            if status.is_terminal():
                break
            time.sleep(self.poll_seconds)
        self._finish(str(status))
        return self.job_status == "SUCCEEDED"

    def cancel(self) -> None:
        """Stop the job, wait until it has stopped, and end the run KILLED."""
        self.client.stop_job(self.job_id)
        deadline = time.monotonic() + 60
        while not self.client.get_job_status(self.job_id).is_terminal() and time.monotonic() < deadline:
            time.sleep(self.poll_seconds)
        self._finish(str(self.client.get_job_status(self.job_id)))

    def _stream(self, logs: str, final: bool = False) -> None:
        new = logs[self._streamed:]
        # Hold back a partial last line until it is complete (or the job has ended).
        complete = new if final else new[: new.rfind("\n") + 1]
        for line in complete.splitlines():
            job_log.info("%s", line)
        self._streamed += len(complete)

    def _finish(self, job_status: str) -> None:
        if self.job_status is not None:
            return
        self.job_status = job_status
        logs = self.client.get_job_logs(self.job_id)
        self.last_lines = "\n".join(logs.splitlines()[-self.log_lines:])
        client = MlflowClient()
        client.log_text(self._run_id, logs, "ray_job/job.log")
        client.set_tag(self._run_id, f"{TAG_PREFIX}ray_job_status", job_status)
        status = RUN_STATUS.get(job_status, "FAILED")
        current = client.get_run(self._run_id).info.status
        if status != "FINISHED":
            client.set_tag(self._run_id, f"{TAG_PREFIX}ray_job_error", self.last_lines[-5000:])
            client.set_terminated(self._run_id, status)
        elif not RunStatus.is_terminated(RunStatus.from_string(current)):
            client.set_terminated(self._run_id, status)
        log.info("=== Ray job %s ended %s; MLflow run %s is %s ===", self.job_id, job_status, self._run_id,
                 client.get_run(self._run_id).info.status)
