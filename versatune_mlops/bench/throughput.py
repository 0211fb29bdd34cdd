"""The throughput report: how fast the training loop runs, against what it ran before, a bare torch
loop and this machine's own matmul rate, side by side in one command.

Each variant runs in a fresh process, so its peak memory (RSS on CPU, ``max_memory_allocated`` on
GPU) is its own, and the variants alternate over the repeats, so a noisy neighbour hits all alike.
Every variant trains on the same draws from the same sampler:

- ``before``: the path up to this change: logits at every position, batches as drawn;
- ``after``: response-only loss, batches regrouped by length within each window;
- ``after + checkpointing``: the same with gradient checkpointing;
- ``bare torch``: the plainest loop doing the same maths on the same batches as ``after`` (the
  platform's overhead is the ratio ``after`` / ``bare``).

Tokens/s is reported two ways: response tokens trained per second (what the loss is computed on)
and all non-padding tokens per second. MFU is the model FLOPs of the useful work (padding excluded,
the head counted at response positions only, recomputation not counted) per second over the
measured bf16 (or fp32) matmul rate of this device.
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
import statistics
import tempfile
import time
from typing import Any

import torch

from ..config import RunConfig, from_dict, validate
from ..data.formatting import collate
from ..training.evaluation import per_example_loss
from ..training.loop import peak_rss_bytes, train
from ..training.setup import (assemble_run, initial_state, make_optimizer, prepare_inputs, resolve_prior,
                              training_loss_module)
from ..training.state import BaseEvaluation
from ..training.steps import draw_window
from .loop_speed import static_mixture

log = logging.getLogger(__name__)

VARIANTS = {
    "before": {"train.response_only_loss": False, "train.length_group_batches": 1},
    "after": {},
    "after + checkpointing": {"train.gradient_checkpointing": True},
    "bare torch": {},
    "after + compile": {"train.compile": True},
}
DEFAULT_VARIANTS = ("before", "after", "after + checkpointing", "bare torch")
FLOP_FORMULA = ("model FLOPs = k * N_body * tokens + k * N_head * response_tokens + 6 * L * H * sum(len^2); "
                "k = 4 under LoRA (no weight gradient for the frozen base), 6 for full fine-tuning")


def matmul_rate(dtype: torch.dtype, device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of an n x n matmul: the device's practical peak for this dtype."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first call warms up
        _sync(device)
        started = time.perf_counter()
        torch.matmul(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def planned_batches(config: RunConfig, inputs) -> list[list[tuple[int, int]]]:
    """The global batches the loop will train on, drawn and grouped by the loop's own code."""
    prior, _ = resolve_prior(config, inputs, ".", write=False)
    state = initial_state(config, inputs, prior, None, BaseEvaluation({}, {}), {d: 0.0 for d in inputs.data.domains})
    run = assemble_run(config, inputs, state, *make_optimizer(config, inputs.loaded.model))
    batches = []
    while len(batches) < config.train.max_steps:
        window = draw_window(config, run)
        run.state.step += len(window)
        batches += window
    return batches


