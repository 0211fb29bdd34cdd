"""Reference losses ℓ_ref,d: the loss each domain can reach, for the learnable potential γ_d.

Strategies and what they cost:

- ``initial_fraction`` (default, free): ℓ_ref,d = reference_fraction × ℓ_d(base model). Uses the
  evaluation that runs before training anyway; assumes every domain can shed the same share.
- ``fixed`` (free): the user gives ℓ_ref,d per domain (e.g. from an earlier specialist run).
- ``specialist`` (DoReMi-style, as in the paper's code): for each domain, a short run of
  ``specialist_steps`` steps on that domain alone from the base model; ℓ_ref,d is its best held-out
  loss. Costs |D| × specialist_steps training steps plus their evaluations, once: the result is
  cached on disk under the model cache, keyed by model, data fingerprint and training budget.
  The specialists train with a fixed seed, not the run's: ℓ_ref is a property of the model and
  the data, so every seed of a benchmark and every trial of a sweep shares one computation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Mapping

from .checkpointing import write_json_atomic
from .config import RunConfig
from .data import DomainData
from .models import cache_root

log = logging.getLogger(__name__)

SPECIALIST_SEED = 0


def reference_losses(config: RunConfig, inputs, base_losses: Mapping[str, float]) -> dict[str, float]:
    mc, domains = config.method, inputs.data.domains
    if mc.reference == "fixed":
        return {d: float(mc.reference_losses[d]) for d in domains}
    if mc.reference == "specialist":
        return specialist_reference_losses(config, inputs)
    return {d: mc.reference_fraction * float(base_losses[d]) for d in domains}


def _cache_key(config: RunConfig, inputs) -> str:
    t, m = config.train, config.model
    budget = {
        "model": inputs.loaded.source, "data": inputs.data.fingerprint(), "steps": config.method.specialist_steps,
        "lr": t.learning_rate, "batch": t.batch_size, "max_length": t.max_length, "seed": SPECIALIST_SEED,
        "lora": [m.lora, m.lora_r, m.lora_alpha], "bf16": m.bf16,
    }
    return hashlib.sha256(json.dumps(budget, sort_keys=True).encode()).hexdigest()[:16]


def specialist_reference_losses(config: RunConfig, inputs) -> dict[str, float]:
    from .loop import prepare_inputs, train  # the specialist runs are ordinary training runs

    cache = cache_root(config.model) / "reference" / f"{_cache_key(config, inputs)}.json"
    if cache.is_file():
        log.info("Reference losses from cache %s", cache)
        return json.loads(cache.read_text())["reference_loss"]
    losses: dict[str, float] = {}
    steps = config.method.specialist_steps
    for domain in inputs.data.domains:
        log.info("Specialist run for reference loss: %s, %d steps", domain, steps)
        single = DomainData(
            domains=[domain],
            train={domain: inputs.data.train[domain]},
            eval={domain: inputs.data.eval[domain]},
            eval_mc={domain: []},
        )
        specialist = dataclasses.replace(
            config,
            method=dataclasses.replace(config.method, method="uniform", mode="fostering", target=None, prior=None,
                                       reference="initial_fraction", interval=max(1, steps // 4)),
            train=dataclasses.replace(config.train, max_steps=steps, checkpoint_every=0, eval_accuracy=False,
                                      save_model=False, seed=SPECIALIST_SEED),
        )
        with tempfile.TemporaryDirectory(prefix="versatune-specialist-") as tmp:
            summary = train(specialist, Path(tmp), inputs=prepare_inputs(specialist, data=single))
        seen = [summary["eval_loss_after"][domain]] + [r["eval_loss"][domain] for r in summary["reweighting_records"]]
        losses[domain] = float(min(seen))
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cache, {"reference_loss": losses, "specialist_steps": steps})
    return losses

