"""Helpers for the end-to-end UI test: a throwaway MLflow tracking server (the browser is in browser.py).

Everything stays on loopback. The server is stopped by its own process group id, never by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import requests

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def stop_process_group(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the process group that `proc` leads, then SIGKILL it if it outlives `timeout`."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    # Workers in the group may outlive the leader; SIGKILL whatever is left of the group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)


@contextlib.contextmanager
def mlflow_server(workdir: Path, startup_timeout: float = 60.0) -> Iterator[str]:
    """Start `mlflow server` on a free loopback port with a sqlite store under `workdir`; yield its URL."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "artifacts").mkdir(exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    mlflow_exe = Path(sys.executable).parent / "mlflow"
    cmd = [
        str(mlflow_exe), "server",
        "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
        "--artifacts-destination", str(workdir / "artifacts"),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
    ]
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_RUN_ID", None)
    log_path = workdir / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with code {proc.returncode} before answering /health:\n{_tail(log_path)}"
                )
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server did not answer {url}/health within {startup_timeout:.0f} s:\n{_tail(log_path)}"
                )
            time.sleep(0.5)
        yield url
    finally:
        stop_process_group(proc)


def api(url: str, endpoint: str, method: str = "GET", **params) -> dict:
    """Call the MLflow REST API (`endpoint` relative to /api/2.0/mlflow/) and return the JSON body."""
    full = f"{url}/api/2.0/mlflow/{endpoint}"
    if method == "GET":
        resp = requests.get(full, params=params, timeout=30)
    else:
        resp = requests.post(full, json=params, timeout=30)
    if resp.status_code != 200:
        raise AssertionError(f"{method} {full} {params} -> {resp.status_code}: {resp.text[:2000]}")
    return resp.json()
