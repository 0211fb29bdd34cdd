"""FSDP2 for ``distributed.strategy=fsdp``: shard the model across the workers, gather it back once.

Each transformer block becomes its own ``fully_shard`` unit (its parameters are all-gathered just
before its forward and freed after), then the loss module is sharded as the root, which holds what
is left (embeddings, final norm, LM head). The root is the :class:`~.loss.ResponseLoss` wrapper, not
the model, because the response-only loss calls the model's body and head separately: only the
wrapper's forward runs around both, so only it can gather the root parameters for them. Training
and the held-out evaluation therefore both call the sharded loss module (see ``TrainingRun.eval_loss``).

PyTorch's own pieces throughout: ``torch.distributed.fsdp.fully_shard`` with a
``MixedPrecisionPolicy`` (bf16 parameters for compute, fp32 gradient reduction on GPU; fp32 on CPU,
where gloo has no bf16 reduction worth having), optional ``CPUOffloadPolicy``, and
``torch.distributed.checkpoint.state_dict`` to gather the full weights for the saved model.
"""

from __future__ import annotations

import logging

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

from ..config import RunConfig
from ..errors import ModelError

log = logging.getLogger(__name__)


def transformer_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's repeated blocks: the modules whose class transformers lists in ``_no_split_modules``
    (e.g. ``LlamaDecoderLayer``), the same unit accelerate and TRL wrap for FSDP."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        raise ModelError(
            f"distributed.strategy=fsdp found no transformer blocks to shard in {type(base).__name__} "
            f"(it names none in _no_split_modules{': ' + ', '.join(sorted(names)) if names else ''}). "
            f"FSDP shards one block at a time; use a transformers causal LM, or distributed.strategy=ddp."
        )
    return blocks


def shard(config: RunConfig, loss_module: torch.nn.Module, model: torch.nn.Module) -> torch.nn.Module:
    """Shard ``model``'s blocks and ``loss_module`` (which contains ``model``) in place; returns the root.

    Call it inside an initialised process group, before the optimizer is built (the optimizer must
    see the sharded parameters, not the originals).
    """
    device = next(model.parameters()).device
    on_gpu = device.type == "cuda"
    if on_gpu and config.model.bf16:
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    else:
        policy = MixedPrecisionPolicy()  # keep the parameters' own dtype (fp32 on CPU)
    offload = CPUOffloadPolicy(pin_memory=on_gpu) if config.distributed.cpu_offload else OffloadPolicy()
    blocks = transformer_blocks(model)
    for block in blocks:
        fully_shard(block, mp_policy=policy, offload_policy=offload)
    fully_shard(loss_module, mp_policy=policy, offload_policy=offload)
    log.info("FSDP: %d %s blocks + root sharded (params %s, offload %s)", len(blocks), type(blocks[0]).__name__,
             policy.param_dtype or "as stored", bool(config.distributed.cpu_offload))
    return loss_module


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights, gathered from every shard into CPU memory on rank 0 (empty on the
    others). A collective: every worker must call it."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
