"""The response-only loss (training/loss.py) and the throughput options: same numbers as the
full-logits path, less padding with length grouping, gradient checkpointing and bf16 base weights."""

import dataclasses
import logging

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from versatune_mlops.data.formatting import IGNORE_INDEX, collate
from versatune_mlops.training.evaluation import per_example_loss
from versatune_mlops.training.loop import train
from versatune_mlops.training import loss as loss_module
from versatune_mlops.training.loss import ResponseLoss, autocast_context, effective_bf16, split_body_and_head
from versatune_mlops.training.models import _wrap_lora
from versatune_mlops.training.setup import prepare_inputs


def _model(tied: bool) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                         num_key_value_heads=4, vocab_size=300, tie_word_embeddings=tied)
    return LlamaForCausalLM(config)


def _batch(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(5):
        prompt, response = int(rng.integers(3, 12)), int(rng.integers(1, 9))
        ids = rng.integers(0, 300, prompt + response).tolist()
        examples.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
    examples.append({"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX] * 3})  # nothing to score
    return collate(examples, pad_token_id=0)


def _loss_and_grads(model, batch, response_only, chunk_positions=1024):
    model.zero_grad()
    loss = ResponseLoss(model, response_only=response_only, chunk_positions=chunk_positions)
    loss_sum, count = loss(**batch)
    (loss_sum.sum() / count.sum()).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss_sum.detach(), count, grads


@pytest.mark.parametrize("head", ["tied", "untied", "lora"])
def test_response_only_loss_equals_the_full_logits_loss(head):
    model = _model(tied=head == "tied")
    if head == "lora":
        model = _wrap_lora(model, dataclasses.make_dataclass("C", [("lora_r", int, 4), ("lora_alpha", int, 8),
                                                                    ("lora_dropout", float, 0.0)])())
        for name, parameter in model.named_parameters():  # LoRA B starts at zero: give it gradients worth comparing
            if "lora_B" in name:
                torch.nn.init.normal_(parameter, std=0.02)
    assert split_body_and_head(model) is not None
    batch = _batch()
    full_sum, full_count, full_grads = _loss_and_grads(model, batch, response_only=False)
    # Small chunks, so the chunking and its checkpointed backward are exercised too.
    part_sum, part_count, part_grads = _loss_and_grads(model, batch, response_only=True, chunk_positions=7)
    assert torch.equal(full_count, part_count) and part_count[-1] == 0
    torch.testing.assert_close(part_sum, full_sum, atol=1e-4, rtol=0)
    assert full_grads.keys() == part_grads.keys() and full_grads
    for name in full_grads:
        torch.testing.assert_close(part_grads[name], full_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_a_model_that_cannot_be_split_falls_back_to_all_logits_and_says_so(caplog):
    class Wrapped(torch.nn.Module):  # a causal LM without get_decoder/get_output_embeddings
        def __init__(self):
            super().__init__()
            self.inner = _model(tied=True)

        def forward(self, **kwargs):
            return self.inner(**kwargs)

    model, batch = Wrapped(), _batch(1)
    with caplog.at_level(logging.INFO, logger="versatune_mlops.training.loss"):
        loss_sum, count = per_example_loss(model, batch)
    assert "cannot be split" in caplog.text
    expected, _ = per_example_loss(model.inner, batch)
    torch.testing.assert_close(loss_sum, expected, atol=1e-4, rtol=0)


def test_length_grouping_cuts_padding_and_keeps_the_mixture(tiny_config, tmp_path):
    common = {"train.max_steps": 16, "method.method": "uniform", "method.interval": 8, "train.save_model": False,
              "train.eval_accuracy": False, "train.batch_size": 4}
    plain = train(tiny_config(**common, **{"train.length_group_batches": 1}), tmp_path / "plain")
    grouped = train(tiny_config(**common, **{"train.length_group_batches": 8}), tmp_path / "grouped")
    assert grouped["padding_fraction"] < plain["padding_fraction"]
    # The same draws from the same weights: only which batch an example lands in changes.
    assert grouped["realised_share"] == plain["realised_share"]
    assert grouped["tokens_trained"] == plain["tokens_trained"]


def test_a_group_never_crosses_a_reweighting_point(tiny_config, tmp_path):
    # interval 3 with groups of 8: every group is cut at the next re-weighting point, so the realised
    # share of each period follows that period's weights (the dynamic run's weights move every 3 steps).
    config = tiny_config(**{"train.max_steps": 9, "method.method": "doremi", "method.interval": 3,
                            "train.save_model": False, "train.eval_accuracy": False, "train.length_group_batches": 8})
    inputs = prepare_inputs(config)
    from versatune_mlops.training import steps

    windows = []
    real = steps.draw_window
    steps.draw_window = lambda config, run: windows.append(run.state.step) or real(config, run)
    try:
        train(config, tmp_path, inputs=inputs)
    finally:
        steps.draw_window = real
    assert windows == [0, 3, 6]


@pytest.mark.parametrize("extra", [{"train.gradient_checkpointing": True},
                                   {"model.lora": True, "model.dtype": "bfloat16", "model.bf16": True},
                                   {"model.lora": True, "model.dtype": "bfloat16"}])
def test_memory_options_train_and_lower_the_loss(tiny_config, tmp_path, extra):
    config = tiny_config(**{"train.max_steps": 12, "method.method": "uniform", "method.interval": 6,
                            "train.save_model": False, "train.eval_accuracy": False, **extra})
    inputs = prepare_inputs(config)
    if "model.dtype" in extra:
        dtypes = {p.dtype for p in inputs.loaded.model.parameters() if not p.requires_grad}
        assert dtypes == {torch.bfloat16}
        assert {p.dtype for p in inputs.loaded.model.parameters() if p.requires_grad} == {torch.float32}
    summary = train(config, tmp_path, inputs=inputs)
    before, after = summary["metrics_before"]["eval_loss/mean"], summary["metrics_after"]["eval_loss/mean"]
    assert after < before


def _cpu_bf16(monkeypatch, native: bool) -> None:
    """Pretend this CPU has (or lacks) bf16 instructions, whatever the machine running the test has."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(loss_module, "_warned_no_native_bf16", False)


def test_bf16_autocast_runs_on_a_cpu_with_bf16_instructions(monkeypatch):
    _cpu_bf16(monkeypatch, native=True)
    model = _model(tied=True)
    with autocast_context(model, bf16=True):
        assert torch.is_autocast_enabled("cpu")
        assert model.model.layers[0].mlp.up_proj(torch.ones(1, 64)).dtype == torch.bfloat16
    assert effective_bf16(model, True) and not effective_bf16(model, False)


def test_bf16_on_a_cpu_without_bf16_instructions_computes_in_fp32_and_says_so(monkeypatch, caplog):
    """torch would run every bf16 matmul in a scalar fallback kernel there (34x slower than fp32, measured)."""
    _cpu_bf16(monkeypatch, native=False)
    model = _model(tied=True)
    with caplog.at_level(logging.WARNING, logger="versatune_mlops.training.loss"):
        for _ in range(2):
            with autocast_context(model, bf16=True):
                assert not torch.is_autocast_enabled("cpu")
                assert model.model.layers[0].mlp.up_proj(torch.ones(1, 64)).dtype == torch.float32
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "warned once per process, not per step"
    assert "no bf16 instructions" in warnings[0] and "model.bf16=false" in warnings[0]
    assert not effective_bf16(model, True)


def test_the_run_summary_records_the_precision_it_computed_in(tiny_config, tmp_path, monkeypatch):
    _cpu_bf16(monkeypatch, native=False)
    config = tiny_config(**{"train.max_steps": 2, "method.method": "uniform", "train.save_model": False,
                            "train.eval_accuracy": False, "model.bf16": True})
    summary = train(config, tmp_path)
    assert summary["precision"] == "float32" and summary["config"]["model"]["bf16"] is True
    _cpu_bf16(monkeypatch, native=True)
    assert train(config, tmp_path / "native")["precision"] == "bfloat16"


def test_wrapping_lora_prints_no_deprecation_warning():
    """peft reads transformers' deprecated is_gradient_checkpointing alias; the demo must not show it."""
    import warnings

    options = dataclasses.make_dataclass("C", [("lora_r", int, 4), ("lora_alpha", int, 8), ("lora_dropout", float, 0.0)])()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _wrap_lora(_model(tied=True), options)
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
