"""Per-domain held-out evaluation: response loss (token-weighted), multiple-choice accuracy, aggregates.

The re-weighting signal ℓ_d is :func:`domain_losses`: token-mean cross-entropy over response tokens
only, on each domain's held-out split. Cross-entropy is always computed in fp32, also under bf16
autocast, because small loss differences between domains are the signal.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.examples import MCItem
from ..data.formatting import IGNORE_INDEX, collate, encode_choice
from .loss import ResponseLoss, autocast_context, full_logits_loss
from .parallel import SINGLE_PROCESS, Parallel

log = logging.getLogger(__name__)

ACCURACY_METRIC_DIR = Path(__file__).resolve().parent / "metrics" / "domain_accuracy"


def per_example_loss(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], bf16: bool = False,
                     response_only: bool = True):
    """Forward pass; returns (summed response-token loss, response-token count) per example.

    Summed per example so callers can weight by tokens (eval) or group by domain (training).
    ``response_only=False`` computes the logits of every position (the path before the head was
    applied at response positions only; the throughput benchmark compares the two).
    """
    loss = ResponseLoss(model, bf16=bf16, response_only=response_only)
    return loss(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])


@torch.no_grad()
def domain_losses(
    model: torch.nn.Module,
    encoded_eval: Mapping[str, Sequence[dict]],
    batch_size: int,
    pad_token_id: int,
    bf16: bool = False,
    parallel: Parallel = SINGLE_PROCESS,
    response_only: bool = True,
    sharded_loss: Optional[torch.nn.Module] = None,
    device: Optional[torch.device] = None,
) -> dict[str, float]:
    """Token-weighted mean response loss per domain on pre-encoded held-out examples.

    With several workers each evaluates its shard and the sums are added up, so every worker gets
    the same losses (and therefore computes the same new weights). ``sharded_loss`` is the FSDP root
    of a sharded model: every forward is then a collective, so every worker runs the same number of
    batches (a worker whose shard is shorter repeats a batch and discards its result). ``device``:
    where the batches go (default: the parameters' device, which FSDP's CPU offload changes).
    """
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    domains = list(encoded_eval)
    sums = np.zeros((len(domains), 2))  # per domain: summed loss, response tokens
    shards = {d: parallel.shard(encoded_eval[d]) for d in domains}
    progress = tqdm(total=sum(map(len, shards.values())), desc="eval: loss", unit="ex", leave=False,
                    disable=not parallel.is_main)
    for row, domain in enumerate(domains):
        # Sorted by length, so each batch pads to a similar length (the sums do not depend on order).
        examples = sorted(shards[domain], key=lambda e: len(e["input_ids"]))
        n_batches = math.ceil(len(examples) / batch_size)
        if sharded_loss is not None:  # rank 0's shard is the longest one
            n_batches = math.ceil(math.ceil(len(encoded_eval[domain]) / parallel.world_size) / batch_size)
        for k in range(n_batches):
            chunk = examples[k * batch_size:(k + 1) * batch_size]
            progress.update(len(chunk))
            filler = not chunk
            chunk = chunk or encoded_eval[domain][:1]
            batch = {key: v.to(device) for key, v in collate(chunk, pad_token_id).items()}
            if sharded_loss is not None:
                loss_sum, count = sharded_loss(**batch)
            else:
                loss_sum, count = per_example_loss(model, batch, bf16, response_only)
            if not filler:
                sums[row] += (float(loss_sum.sum()), int(count.sum()))
    progress.close()
    sums = parallel.sum(sums)
    model.train(was_training)
    return {d: (sums[i, 0] / sums[i, 1] if sums[i, 1] else math.nan) for i, d in enumerate(domains)}


@lru_cache(maxsize=1)
def _accuracy_metric():
    import evaluate

    return evaluate.load(str(ACCURACY_METRIC_DIR))


@torch.no_grad()
def domain_accuracy(
    model: torch.nn.Module,
    tokenizer,
    mc_items: Mapping[str, Sequence[MCItem]],
    max_length: int,
    bf16: bool = False,
) -> dict[str, float]:
    """Multiple-choice accuracy per domain: the choice with the lowest mean token loss wins.

    The candidates of one item are scored as one batch that shares the prompt's cache.

    Mean (not summed) loss so longer options are not penalised for their length. Domains without
    multiple-choice items are left out.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    accuracy: dict[str, float] = {}
    total = sum(len(item.choices) for items in mc_items.values() for item in items)
    progress = tqdm(total=total, desc="eval: accuracy", unit="choice", leave=False)
    skipped: list[str] = []
    for domain, items in mc_items.items():
        if not items:
            continue
        mean_losses = []
        for item in items:
            encoded = [encode_choice(tokenizer, item.messages, choice, max_length) for choice in item.choices]
            progress.update(len(encoded))
            mean_losses.extend(choice_mean_losses(model, encoded, tokenizer.pad_token_id, bf16, device))
        predictions, references, offset = [], [], 0
        for item in items:
            scores = mean_losses[offset : offset + len(item.choices)]
            offset += len(item.choices)
            if not np.all(np.isfinite(scores)):
                continue
            predictions.append(int(np.argmin(scores)))
            references.append(item.answer)
        if len(predictions) < len(items):
            skipped.append(f"{domain} {len(items) - len(predictions)}/{len(items)}")
        if not predictions:
            continue
        accuracy[domain] = _accuracy_metric().compute(predictions=predictions, references=references)["accuracy"]
    progress.close()
    if skipped:  # one line, not one per domain
        log.warning("accuracy: skipped items that do not fit max_length=%d: %s", max_length, ", ".join(skipped))
    model.train(was_training)
    return accuracy


