"""The embedded default model, end to end on a few steps (slow: loads the real 135M model)."""

import pytest
import torch

from versatune_mlops.config import load_config
from versatune_mlops.training.loop import train
from versatune_mlops.training.setup import prepare_inputs

pytestmark = pytest.mark.slow


def test_smollm2_lora_bf16_probe_and_train(tmp_path):
    config = load_config("smollm2", overrides={
        "data.domains": ["law", "code"], "data.max_examples_per_domain": 16, "data.max_eval_per_domain": 2,
        "probe.num_samples": 4, "probe.max_new_tokens": 8, "probe.batch_size": 4,
        "train.max_steps": 3, "method.interval": 2, "train.batch_size": 2, "train.eval_accuracy": True,
        "train.max_length": 256, "train.save_model": False,
    })
    inputs = prepare_inputs(config)
    model = inputs.loaded.model
    assert sum(p.numel() for p in model.parameters()) > 130e6
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "layers.0.self_attn.q_proj.base_layer" in n}
    assert lora and all("lora_" in n for n in lora)

    summary = train(config, tmp_path, inputs=inputs)

    assert any(not torch.equal(p, lora[n]) for n, p in model.named_parameters() if n in lora)
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if n in base), "LoRA keeps the base frozen"
    assert summary["model_source"] == "smollm2" and summary["steps"] == 3
    assert all(0 < v < 10 for v in summary["eval_loss_after"].values())
    assert set(summary["accuracy_after"]) <= {"law", "code"}
    assert abs(sum(summary["final_weights"].values()) - 1) < 1e-9
