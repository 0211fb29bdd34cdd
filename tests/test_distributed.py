"""Ray Train workers: same results as one process, bad scaling input, and resume after a killed worker."""

import os
import signal
import threading
import time

import pytest

from versatune_mlops.config import load_config
from versatune_mlops.integrations.ray.distributed import check_resources, train_distributed
from versatune_mlops.errors import ConfigError
from versatune_mlops.training.loop import train

PRIOR = {"law": 0.3, "medicine": 0.1, "finance": 0.2, "science": 0.1, "code": 0.2, "general": 0.1}
# Gradients are summed across workers by all-reduce, in a different order than one process sums
# them, so parameters differ by float rounding (~1e-7); weights follow the eval losses, measured at
# ~2e-8 apart. 1e-5 is far above that rounding and far below any real difference between mixtures.
TOLERANCE = 1e-5


def _config(**extra):
    overrides = {"train.max_steps": 12, "method.interval": 4, "train.eval_accuracy": False, "method.prior": PRIOR,
                 "train.save_model": False}
    overrides.update(extra)
    return load_config("tiny", overrides=overrides)


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


def _max_weight_gap(a, b):
    assert [p["step"] for p in a["weight_trajectory"]] == [p["step"] for p in b["weight_trajectory"]]
    return max(abs(p["weights"][d] - q["weights"][d])
               for p, q in zip(a["weight_trajectory"], b["weight_trajectory"]) for d in p["weights"])


@pytest.mark.slow
def test_two_workers_match_one_process(ray_cluster, tmp_path):
    single = train(_config(), tmp_path / "one")
    double = train_distributed(_config(**{"distributed.num_workers": 2}), tmp_path / "two")
    assert double["tokens_trained"] == single["tokens_trained"], "the workers together see the same batches"
    assert _max_weight_gap(single, double) < TOLERANCE
    assert single["final_weights"] != single["initial_weights"], "the weights moved, so the comparison means something"
    # DDP: every worker holds a whole copy of the parameters and optimizer state.
    assert double["per_worker"]["parameter_and_optimizer_bytes"] == single["per_worker"]["parameter_and_optimizer_bytes"] * 2
    for d in single["domains"]:
        assert abs(single["eval_loss_after"][d] - double["eval_loss_after"][d]) < 1e-4


def test_bad_scaling_is_rejected_before_ray_starts():
    with pytest.raises(ConfigError, match=r"more than this machine's \d+ CPUs"):
        check_resources(_config(**{"distributed.num_workers": 512, "train.batch_size": 512}))
    with pytest.raises(ConfigError, match="train.batch_size=2 is smaller than distributed.num_workers=4"):
        _config(**{"distributed.num_workers": 4, "train.batch_size": 2})


def _train_worker_pids():
    """Ray names worker processes after their actor class (``ray::RayTrainWorker...``)."""
    import psutil

    pids = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        if any("RayTrainWorker" in part for part in (process.info["cmdline"] or [])):
            pids.append(process.info["pid"])
    return pids


def _kill_a_worker_after_first_checkpoint(output_dir, killed):
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        pids = _train_worker_pids()
        if list((output_dir / "checkpoints").glob("step-*")) and pids:
            os.kill(pids[-1], signal.SIGKILL)
            killed.append(pids[-1])
            return
        time.sleep(0.2)


@pytest.mark.slow
def test_killed_worker_resumes_from_the_last_checkpoint(ray_cluster, tmp_path):
    settings = {"train.max_steps": 60, "method.interval": 10, "train.checkpoint_every": 10}
    reference = train(_config(**settings), tmp_path / "reference")

    output = tmp_path / "killed"
    killed: list[int] = []
    killer = threading.Thread(target=_kill_a_worker_after_first_checkpoint, args=(output, killed), daemon=True)
    killer.start()
    resumed = train_distributed(_config(**settings, **{"distributed.num_workers": 2, "distributed.max_failures": 2}),
                                output)
    killer.join(timeout=5)
    assert killed, "no worker was killed: the run finished before its first checkpoint"
    assert _max_weight_gap(reference, resumed) < TOLERANCE
    assert resumed["steps"] == 60
    for d in reference["domains"]:
        assert abs(reference["final_weights"][d] - resumed["final_weights"][d]) < TOLERANCE


@pytest.mark.slow
def test_cli_on_ray_logs_to_mlflow_from_the_main_worker(ray_cluster, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from versatune_mlops.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(["train", "--preset", "tiny", "--num-workers", "2", "--experiment", "ray", "--output-dir",
                 str(tmp_path / "out"), "--set", "train.max_steps=8", "--set", "method.interval=4",
                 "--set", "probe.num_samples=8", "--set", "train.eval_accuracy=false"]) == 0
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("ray").experiment_id])
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "weight/law")] == [0, 4]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval_loss/mean")] == [0, 4, 8]
    assert run.data.tags["versatune.model_uri"].startswith("models:/m-")
    assert run.data.params["distributed.num_workers"] == "2"


