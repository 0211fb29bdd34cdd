"""Shared fixtures. Tests run offline on the tiny preset; nothing touches a model hub."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Caches and MLflow runs go to per-session folders, never ~/.cache or the repository.

    The converted SmolLM2 checkpoint is the exception (slow tests): it is reused from the user cache
    when present, because converting it costs ~20 s and it is identical every time.
    """
    monkeypatch.setenv("VERSATUNE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    # Runs of tests that do not pick a store land in a throwaway database, never the repository's.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path_factory.getbasetemp() / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)


def tiny_overrides(**extra):
    """Overrides that keep a tiny run to a few seconds."""
    base = {"train.max_steps": 12, "method.interval": 4, "train.eval_accuracy": False, "probe.num_samples": 16}
    base.update(extra)
    return base


@pytest.fixture
def tiny_config():
    from versatune_mlops.config import load_config

    def build(**extra):
        return load_config("tiny", overrides=tiny_overrides(**extra))

    return build
