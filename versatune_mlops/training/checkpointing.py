"""Checkpoints for an exact resume, and atomic writes so a crash never leaves half a file.

A checkpoint folder ``checkpoints/step-NNNNNN`` holds the trainable parameters (the LoRA adapter or
the full model), optimizer, scheduler, RNG states, and ``state.json`` with the loop state, sampler
and strategy state. It is written under a temporary name and renamed when complete, so the newest
folder is always a whole checkpoint.
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


def save(output_dir: Path, state, model, optimizer, scheduler, sampler_state: dict, strategy_state: dict, keep: int) -> Path:
    root = Path(output_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{state.step:06d}"
    tmp = root / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
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


def load(path: str | Path, model, optimizer, scheduler):
    """Restore model, optimizer, scheduler and RNGs in place; return (loop state, sampler, strategy state)."""
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
    missing, unexpected = model.load_state_dict(torch.load(path / "model.pt", weights_only=True), strict=False)
    if unexpected:
        raise ConfigError(f"Checkpoint {path} does not match this model (unexpected keys such as {unexpected[:3]}). "
                          "Resume with the same model and LoRA settings it was trained with.")
    opt = torch.load(path / "optimizer.pt", weights_only=False)
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
