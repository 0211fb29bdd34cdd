"""Reference losses ℓ_ref,d: the loss each domain can reach, for the learnable potential γ_d.

Strategies and what they cost:

- ``initial_fraction`` (default, free): ℓ_ref,d = reference_fraction × ℓ_d(base model). Uses the
  evaluation that runs before training anyway; assumes every domain can shed the same share.
- ``released_code`` (free): ℓ_ref = 0, and the strategy scores domains by the absolute potential
  ℓ_d − ℓ_ref,d (``setup.make_strategy``), so γ_d is the raw loss, as in the released code.
- ``curve_fit`` (free): starts as ``initial_fraction``; at every re-weighting point the step loop
  refits ℓ_ref,d as the asymptote of the domain's own eval history (``steps.refit_reference``).
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

from ..config import RunConfig
from ..data.examples import DomainData
from .checkpointing import write_json_atomic
from .hooks import HookList
from .loss import effective_bf16
from .models import cache_root
from .setup import (assemble_run, evaluate_losses, initial_state, make_optimizer, prepare_inputs, resolve_prior,
                    seed_everything)
from .state import BaseEvaluation, RunInputs
from .steps import run_steps

log = logging.getLogger(__name__)

SPECIALIST_SEED = 0


def reference_losses(config: RunConfig, inputs: RunInputs, base_losses: Mapping[str, float]) -> dict[str, float]:
    mc, domains = config.method, inputs.data.domains
    if mc.reference == "fixed":
        return {d: float(mc.reference_losses[d]) for d in domains}
    if mc.reference == "specialist":
        return specialist_reference_losses(config, inputs)
    if mc.reference == "released_code":
        return {d: 0.0 for d in domains}
    # initial_fraction, and curve_fit's value until its curves have enough points.
    return {d: mc.reference_fraction * float(base_losses[d]) for d in domains}


def _cache_key(config: RunConfig, inputs: RunInputs) -> str:
    t, m = config.train, config.model
    budget = {
        "model": inputs.loaded.source, "data": inputs.data.fingerprint(), "steps": config.method.specialist_steps,
        "lr": t.learning_rate, "batch": t.batch_size, "max_length": t.max_length, "seed": SPECIALIST_SEED,
        # The precision the specialists really train in, not the config's wish: on a CPU without bf16
        # instructions model.bf16=true computes in fp32, and its losses must not answer a bf16 run.
        "lora": [m.lora, m.lora_r, m.lora_alpha], "bf16": effective_bf16(inputs.loaded.model, m.bf16),
    }
    return hashlib.sha256(json.dumps(budget, sort_keys=True).encode()).hexdigest()[:16]


def specialist_reference_losses(config: RunConfig, inputs: RunInputs) -> dict[str, float]:
    cache = cache_root(config.model) / "reference" / f"{_cache_key(config, inputs)}.json"
    if cache.is_file():
        log.info("Reference losses from cache %s", cache)
        return json.loads(cache.read_text())["reference_loss"]
    losses = {domain: train_specialist(config, inputs, domain) for domain in inputs.data.domains}
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cache, {"reference_loss": losses, "specialist_steps": config.method.specialist_steps})
    return losses


def specialist_config(config: RunConfig) -> RunConfig:
    """The run's budget on one domain alone: uniform (= 100% that domain), no probe, a fixed seed."""
    steps = config.method.specialist_steps
    return dataclasses.replace(
        config,
        method=dataclasses.replace(config.method, method="uniform", mode="fostering", target=None, prior=None,
                                   reference="initial_fraction", interval=max(1, steps // 4), signal="eval"),
        train=dataclasses.replace(config.train, max_steps=steps, checkpoint_every=0, eval_accuracy=False,
                                  save_model=False, seed=SPECIALIST_SEED),
    )


def train_specialist(config: RunConfig, inputs: RunInputs, domain: str) -> float:
    """Train a fresh copy of the base model on ``domain`` alone; its best held-out loss on that domain."""
    specialist = specialist_config(config)
    log.info("Specialist run for reference loss: %s, %d steps", domain, specialist.train.max_steps)
    single = DomainData(domains=[domain], train={domain: inputs.data.train[domain]},
                        eval={domain: inputs.data.eval[domain]}, eval_mc={domain: []})
    spec_inputs = prepare_inputs(specialist, data=single)
    seed_everything(specialist.train.seed)
    # Only the best held-out loss matters, so the specialist skips the base evaluation and the
    # reference of its own: the uniform strategy uses neither.
    prior, _ = resolve_prior(specialist, spec_inputs, Path("."), write=False)
    state = initial_state(specialist, spec_inputs, prior, None, BaseEvaluation(eval_loss={}, accuracy={}),
                          reference={domain: float("nan")})
    run = assemble_run(specialist, spec_inputs, state, *make_optimizer(specialist, spec_inputs.loaded.model))
    with tempfile.TemporaryDirectory(prefix="versatune-specialist-") as tmp:
        run_steps(specialist, run, HookList([]), Path(tmp))
    final = evaluate_losses(specialist, spec_inputs, run.model)[domain]
    return float(min([final] + [r["eval_loss"][domain] for r in state.trajectory]))
