"""Integration tests of the training loop on the tiny model: probe -> train, resume, faults, methods."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from versatune_mlops.config import EXPANSION_ONLY_METHODS, METHODS
from versatune_mlops.errors import TrainingDivergedError
from versatune_mlops.training.hooks import TrainingHooks
from versatune_mlops.training.loop import train
from versatune_mlops.training.setup import prepare_inputs


class Recorder(TrainingHooks):
    def __init__(self):
        self.calls = []
        self.reweights = []

    def on_start(self, config, domains, initial_weights, run_info):
        self.calls.append("start")
        self.run_info = run_info

    def on_eval(self, step, metrics):
        self.calls.append(("eval", step))

    def on_reweight(self, step, record):
        self.reweights.append(record)

    def on_checkpoint(self, step, path):
        self.calls.append(("checkpoint", step))

    def on_end(self, summary):
        self.calls.append("end")


def _on_simplex(weights):
    values = np.array(list(weights.values()))
    return np.all(np.isfinite(values)) and np.all(values >= 0) and abs(values.sum() - 1) < 1e-9


def test_probe_then_train_changes_parameters_and_moves_weights(tiny_config, tmp_path):
    config = tiny_config(**{"train.max_steps": 24, "method.interval": 4, "train.eval_accuracy": True})
    inputs = prepare_inputs(config)
    before = {n: p.detach().clone() for n, p in inputs.loaded.model.named_parameters()}
    recorder = Recorder()
    summary = train(config, tmp_path, hooks=[recorder], inputs=inputs)

    changed = [n for n, p in inputs.loaded.model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before), "every parameter should have been updated by full fine-tuning"

    domains = summary["domains"]
    assert domains == ["law", "medicine", "finance", "science", "code", "general"]
    # The probe ran (method versatune, no prior given) and wrote its distribution.
    distribution = json.loads((tmp_path / "distribution.json").read_text())
    assert _on_simplex(distribution["distribution"]) and distribution["num_samples"] == 16
    assert summary["prior"] == pytest.approx(distribution["distribution"])

    trajectory = summary["weight_trajectory"]
    assert [p["step"] for p in trajectory] == [0, 4, 8, 12, 16, 20]
    assert all(_on_simplex(p["weights"]) for p in trajectory)
    assert summary["final_weights"] != summary["initial_weights"], "re-weighting should move the weights"
    assert _on_simplex(summary["final_weights"]) and _on_simplex(summary["realised_share"])

    for key in ("eval_loss_before", "eval_loss_after", "accuracy_before", "accuracy_after"):
        assert set(summary[key]) == set(domains)
    assert all(summary["eval_loss_after"][d] < summary["eval_loss_before"][d] for d in domains)
    assert all(0 <= summary["accuracy_after"][d] <= 1 for d in domains)
    assert summary["tokens_trained"] > 24 * 8 * 20 and summary["wall_seconds"] > 0
    assert (tmp_path / "model" / "config.json").is_file() and (tmp_path / "summary.json").is_file()

    # Hooks saw the run in order; each re-weighting point has potential and forgetting per domain.
    assert recorder.calls[0] == "start" and recorder.calls[-1] == "end"
    assert [c for c in recorder.calls if isinstance(c, tuple) and c[0] == "eval"][0] == ("eval", 0)
    assert len(recorder.reweights) == 5
    assert set(recorder.reweights[0]["potential"]) == set(domains)
    assert all(v >= 0 for r in recorder.reweights for v in r["forgetting"].values())


def test_the_training_loss_signal_reweights_without_an_evaluation_pass(tiny_config, tmp_path):
    config = tiny_config(**{"train.max_steps": 12, "method.interval": 4, "method.signal": "train", "method.eta": 10.0,
                            "train.save_model": False, "probe.num_samples": 8})
    recorder = Recorder()
    summary = train(config, tmp_path, hooks=[recorder])
    records = summary["reweighting_records"]
    assert [r["step"] for r in records] == [4, 8]
    # Each point read the window's training losses and evaluated nothing held out.
    assert all("eval_loss" not in r and set(r["train_loss"]) == set(summary["domains"]) for r in records)
    assert all(0 < loss < 20 for r in records for loss in r["train_loss"].values())
    assert summary["midrun_eval_seconds"] == 0
    # Held-out evaluations: the base model and the end of the run only.
    assert [c for c in recorder.calls if isinstance(c, tuple) and c[0] == "eval"] == [("eval", 0), ("eval", 12)]
    assert summary["final_weights"] != summary["initial_weights"], "the training losses should move the weights"


def test_a_domain_not_drawn_since_the_last_point_keeps_its_last_loss_under_the_training_signal(tiny_config, tmp_path):
    prior = {"law": 0.0, "medicine": 0.2, "finance": 0.2, "science": 0.2, "code": 0.2, "general": 0.2}
    config = tiny_config(**{"train.max_steps": 8, "method.interval": 4, "method.signal": "train", "method.eta": 0.0,
                            "method.prior": prior, "probe.floor": 0.0, "train.save_model": False})
    summary = train(config, tmp_path)
    assert summary["realised_share"]["law"] == 0
    assert [r["train_loss"]["law"] for r in summary["reweighting_records"]] == [summary["eval_loss_before"]["law"]]
    assert summary["reweighting_records"][0]["train_loss"]["code"] != summary["eval_loss_before"]["code"]


def test_window_losses_read_a_domain_only_from_enough_tokens_and_keep_the_last_value_otherwise():
    from versatune_mlops.training.steps import window_losses

    mean = [2.0, 3.0, float("nan")]  # loss sums 20 and 6 over 10 and 2 tokens; nothing drawn of the third
    loss, read = window_losses(mean, [10, 2, 0], last=[1.5, 2.5, 3.5])
    assert loss.tolist() == [2.0, 3.0, 3.5] and read.tolist() == [True, True, False], "an undrawn domain keeps its last"
    loss, read = window_losses(mean, [10, 2, 0], last=[1.5, 2.5, 3.5], min_tokens=5)
    assert loss.tolist() == [2.0, 2.5, 3.5] and read.tolist() == [True, False, False]


def test_a_window_with_too_few_tokens_carries_into_the_next_under_signal_min_tokens(tiny_config, tmp_path):
    settings = {"train.max_steps": 12, "method.interval": 4, "method.signal": "train", "method.eta": 1.0,
                "train.save_model": False, "probe.num_samples": 8}
    pooled = train(tiny_config(**settings, **{"method.signal_min_tokens": 10**6}), tmp_path / "pooled")
    first, second = pooled["reweighting_records"]
    # No window ever holds a million tokens: every domain keeps the base model's loss, and the tokens
    # pile up across windows instead of being dropped.
    assert first["train_loss"] == second["train_loss"] == pooled["eval_loss_before"]
    assert all(second["window_tokens"][d] >= first["window_tokens"][d] for d in pooled["domains"])
    assert sum(second["window_tokens"].values()) > sum(first["window_tokens"].values()) > 0
    plain = train(tiny_config(**settings), tmp_path / "plain")["reweighting_records"]
    assert sum(plain[1]["window_tokens"].values()) < sum(second["window_tokens"].values()), \
        "without pooling each window starts empty"


class StopAfter(TrainingHooks):
    """Simulates a crash right after the checkpoint at `step`."""

    def __init__(self, step):
        self.step = step

    def on_checkpoint(self, step, path):
        if step == self.step:
            raise KeyboardInterrupt


def test_resume_from_checkpoint_reproduces_the_uninterrupted_run(tiny_config, tmp_path):
    config = tiny_config(**{"train.max_steps": 20, "method.interval": 3, "train.checkpoint_every": 5,
                            "method.prior": {d: 1 / 6 for d in ["law", "medicine", "finance", "science", "code", "general"]},
                            "train.save_model": False})
    full = train(config, tmp_path / "full")

    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "cut", hooks=[StopAfter(10)])
    checkpoints = sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir())
    assert checkpoints == ["step-000010"], "only the newest complete checkpoint is kept (keep_checkpoints=1)"
    resumed = train(config, tmp_path / "cut", resume_from=tmp_path / "cut")

    # Exact equality: same RNG streams, sampler state and bit-identical parameters after restore.
    assert resumed["weight_trajectory"] == full["weight_trajectory"]
    assert resumed["final_weights"] == full["final_weights"]
    assert resumed["eval_loss_after"] == full["eval_loss_after"]
    assert resumed["tokens_trained"] == full["tokens_trained"]


class PoisonAt(TrainingHooks):
    """Puts a NaN into the model after `step`, so the next loss is NaN."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, step, loss, model):
        if step == self.step:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))