@torch.no_grad()
def choice_mean_losses(model: torch.nn.Module, encoded: Sequence[dict], pad_token_id: int, bf16: bool,
                       device: torch.device) -> list[float]:
    """Mean reply-token loss of each candidate reply of one multiple-choice item.

    The candidates share their prompt, so it is run once and its key/value cache is reused for every
    reply: about 4x fewer tokens than scoring each (prompt + reply) in full, with the same numbers
    (each reply token still sees exactly the prompt and the reply tokens before it). A reply cut off
    entirely by max_length has nothing to score and gets NaN.
    """
    n_prompt = [next((i for i, label in enumerate(e["labels"]) if label != IGNORE_INDEX), len(e["labels"]))
                for e in encoded]
    shared = n_prompt[0]
    if shared < 2 or any(n != shared or e["input_ids"][:shared] != encoded[0]["input_ids"][:shared]
                         for n, e in zip(n_prompt, encoded)):
        # No common prompt to cache (or a one-token prompt): score each sequence in full.
        batch = {k: v.to(device) for k, v in collate(list(encoded), pad_token_id).items()}
        loss_sum, count = per_example_loss(model, batch, bf16)
        return _mean_or_nan(loss_sum, count)

    # The cache holds the prompt but its last token; that token is fed again with each reply, so the
    # logits of the continuation predict exactly the reply tokens (labels from position `shared`).
    prefix = torch.tensor([encoded[0]["input_ids"][: shared - 1]], device=device)
    continuations = [{"input_ids": e["input_ids"][shared - 1 :], "labels": e["labels"][shared - 1 :]} for e in encoded]
    batch = {k: v.to(device) for k, v in collate(continuations, pad_token_id).items()}
    with autocast_context(model, bf16):
        cache = model(input_ids=prefix, use_cache=True).past_key_values
        cache.batch_repeat_interleave(len(encoded))
        attention = torch.cat([torch.ones(len(encoded), shared - 1, dtype=batch["attention_mask"].dtype, device=device),
                               batch["attention_mask"]], dim=1)
        logits = model(input_ids=batch["input_ids"], attention_mask=attention, past_key_values=cache).logits
    loss_sum, count = full_logits_loss(logits, batch["labels"])
    return _mean_or_nan(loss_sum, count)


def _mean_or_nan(loss_sum: torch.Tensor, count: torch.Tensor) -> list[float]:
    """Per-row mean loss; NaN for a row with no labelled token (cut off by max_length)."""
    return torch.where(count > 0, loss_sum / count.clamp(min=1), math.nan).tolist()


def domain_score(loss: float) -> float:
    """Per-domain score in (0, 1]: exp(−loss), the geometric-mean probability of a response token.

    Higher is better, so the paper's aggregate (mean of per-domain scores, relative gain over
    uniform) applies to held-out loss unchanged.
    """
    return math.exp(-loss)


def aggregate(losses: Mapping[str, float], accuracy: Mapping[str, float] | None = None) -> dict[str, float]:
    """Aggregates with the project's metric names."""
    values = np.array(list(losses.values()), dtype=float)
    result = {
        "eval_loss/mean": float(np.mean(values)),
        "eval_loss/worst": float(np.max(values)),
        "score/multi_domain": float(np.mean([domain_score(v) for v in values])),
    }
    if accuracy:
        result["accuracy/mean"] = float(np.mean(list(accuracy.values())))
        result["accuracy/worst"] = float(np.min(list(accuracy.values())))
    return result


def domain_metrics(losses: Mapping[str, float], accuracy: Mapping[str, float] | None = None) -> dict[str, float]:
    """Flat metric dict: eval_loss/<domain>, accuracy/<domain> and the aggregates."""
    metrics = {f"eval_loss/{d}": v for d, v in losses.items()}
    metrics.update({f"accuracy/{d}": v for d, v in (accuracy or {}).items()})
    metrics.update(aggregate(losses, accuracy))
    return metrics
