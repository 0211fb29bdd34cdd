"""Checkpoints for an exact resume, and atomic writes so a crash never leaves half a file.

A checkpoint folder ``checkpoints/step-NNNNNN`` holds the trainable parameters (the LoRA adapter or
the full model), optimizer, scheduler, RNG states, and ``state.json`` with the loop state, sampler
and strategy state. It is written under a temporary name and renamed when complete, so the newest
folder is always a whole checkpoint.

Under FSDP (``sharded=True``) the parameters and optimizer state go through
``torch.distributed.checkpoint`` into ``sharded/``: every worker writes its own shard into the same
folder (so the output folder must be storage every worker sees, as on a cluster it must be anyway),
and a resume on any number of workers reads the pieces it needs. The rest is written by rank 0.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from ..errors import ConfigError
from .models import unsharded_copy
from .state import LoopState

log = logging.getLogger(__name__)

PREFIX = "step-"


def write_json_atomic(path: Path, payload: Any) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_json_default))
    os.replace(tmp, path)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value)}")


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Only what training changes: the adapter under LoRA, every parameter otherwise."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in names}


# Only what training changes goes into a sharded checkpoint too (the adapter under LoRA). Loading
# is not strict because the frozen weights are absent on purpose; unexpected keys are still refused.
_SHARDED_OPTIONS = StateDictOptions(ignore_frozen_params=True, strict=False)


def save(output_dir: Path, state, model, optimizer, scheduler, sampler_state: dict, strategy_state: dict, keep: int,
         sharded: bool = False, is_main: bool = True) -> Optional[Path]:
    """Write a checkpoint; returns its folder (None on workers other than rank 0).

    Unsharded, only rank 0 calls it. Sharded, every worker must (the shard writes are collective).
    """
    root = Path(output_dir) / "checkpoints"
    final = root / f"{PREFIX}{state.step:06d}"
    tmp = root / f".tmp-{final.name}"
    if is_main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    if sharded:
        torch.distributed.barrier()  # the folder exists before any worker writes into it
        model_state, optimizer_state = get_state_dict(model, optimizer, options=_SHARDED_OPTIONS)
        # Returns on rank 0 once every worker's shard is written and the metadata is complete.
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp / "sharded")
        if not is_main:
            return None
        torch.save({"scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
    else:
        torch.save(_trainable_state(model), tmp / "model.pt")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.random.get_rng_state()},
               tmp / "rng.pt")
    write_json_atomic(tmp / "state.json", {
        "loop": dataclasses.asdict(state), "sampler": sampler_state, "strategy": strategy_state,
    })
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(root.glob(f"{PREFIX}*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("Checkpoint written: %s", final)
    return final


def latest(output_dir: str | Path) -> Optional[Path]:
    folders = sorted((Path(output_dir) / "checkpoints").glob(f"{PREFIX}*"))
    return folders[-1] if folders else None


def load(path: str | Path, model, optimizer, scheduler, sharded: bool = False):
    """Restore model, optimizer, scheduler and RNGs in place; return (loop state, sampler, strategy state).

    ``sharded``: the model is sharded by FSDP; every worker calls this and reads its shard."""
    path = Path(path)
    if (path / "checkpoints").is_dir():  # an output folder: take its newest checkpoint
        newest = latest(path)
        if newest is None:
            raise ConfigError(f"{path} has no checkpoint to resume from. Run without --resume to start afresh.")
        path = newest
    if not (path / "state.json").is_file():
        raise ConfigError(
            f"{path} is not a checkpoint folder (no state.json). Pass a checkpoints/step-N folder or the run's output folder."
        )
    written_sharded = (path / "sharded").is_dir()
    if written_sharded != sharded:
        raise ConfigError(
            f"Checkpoint {path} was written {'with' if written_sharded else 'without'} distributed.strategy=fsdp; "
            f"resume it with the same strategy ({'fsdp' if written_sharded else 'ddp or one process'}).")
    if sharded:
        model_state, optimizer_state = get_state_dict(model, optimizer, options=_SHARDED_OPTIONS)
        pieces = {"model": model_state, "optimizer": optimizer_state}
        dcp.load(pieces, checkpoint_id=path / "sharded")  # fills the shards in place
        unexpected = set_state_dict(model, optimizer, model_state_dict=pieces["model"],
                                    optim_state_dict=pieces["optimizer"], options=_SHARDED_OPTIONS).unexpected_keys
    else:
        _, unexpected = model.load_state_dict(torch.load(path / "model.pt", weights_only=True), strict=False)
    if unexpected:
        raise ConfigError(f"Checkpoint {path} does not match this model (unexpected keys such as {list(unexpected)[:3]}). "
                          "Resume with the same model and LoRA settings it was trained with.")
    opt = torch.load(path / "optimizer.pt", weights_only=False)
    if not sharded:
        optimizer.load_state_dict(opt["optimizer"])
    scheduler.load_state_dict(opt["scheduler"])
    rng = torch.load(path / "rng.pt", weights_only=False)
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.random.set_rng_state(rng["torch"])
    payload = json.loads((path / "state.json").read_text())
    return LoopState(**payload["loop"]), payload["sampler"], payload["strategy"]


def save_final_model(target: Path, model, tokenizer, state_dict: Optional[dict] = None) -> None:
    """Save a plain transformers model (LoRA merged) atomically: no half-written model folder.

    ``state_dict``: the full weights of a sharded ``model``, gathered from its shards; they are
    loaded into an unsharded copy, which is what gets saved."""
    target = Path(target)
    if state_dict is not None:
        model = unsharded_copy(model, state_dict)
    tmp = target.with_name(f".tmp-{target.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
