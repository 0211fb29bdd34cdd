"""Helpers for the end-to-end UI test: a throwaway MLflow tracking server and headless Chromium.

Everything stays on loopback. The server is stopped by its own process group id, never by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import requests

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]


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


def require_chromium() -> Path:
    """Path of Debian's Chromium; a missing browser is a failure, not a skip."""
    if not CHROMIUM.exists():
        import pytest

        pytest.fail(f"{CHROMIUM} is missing: run `make browser` to install Debian's chromium package")
    return CHROMIUM


def render_dom(
    url: str,
    screenshot: Path | None = None,
    budget_ms: int = 15000,
    window_size: str = "1600,1000",
    timeout: float = 120.0,
) -> str:
    """Load `url` in headless Chromium and return the DOM after `budget_ms` of virtual time.

    With `screenshot`, the same Chromium run also saves a PNG of the page there. Every run gets a
    fresh, empty profile directory. A missing /usr/bin/chromium fails the calling test.
    """
    chromium = require_chromium()
    extra = []
    if screenshot is not None:
        screenshot = Path(screenshot).resolve()
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        extra.append(f"--screenshot={screenshot}")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [
            str(chromium), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={window_size}",
            f"--virtual-time-budget={budget_ms}", "--dump-dom", *extra, url,
        ]
        proc = subprocess.Popen(
            cmd, cwd=profile, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process_group(proc, timeout=5)
            out, err = proc.communicate()
            raise AssertionError(
                f"chromium did not finish within {timeout:.0f} s on {url}:\n{err.decode(errors='replace')[-3000:]}"
            ) from None
        finally:
            # Renderer and GPU helper processes share the group; leave none behind.
            stop_process_group(proc, timeout=5)
    dom = out.decode(errors="replace")
    if proc.returncode != 0 or not dom.strip():
        raise AssertionError(
            f"chromium --dump-dom failed (rc={proc.returncode}) on {url}:\n{err.decode(errors='replace')[-3000:]}"
        )
    if screenshot is not None and not screenshot.is_file():
        raise AssertionError(f"chromium wrote no screenshot for {url}:\n{err.decode(errors='replace')[-3000:]}")
    return dom