def model_flops(model: torch.nn.Module, batches: list[dict], lora: bool) -> float:
    """Useful FLOPs of training on ``batches`` (see FLOP_FORMULA)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    embeddings = base.get_input_embeddings()
    n_head = head.weight.numel()
    tied = head.weight is embeddings.weight
    n_body = sum(p.numel() for n, p in base.named_parameters() if "lora_" not in n) - n_head - (0 if tied else embeddings.weight.numel())
    config = base.config
    k = 4 if lora else 6
    flops = 0.0
    for batch in batches:
        lengths = batch["attention_mask"].sum(dim=1).double()
        responses = float((batch["labels"][:, 1:] != -100).sum())
        flops += k * n_body * float(lengths.sum()) + k * n_head * responses
        flops += 6 * config.num_hidden_layers * config.hidden_size * float((lengths**2).sum())
    return flops


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return (peak_rss_bytes() or 0) / 2**30


def measure_variant(name: str, config_tree: dict) -> dict[str, Any]:
    """One variant in this (fresh) process: train, time the evaluation pass, report memory."""
    config = validate(from_dict(config_tree))
    inputs = prepare_inputs(config)
    model = inputs.loaded.model
    device = next(model.parameters()).device
    pad_id = inputs.loaded.tokenizer.pad_token_id
    batches = [collate([inputs.train_encoded[inputs.data.domains[d]][i] for d, i in draws], pad_id)
               for draws in planned_batches(config, inputs)]
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    responses = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
    padding = 1 - tokens / sum(b["attention_mask"].numel() for b in batches)
    if name == "bare torch":
        seconds = bare_torch_loop(config, model, [{k: v.to(device) for k, v in b.items()} for b in batches])
    else:
        with tempfile.TemporaryDirectory(prefix="versatune-throughput-") as tmp:
            summary = train(config, tmp, inputs=inputs)
        if summary["tokens_trained"] != tokens:
            raise RuntimeError(f"{name}: the loop trained {summary['tokens_trained']} tokens, the plan has {tokens}")
        seconds = summary["train_seconds"]
    eval_seconds, sequences = timed_evaluation(config, inputs, old_path=name == "before")
    return {
        "variant": name, "seconds": seconds, "tokens": tokens, "response_tokens": responses, "padding": padding,
        "flops": model_flops(model, batches, config.model.lora), "eval_seconds": eval_seconds,
        "eval_sequences": sequences, "peak_memory_gb": _peak_memory_gb(device),
    }


def bare_torch_loop(config: RunConfig, model: torch.nn.Module, batches: list[dict]) -> float:
    """The plainest loop over the same maths: loss module, backward, clip, AdamW step. Returns seconds."""
    t = config.train
    loss_module = training_loss_module(config, model)
    optimizer, scheduler = make_optimizer(config, model)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    started = time.perf_counter()
    for batch in batches:
        loss_sum, count = loss_module(**batch)
        loss = loss_sum.sum() / count.sum().clamp(min=1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        optimizer.step()
        scheduler.step()
    _sync(next(model.parameters()).device)
    return time.perf_counter() - started


@torch.no_grad()
def timed_evaluation(config: RunConfig, inputs, old_path: bool) -> tuple[float, int]:
    """Seconds for one evaluation pass over every domain's held-out set, and its sequence count.

    ``old_path``: as before this change, batches in data order and logits at every position."""
    model, pad_id = inputs.loaded.model, inputs.loaded.tokenizer.pad_token_id
    device = next(model.parameters()).device
    model.eval()
    sequences = 0
    started = time.perf_counter()
    for examples in inputs.eval_encoded.values():
        examples = list(examples) if old_path else sorted(examples, key=lambda e: len(e["input_ids"]))
        for start in range(0, len(examples), config.train.eval_batch_size):
            chunk = examples[start:start + config.train.eval_batch_size]
            batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}
            per_example_loss(model, batch, config.model.bf16, response_only=not old_path)
            sequences += len(chunk)
    _sync(device)
    return time.perf_counter() - started, sequences


def run_throughput_report(config: RunConfig, steps: int = 8, repeats: int = 2,
                          variants: tuple[str, ...] = DEFAULT_VARIANTS) -> dict[str, Any]:
    """Every variant ``repeats`` times, alternating, each in its own process; medians per variant."""
    base = static_mixture(config, steps)
    context = multiprocessing.get_context("spawn")  # a fresh process: its peak memory is its own
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for repeat in range(repeats):
        for name in variants:
            tree = base.to_dict()
            for dotted, value in VARIANTS[name].items():
                section, key = dotted.split(".")
                tree[section][key] = value
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                result = pool.submit(measure_variant, name, tree).result()
            runs[name].append(result)
            log.info("repeat %d, %s: %.1f response tokens/s, peak %.2f GB", repeat, name,
                     result["response_tokens"] / result["seconds"], result["peak_memory_gb"])
    device = torch.device("cuda" if torch.cuda.is_available() and config.model.device != "cpu" else "cpu")
    rates = {"bfloat16": matmul_rate(torch.bfloat16, device), "float32": matmul_rate(torch.float32, device)}
    peak = rates["bfloat16" if config.model.bf16 else "float32"]
    rows = {}
    for name, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        first = results[0]
        rows[name] = {
            "response_tokens_per_s": first["response_tokens"] / seconds,
            "tokens_per_s": first["tokens"] / seconds,
            "padding": first["padding"],
            "peak_memory_gb": max(r["peak_memory_gb"] for r in results),
            "mfu": first["flops"] / seconds / peak,
            "eval_sequences_per_s": first["eval_sequences"] / statistics.median(r["eval_seconds"] for r in results),
            "seconds": [r["seconds"] for r in results],
        }
    return {"model": config.model.name, "batch_size": config.train.batch_size, "max_length": config.train.max_length,
            "lora": config.model.lora, "bf16": config.model.bf16, "steps": steps, "repeats": repeats,
            "device": str(device), "threads": torch.get_num_threads(), "matmul_flops": rates,
            "peak_dtype": "bfloat16" if config.model.bf16 else "float32", "flop_formula": FLOP_FORMULA, "rows": rows}
