"""The SFT loss on response tokens only, computed where it counts.

A causal LM's head maps every position's hidden state to |V| logits, but only the positions whose
next token is a labelled response token carry loss (prompts and padding are masked). For SmolLM2
at batch 8 x 384 the full path materialises 8 x 384 x 49,152 logits and copies them to fp32 several
times through log-softmax and its gradient. :class:`ResponseLoss` runs the model's body, gathers
the hidden states at the labelled positions, and applies the head there in chunks, with fp32
cross-entropy per chunk; during training each chunk is recomputed in the backward pass
(activation checkpointing), so the logits of only one chunk exist at a time.

The numbers are the same as the full path's (the test holds them within 1e-4 in fp32); a model it
cannot split into body + head (no ``get_decoder``/``get_output_embeddings``, or a head that does
more than a linear map, e.g. logit soft-capping) falls back to the full path with a log line.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Optional

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..data.formatting import IGNORE_INDEX

log = logging.getLogger(__name__)

# Response positions per head chunk: 1,024 x 49,152 fp32 logits is ~200 MB, a fraction of the full path.
CHUNK_POSITIONS = 1024
# Config attributes of heads that do more than a linear map (their logits are post-processed).
_HEAD_EXTRAS = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale", "logits_scaling")


def autocast_context(model: torch.nn.Module, bf16: bool):
    """bf16 autocast when ``bf16`` is set and the device computes bf16 natively; fp32 otherwise."""
    if not bf16:
        return contextlib.nullcontext()
    if not effective_bf16(model, bf16):
        _warn_no_native_bf16()
        return contextlib.nullcontext()
    return torch.autocast(device_type=next(model.parameters()).device.type, dtype=torch.bfloat16)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX). Without them torch's CPU bf16
    matmuls take a scalar fallback kernel: measured on a 2-core AVX2 EPYC, a SmolLM2 LoRA step took
    425 s under bf16 autocast against 12.6 s in fp32 (34x), where an AMX CPU ran it 2.5x faster."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if not all(callable(check) for check in checks):
        return True  # a torch without these probes: trust the configuration
    return any(check() for check in checks)


def precision_on(device: torch.device, bf16: bool) -> str:
    """"bfloat16" or "float32": what a model on ``device`` computes in when ``model.bf16`` is ``bf16``.
    The one place that decides, for the autocast, the run summary's ``precision`` and the benchmark's
    base evaluation."""
    return "bfloat16" if bf16 and (device.type != "cpu" or cpu_has_native_bf16()) else "float32"


def effective_bf16(model: torch.nn.Module, bf16: bool) -> bool:
    """Whether ``model.bf16`` really computes in bf16 on this worker."""
    return precision_on(next(model.parameters()).device, bf16) == "bfloat16"


_warned_no_native_bf16 = False


def _warn_no_native_bf16() -> None:
    global _warned_no_native_bf16
    if not _warned_no_native_bf16:
        _warned_no_native_bf16 = True
        log.warning("model.bf16=true, but this CPU (%s) has no bf16 instructions (AVX512-BF16 or AMX): torch would "
                    "run every bf16 matmul in a fallback kernel, ~30x slower than fp32. This process computes in "
                    "fp32 instead (the run summary records precision=float32). Set model.bf16=false on such "
                    "machines to silence this.", torch.backends.cpu.get_cpu_capability())


def split_body_and_head(model: torch.nn.Module) -> Optional[tuple[torch.nn.Module, torch.nn.Module]]:
    """(body returning hidden states, head) of a causal LM, LoRA-wrapped or not; None if it cannot be split."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    get_decoder = getattr(base, "get_decoder", None)
    get_head = getattr(base, "get_output_embeddings", None)
    if get_decoder is None or get_head is None:
        return None
    body, head = get_decoder(), get_head()
    config = getattr(base, "config", None)
    if body is None or body is base or head is None or any(getattr(config, name, None) for name in _HEAD_EXTRAS):
        return None
    return body, head


_warned_fallback: set[str] = set()


class ResponseLoss(torch.nn.Module):
    """``forward(input_ids, attention_mask, labels) -> (summed response loss, response tokens)`` per row.

    A module, so DDP can wrap it and its forward is the one gradient synchronisation sees.
    ``response_only=False`` is the full-logits path (kept for the side-by-side benchmark).
    """

    def __init__(self, model: torch.nn.Module, bf16: bool = False, response_only: bool = True,
                 chunk_positions: int = CHUNK_POSITIONS) -> None:
        super().__init__()
        self.model = model
        self.bf16 = bf16
        self.chunk_positions = chunk_positions
        self.parts = split_body_and_head(model) if response_only else None
        name = type(model).__name__
        if response_only and self.parts is None and name not in _warned_fallback:
            _warned_fallback.add(name)
            log.info("%s cannot be split into body and head; computing the loss over all logits", name)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor):
        with autocast_context(self.model, self.bf16):
            if self.parts is None:
                logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
                return full_logits_loss(logits, labels)
            body, head = self.parts
            hidden = body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
            # The hidden state at position i predicts the token at i + 1.
            targets = labels[:, 1:]
            rows, cols = (targets != IGNORE_INDEX).nonzero(as_tuple=True)
            gathered, wanted = hidden[:, :-1][rows, cols], targets[rows, cols]
            token_loss = torch.cat([self._chunk_loss(head, gathered[i:i + self.chunk_positions],
                                                     wanted[i:i + self.chunk_positions])
                                    for i in range(0, gathered.size(0), self.chunk_positions)]) \
                if gathered.size(0) else gathered.new_zeros(0, dtype=torch.float32)
        loss_sum = torch.zeros(labels.size(0), dtype=torch.float32, device=labels.device).index_add(0, rows, token_loss)
        return loss_sum, torch.bincount(rows, minlength=labels.size(0))

    @staticmethod
    def _chunk_loss(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and hidden.requires_grad:
            return checkpoint(_head_cross_entropy, head, hidden, targets, use_reentrant=False)
        return _head_cross_entropy(head, hidden, targets)


def _head_cross_entropy(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="none")  # fp32 cross-entropy


def full_logits_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed loss, token count) per row over the labelled tokens, in fp32, from all positions' logits;
    the model's logits at position i predict the token at i + 1."""
    logits = logits[:, :-1].float()  # fp32 cross-entropy
    targets = labels[:, 1:]
    token_loss = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(targets.shape)
    mask = targets != IGNORE_INDEX
    return (token_loss * mask).sum(dim=1), mask.sum(dim=1)