@pytest.fixture(scope="module")
def short_references(tmp_path_factory):
    """4 steps of one batch of 8 in one process, full fine-tuning and LoRA, saved for the parameter comparison."""
    runs = {}
    for lora in (False, True):
        out = tmp_path_factory.mktemp(f"reference-lora-{lora}")
        runs[lora] = out, train(short_run(**{"model.lora": lora}), out)
    return runs


def short_run(**extra):
    return _config(**{"train.max_steps": 4, "method.interval": 2, "train.save_model": True, **extra})


@pytest.mark.slow
@pytest.mark.parametrize("settings", [
    {"distributed.strategy": "ddp", "train.micro_batch_size": 2},  # accumulation under no_sync
    {"distributed.strategy": "fsdp", "model.lora": True, "train.micro_batch_size": 2},
    # FSDP with full fine-tuning: test_fsdp_killed_worker_resumes_to_the_same_weights
], ids=["ddp-micro", "fsdp-lora-micro"])
def test_two_sharded_or_accumulating_workers_match_one_process(ray_cluster, short_references, tmp_path, settings):
    from test_scale import PARAM_TOLERANCE, param_gap, weight_gap

    reference_dir, reference = short_references[bool(settings.get("model.lora"))]
    distributed = train_distributed(short_run(**{"distributed.num_workers": 2, **settings}), tmp_path)
    assert distributed["tokens_trained"] == reference["tokens_trained"]
    assert reference["final_weights"] != reference["initial_weights"]
    assert weight_gap(reference, distributed) < TOLERANCE
    # The FSDP model is gathered from both shards into a plain HF folder (LoRA merged): same keys, same values.
    assert param_gap(reference_dir, tmp_path) < PARAM_TOLERANCE
    for d in reference["domains"]:
        assert abs(reference["eval_loss_after"][d] - distributed["eval_loss_after"][d]) < 1e-4


@pytest.mark.slow
def test_fsdp_killed_worker_resumes_to_the_same_weights(ray_cluster, tmp_path):
    """Full fine-tuning sharded over 2 workers, one SIGKILLed after the first sharded checkpoint:
    the restarted group reads its shards back and ends where one uninterrupted process ends."""
    from test_scale import PARAM_TOLERANCE, param_gap

    settings = {"train.max_steps": 8, "method.interval": 2, "train.checkpoint_every": 2, "train.save_model": True}
    reference = train(_config(**settings), tmp_path / "reference")
    output = tmp_path / "killed"
    killed: list[int] = []
    killer = threading.Thread(target=_kill_a_worker_after_first_checkpoint, args=(output, killed), daemon=True)
    killer.start()
    resumed = train_distributed(_config(**settings, **{"distributed.num_workers": 2, "distributed.strategy": "fsdp",
                                                       "distributed.max_failures": 2}), output)
    killer.join(timeout=5)
    assert killed, "no worker was killed: the run finished before its first checkpoint"
    assert list((output / "checkpoints").glob("step-*/sharded/*.distcp")), "the checkpoint holds per-worker shards"
    assert resumed["steps"] == 8 and resumed["tokens_trained"] == reference["tokens_trained"]
    assert _max_weight_gap(reference, resumed) < TOLERANCE
    assert param_gap(tmp_path / "reference", output) < PARAM_TOLERANCE
    # Each worker holds its half of the parameters and AdamW moments: together the one process's whole.
    (whole,) = reference["per_worker"]["parameter_and_optimizer_bytes"]
    shards = resumed["per_worker"]["parameter_and_optimizer_bytes"]
    assert len(shards) == 2 and sum(shards) == pytest.approx(whole, rel=0.01)
    assert max(shards) < 0.55 * whole
    assert len(resumed["per_worker"]["peak_rss_bytes"]) == 2 and min(resumed["per_worker"]["peak_rss_bytes"]) > 0


def test_probe_shares_split_the_samples_evenly():
    from versatune_mlops.integrations.ray.distributed import probe_shares

    assert probe_shares(10, 3) == [4, 3, 3] and probe_shares(2, 4) == [1, 1, 0, 0] and sum(probe_shares(257, 8)) == 257


@pytest.mark.slow
def test_probe_generation_splits_across_ray_workers(ray_cluster):
    """Each worker generates its share with seed probe.seed + rank; worker 0 reproduces one process."""
    from versatune_mlops.integrations.ray.distributed import generate_probe_texts
    from versatune_mlops.mixing.probe import generate_free_text
    from versatune_mlops.training.setup import prepare_inputs

    config = load_config("tiny", overrides={"probe.num_samples": 5, "probe.batch_size": 2, "distributed.num_workers": 2})
    texts = generate_probe_texts(config)
    assert len(texts) == 5
    inputs = prepare_inputs(config)
    here = [generate_free_text(inputs.loaded.model, inputs.loaded.tokenizer, config.probe, seed=config.probe.seed + rank,
                               num_samples=n) for rank, n in enumerate([3, 2])]
    assert texts == here[0] + here[1]
