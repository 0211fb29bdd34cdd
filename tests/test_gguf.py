"""A `.gguf` file as model.name: converted once to a cached plain checkpoint, then trained like any model.

The GGUF is written here with the `gguf` package's writer from the tiny random Llama (so the test
downloads nothing), the way llama.cpp's converter lays a Llama out: its tensor names, Q/K rows
permuted for its rotary layout, the byte-level BPE vocabulary and merges as metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from versatune_mlops.config import ModelConfig, load_config
from versatune_mlops.errors import ConfigError, ModelError
from versatune_mlops.training.loop import train
from versatune_mlops.training.models import load_model

CORPUS = ["Write an exam question on law.", "The court held that the contract was void.",
          "A patient presents with chest pain.", "Compute the derivative of x squared."] * 8


def _permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's Q/K permutation (transformers' GGUF loader undoes it)."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def write_llama_gguf(model, tokenizer, path: Path, architecture: str = "llama") -> Path:
    config = model.config
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]) if getattr(config, "rope_parameters", None)
                              else float(getattr(config, "rope_theta", 10000.0)))
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    vocab = tokenizer.backend_tokenizer.get_vocab(with_added_tokens=True)
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = set(tokenizer.all_special_tokens)
    merges = [" ".join(pair) for pair in json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_chat_template(tokenizer.chat_template)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        weights = tensor.detach().float().numpy()
        if name.endswith("q_proj.weight"):
            weights = _permute(weights, config.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            weights = _permute(weights, config.num_key_value_heads)
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        assert gguf_name, f"no GGUF name for {name}"
        writer.add_tensor(gguf_name, np.ascontiguousarray(weights))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """A tiny Llama as a GGUF file, and the model and tokenizer it was written from."""
    folder = tmp_path_factory.mktemp("gguf")
    torch.manual_seed(0)
    config = ModelConfig(name="tiny", cache_dir=str(folder / "cache"))
    config.tiny.num_layers, config.tiny.hidden_size, config.tiny.vocab_size = 2, 64, 512
    loaded = load_model(config, tokenizer_corpus=CORPUS)
    return write_llama_gguf(loaded.model, loaded.tokenizer, folder / "tiny-llama.gguf"), loaded


def test_a_gguf_file_loads_as_the_model_it_was_written_from(tiny_gguf, tmp_path):
    path, original = tiny_gguf
    config = ModelConfig(name=str(path), cache_dir=str(tmp_path / "cache"))
    loaded = load_model(config)
    text = "Write an exam question on law."
    ids = original.tokenizer(text, return_tensors="pt").input_ids
    assert loaded.tokenizer(text, return_tensors="pt").input_ids.tolist() == ids.tolist()
    with torch.no_grad():
        expected, got = original.model(ids).logits, loaded.model(ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # Converted once: the second load reads the cached plain checkpoint.
    cached = list((tmp_path / "cache" / "gguf").iterdir())
    assert len(cached) == 1 and (cached[0] / "config.json").is_file()
    assert load_model(config).source == str(path.resolve())
    assert list((tmp_path / "cache" / "gguf").iterdir()) == cached


def test_a_gguf_model_trains_at_tiny_scale(tiny_gguf, tmp_path):
    path, _ = tiny_gguf
    config = load_config("tiny", overrides={
        "model.name": str(path), "model.cache_dir": str(tmp_path / "cache"), "train.max_steps": 2,
        "train.batch_size": 2, "train.max_length": 768, "train.eval_accuracy": False, "train.save_model": False,
        "data.domains": ["science", "code"], "data.max_examples_per_domain": 8, "data.max_eval_per_domain": 2,
        "method.method": "uniform",
    })
    summary = train(config, tmp_path / "out")
    assert summary["steps"] == 2 and all(np.isfinite(v) for v in summary["eval_loss_after"].values())


def test_a_missing_gguf_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"no such GGUF file.*existing \.gguf file"):
        load_config("tiny", overrides={"model.name": str(tmp_path / "nope.gguf")})


def test_an_unsupported_gguf_architecture_is_a_model_error_naming_the_supported_ones(tiny_gguf, tmp_path):
    _, original = tiny_gguf
    path = write_llama_gguf(original.model, original.tokenizer, tmp_path / "odd.gguf", architecture="mamba9")
    with pytest.raises(ModelError, match=r"architecture mamba9 is not supported.*llama.*pass that folder"):
        load_model(ModelConfig(name=str(path), cache_dir=str(tmp_path / "cache")))
    assert not (tmp_path / "cache" / "gguf").exists() or not any((tmp_path / "cache" / "gguf").glob("*/config.json"))


def test_a_file_that_is_not_gguf_is_a_model_error(tmp_path):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelError, match="could not be read as a GGUF model"):
        load_model(ModelConfig(name=str(path), cache_dir=str(tmp_path / "cache")))