def test_nan_loss_stops_with_last_checkpoint_intact(tiny_config, tmp_path):
    config = tiny_config(**{"train.checkpoint_every": 4, "train.max_steps": 12, "method.method": "uniform"})
    with pytest.raises(TrainingDivergedError, match=r"became nan at step 7.*step-000004"):
        train(config, tmp_path, hooks=[PoisonAt(6)])
    checkpoint = tmp_path / "checkpoints" / "step-000004"
    state = json.loads((checkpoint / "state.json").read_text())
    assert state["loop"]["step"] == 4 and _on_simplex(dict(enumerate(state["loop"]["weights"])))
    weights = torch.load(checkpoint / "model.pt")
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "model").exists()


@pytest.mark.parametrize("method", [m for m in METHODS])
def test_every_method_trains_and_keeps_weights_on_simplex(tiny_config, tmp_path, method):
    # The expansion baselines exist in expansion mode only (the config refuses them otherwise).
    expansion = {"method.mode": "expansion", "method.target": "code"} if method in EXPANSION_ONLY_METHODS else {}
    # Aioli's probes (one step per domain) must fit inside its interval.
    interval = 7 if method == "aioli" else 2
    config = tiny_config(**{"method.method": method, "train.max_steps": 8, "method.interval": interval,
                            "train.save_model": False, "probe.num_samples": 8, **expansion})
    summary = train(config, tmp_path)
    assert all(_on_simplex(p["weights"]) for p in summary["weight_trajectory"])
    if method == "uniform":
        assert all(w == pytest.approx(1 / 6) for w in summary["final_weights"].values())
    if method == "target_only":
        assert summary["realised_share"]["code"] == 1.0
    if method in ("versatune", "doremi"):
        assert summary["final_weights"] != summary["initial_weights"]


