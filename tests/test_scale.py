"""Beyond one device: gradient accumulation, the model options for real-size models, the cluster
preset, and the FSDP errors that need no process group."""

import importlib.util
import json

import pytest
import torch
from safetensors.torch import load_file

from versatune_mlops.config import load_config
from versatune_mlops.errors import ConfigError, ModelError
from versatune_mlops.training.loop import train
from versatune_mlops.training.models import load_model
from versatune_mlops.training.sharding import transformer_blocks

PRIOR = {"law": 0.3, "medicine": 0.1, "finance": 0.2, "science": 0.1, "code": 0.2, "general": 0.1}
# Same maths, different summation order: the domain weights agree to ~1e-8. Parameters agree to
# ~2e-5 after 4 AdamW steps at lr 3e-3: Adam divides by sqrt(v), so for the few entries whose
# gradient is near zero (embedding rows of rare tokens) rounding in g shows up at lr scale.
WEIGHT_TOLERANCE = 1e-5
PARAM_TOLERANCE = 1e-4


def small_run(**extra):
    overrides = {"train.max_steps": 4, "method.interval": 2, "train.eval_accuracy": False, "method.prior": PRIOR}
    overrides.update(extra)
    return load_config("tiny", overrides=overrides)


def weight_gap(a, b):
    assert [p["step"] for p in a["weight_trajectory"]] == [p["step"] for p in b["weight_trajectory"]]
    return max(abs(p["weights"][d] - q["weights"][d])
               for p, q in zip(a["weight_trajectory"], b["weight_trajectory"]) for d in p["weights"])


def param_gap(dir_a, dir_b):
    a, b = load_file(dir_a / "model" / "model.safetensors"), load_file(dir_b / "model" / "model.safetensors")
    assert set(a) == set(b)
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def one_batch(tmp_path_factory):
    """The reference: 4 steps of one batch of 8 in one process (shared with test_distributed's FSDP runs)."""
    out = tmp_path_factory.mktemp("one-batch")
    return out, train(small_run(), out)


@pytest.mark.slow
def test_micro_batches_match_one_batch(one_batch, tmp_path):
    reference_dir, reference = one_batch
    accumulated = train(small_run(**{"train.micro_batch_size": 2}), tmp_path)
    assert accumulated["tokens_trained"] == reference["tokens_trained"]
    assert reference["final_weights"] != reference["initial_weights"], "the weights moved"
    assert weight_gap(reference, accumulated) < WEIGHT_TOLERANCE
    assert param_gap(reference_dir, tmp_path) < PARAM_TOLERANCE
    for d in reference["domains"]:
        assert abs(reference["eval_loss_after"][d] - accumulated["eval_loss_after"][d]) < 1e-4


def test_micro_batch_must_divide_the_worker_batch():
    with pytest.raises(ConfigError, match="micro_batch_size=3 does not divide the per-worker batch"):
        small_run(**{"train.micro_batch_size": 3})
    with pytest.raises(ConfigError, match=r"train.batch_size=8 over 3 worker\(s\)"):
        small_run(**{"train.micro_batch_size": 2, "distributed.num_workers": 3})
    assert small_run(**{"train.micro_batch_size": 2, "distributed.num_workers": 2}).train.micro_batch_size == 2


def test_fsdp_settings_that_cannot_work_are_refused():
    with pytest.raises(ConfigError, match="distributed.strategy=fsdp shards the model across Ray workers"):
        small_run(**{"distributed.strategy": "fsdp"})
    with pytest.raises(ConfigError, match="distributed.strategy='zero3' is unknown"):
        small_run(**{"distributed.strategy": "zero3"})
    with pytest.raises(ConfigError, match="needs distributed.strategy=fsdp"):
        small_run(**{"distributed.cpu_offload": True})
    with pytest.raises(ConfigError, match="only makes sense on a GPU"):
        small_run(**{"model.dtype": "bfloat16"})
    assert small_run(**{"model.dtype": "bfloat16", "model.device": "cuda"}).model.dtype == "bfloat16"


def test_a_model_without_transformer_blocks_cannot_be_sharded():
    with pytest.raises(ModelError, match="found no transformer blocks to shard in Sequential"):
        transformer_blocks(torch.nn.Sequential(torch.nn.Linear(4, 4)))


def test_remote_code_is_refused_unless_allowed(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "versatune_custom",
        "auto_map": {"AutoConfig": "configuration_custom.CustomConfig",
                     "AutoModelForCausalLM": "modeling_custom.CustomModel"},
    }))
    with pytest.raises(ModelError, match="runs only with model.trust_remote_code=true"):
        load_model(small_run(**{"model.name": str(tmp_path)}).model)
    assert small_run().model.trust_remote_code is False


def test_attention_implementation_reaches_the_model():
    with pytest.raises(ConfigError, match="model.attn_implementation='flash' is unknown"):
        small_run(**{"model.attn_implementation": "flash"})
    loaded = load_model(small_run(**{"model.attn_implementation": "eager"}).model, ["the cat sat on the mat"] * 20)
    assert loaded.model.config._attn_implementation == "eager"


def test_flash_attention_without_flash_attn_is_a_clear_error():
    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash_attn is installed here")
    with pytest.raises(ModelError, match="needs the flash_attn package"):
        load_model(small_run(**{"model.attn_implementation": "flash_attention_2"}).model, ["a b"] * 20)


def test_cluster_preset_validates():
    config = load_config("cluster-7b")
    t, dc = config.train, config.distributed
    assert (config.model.name, dc.strategy, dc.num_workers, dc.use_gpu) == ("Qwen/Qwen2.5-7B", "fsdp", 8, True)
    assert (t.batch_size, t.learning_rate, t.max_length, config.method.interval, config.probe.num_samples) == \
        (128, 2e-5, 512, 0, 10_000)
    assert config.model.bf16 and not config.model.trust_remote_code
    # The plan: every GPU runs the same number of equal micro-batches per step.
    assert t.batch_size // dc.num_workers // t.micro_batch_size == 4


def test_parameter_and_optimizer_bytes_count_weights_and_adam_moments():
    import torch

    from versatune_mlops.training.loop import parameter_and_optimizer_bytes
    from versatune_mlops.training.parallel import Parallel

    layer = torch.nn.Linear(10, 4)  # 44 fp32 parameters
    optimizer = torch.optim.AdamW(layer.parameters())
    assert parameter_and_optimizer_bytes(layer, optimizer) == 44 * 4, "no optimizer state before the first step"
    layer(torch.ones(1, 10)).sum().backward()
    optimizer.step()
    # exp_avg and exp_avg_sq per parameter (fp32), plus each parameter's scalar step count
    step_bytes = sum(s["step"].numel() * s["step"].element_size() for s in optimizer.state.values())
    assert parameter_and_optimizer_bytes(layer, optimizer) == 3 * 44 * 4 + step_bytes
    assert Parallel().gather(7.0) == [7.0], "one process: its own value"