def test_expansion_grows_the_target(tiny_config, tmp_path):
    # A start below the cap, so the target's potential has room to grow it (the default starts at the cap).
    config = tiny_config(**{"method.mode": "expansion", "method.target": "law", "train.max_steps": 12,
                            "method.interval": 3, "train.save_model": False, "method.target_initial_share": 0.5})
    summary = train(config, tmp_path)
    shares = [p["weights"]["law"] for p in summary["weight_trajectory"]]
    assert shares[0] == pytest.approx(0.5)
    assert all(b >= a - 1e-12 for a, b in zip(shares, shares[1:])) and shares[-1] > shares[0]
    assert shares[-1] <= 0.9 + 1e-12


def test_specialist_reference_losses_are_cached(tiny_config, tmp_path, monkeypatch):
    config = tiny_config(**{"method.reference": "specialist", "method.specialist_steps": 3,
                            "train.max_steps": 4, "train.save_model": False, "method.method": "doremi",
                            "data.domains": ["law", "code"]})
    first = train(config, tmp_path / "a")
    assert set(first["reference_loss"]) == {"law", "code"}
    assert all(first["reference_loss"][d] < first["eval_loss_before"][d] for d in ("law", "code"))
    # Another seed reuses the same reference: it belongs to the model and data, not to the run.
    other_seed = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=config.train.seed + 7))
    from versatune_mlops.training import reference

    specialist_runs = []
    real_train = reference.train_specialist
    monkeypatch.setattr(reference, "train_specialist", lambda *a, **k: specialist_runs.append(a) or real_train(*a, **k))
    second = train(other_seed, tmp_path / "b")
    assert specialist_runs == []  # read from the cache, not trained again
    assert second["reference_loss"] == first["reference_loss"]


def test_specialist_cache_is_keyed_by_the_precision_the_specialists_really_train_in(tiny_config, monkeypatch):
    from versatune_mlops.training import loss, reference

    config = tiny_config(**{"method.reference": "specialist", "data.domains": ["law", "code"]})
    inputs = prepare_inputs(config)

    def key(bf16: bool, native: bool) -> str:
        monkeypatch.setattr(loss, "cpu_has_native_bf16", lambda: native)
        return reference._cache_key(dataclasses.replace(config, model=dataclasses.replace(config.model, bf16=bf16)),
                                    inputs)

    # Without bf16 instructions model.bf16=true trains in fp32: the fp32 specialists answer it.
    assert key(True, native=False) == key(False, native=False) == key(False, native=True)
    assert key(True, native=True) != key(True, native=False)


def test_lora_initialisation_follows_the_run_seed_not_the_process_history(tiny_config):
    def lora_weights(seed):
        config = tiny_config(**{"model.lora": True, "model.lora_r": 4, "train.seed": seed})
        model = prepare_inputs(config).loaded.model
        return torch.cat([p.detach().flatten() for n, p in model.named_parameters() if "lora_A" in n])

    first = lora_weights(3)
    torch.manual_seed(12345)  # what an earlier run in the same process might leave behind
    torch.rand(1000)
    assert torch.equal(lora_weights(3), first)
    assert not torch.equal(lora_weights(4), first)
