"""Everything before the first step: inputs, the base model's evaluation, the prior, the strategy,
the optimizer, and the assembled :class:`~.state.TrainingRun` (fresh or resumed)."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from transformers import get_scheduler

from ..config import RunConfig, check_domains_against_data
from ..errors import ConfigError
from ..data.formatting import check_max_length, encode_split
from ..data.self_answers import fill_self_answers
from ..data.sources import DomainData, load_domain_data
from ..mixing.probe import example_text, run_probe
from ..mixing.sampler import DomainSampler
from ..mixing.strategies import WeightingStrategy, build_strategy, method_names, strategy_class
from . import sharding
from .checkpointing import write_json_atomic
from .evaluation import domain_accuracy, domain_losses
from .loss import ResponseLoss
from .models import cache_root, load_model, resolve_device
from .parallel import SINGLE_PROCESS, Parallel
from .state import BaseEvaluation, LoopState, RunInputs, TrainingRun

# Methods whose initial weights come from the probe's distribution.
PRIOR_METHODS = method_names(needs_prior=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_inputs(config: RunConfig, data: Optional[DomainData] = None) -> RunInputs:
    data = data or load_domain_data(config.data)
    check_domains_against_data(config, data.domains)
    corpus = [example_text(ex) for d in data.domains for ex in data.train[d]]
    # LoRA's A matrices are drawn from the global RNG: seed it here, so the initialisation is the
    # run's (train.seed), not whatever an earlier run in this process left (benchmarks, sweeps).
    seed_everything(config.train.seed)
    loaded = load_model(config.model, tokenizer_corpus=corpus)
    check_max_length(loaded.tokenizer, config.train.max_length)
    # The base model answers its own prompts (multigenre general) before LoRA or training changes it.
    data = fill_self_answers(data, loaded.model, loaded.tokenizer, cache_root(config.model),
                             config.data.self_answer_max_tokens, config.train.eval_batch_size)
    train_encoded = encode_split(loaded.tokenizer, data.train, config.train.max_length, "train")
    eval_encoded = encode_split(loaded.tokenizer, data.eval, config.train.max_length, "eval")
    return RunInputs(data=data, loaded=loaded, train_encoded=train_encoded, eval_encoded=eval_encoded)


def evaluate_losses(config: RunConfig, inputs: RunInputs, model: torch.nn.Module,
                    parallel: Parallel = SINGLE_PROCESS,
                    sharded_loss: Optional[torch.nn.Module] = None) -> dict[str, float]:
    """Held-out loss per domain; ``sharded_loss`` is the FSDP root a sharded model is evaluated through."""
    return domain_losses(model, inputs.eval_encoded, config.train.eval_batch_size,
                         inputs.loaded.tokenizer.pad_token_id, config.model.bf16, parallel,
                         response_only=config.train.response_only_loss, sharded_loss=sharded_loss,
                         device=resolve_device(config.model.device))


def measure_accuracy(config: RunConfig, inputs: RunInputs, model: torch.nn.Module) -> dict[str, float]:
    if not config.train.eval_accuracy or not any(inputs.data.eval_mc.values()):
        return {}
    return domain_accuracy(model, inputs.loaded.tokenizer, inputs.data.eval_mc, config.train.max_length,
                           config.model.bf16)


def evaluate_base(config: RunConfig, inputs: RunInputs, parallel: Parallel = SINGLE_PROCESS,
                  sharded_loss: Optional[torch.nn.Module] = None) -> BaseEvaluation:
    """Held-out loss and accuracy of the model as loaded, before any training."""
    model = inputs.loaded.model
    return BaseEvaluation(eval_loss=evaluate_losses(config, inputs, model, parallel, sharded_loss),
                          accuracy=measure_accuracy(config, inputs, model))


def resolve_prior(config: RunConfig, inputs: RunInputs, output_dir: Path,
                  write: bool = True) -> tuple[dict[str, float], Optional[dict]]:
    """The domain distribution the mixture starts from (given, or measured by the probe), and the
    probe's output when it ran."""
    domains = inputs.data.domains
    if config.method.prior is not None:
        return {d: float(config.method.prior[d]) for d in domains}, None
    if config.method.method not in PRIOR_METHODS:
        return {d: 1.0 / len(domains) for d in domains}, None  # unused by these methods; uniform for the record
    result = run_probe(inputs.loaded.model, inputs.loaded.tokenizer, inputs.data, config.probe,
                       cache_dir=cache_root(config.model)).to_json()
    if write:
        write_json_atomic(Path(output_dir) / "distribution.json", result)
    return result["distribution"], result


def train_sizes(inputs: RunInputs) -> np.ndarray:
    return np.array([len(inputs.train_encoded[d]) for d in inputs.data.domains], dtype=float)


def make_strategy(config: RunConfig, domains: list[str], prior: dict[str, float], sizes: np.ndarray) -> WeightingStrategy:
    mc = config.method
    return build_strategy(
        mc.method, domains, mode=mc.mode, prior=np.array([prior[d] for d in domains]), sizes=sizes,
        coefficients=mc.coefficients(), floor=config.probe.floor,
        target=mc.target, target_initial_share=mc.target_initial_share, target_max_share=mc.target_max_share,
        potential="absolute" if mc.reference == "released_code" else "relative",
        **{name: getattr(mc, name) for name in strategy_class(mc.method).options},
    )


def initial_state(config: RunConfig, inputs: RunInputs, prior: dict[str, float], probe_result: Optional[dict],
                  base: BaseEvaluation, reference: dict[str, float]) -> LoopState:
    """The loop state at step 0, from the prior, the base evaluation and the reference losses."""
    domains = inputs.data.domains
    weights = make_strategy(config, domains, prior, train_sizes(inputs)).initial_weights()
    n = len(domains)
    return LoopState(
        weights=weights.tolist(),
        # φ at the first re-weighting point compares against the base model's loss (NaN: unknown).
        prev_eval_loss=[base.eval_loss.get(d, math.nan) for d in domains],
        train_loss_sum=[0.0] * n,
        train_loss_tokens=[0] * n,
        eval_loss_before=base.eval_loss,
        accuracy_before=base.accuracy,
        reference_loss=reference,
        initial_weights=dict(zip(domains, weights.tolist())),
        prior=prior,
        probe_result=probe_result,
    )


def make_optimizer(config: RunConfig, model: torch.nn.Module):
    t = config.train
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=t.learning_rate, weight_decay=t.weight_decay)
    scheduler = get_scheduler(t.lr_schedule, optimizer, num_warmup_steps=int(t.warmup_ratio * t.max_steps),
                              num_training_steps=t.max_steps)
    return optimizer, scheduler


def assemble_run(config: RunConfig, inputs: RunInputs, state: LoopState, optimizer, scheduler,
                 parallel: Parallel = SINGLE_PROCESS, sampler_state: Optional[dict] = None,
                 strategy_state: Optional[dict] = None, train_model: Optional[torch.nn.Module] = None) -> TrainingRun:
    """The live objects of a run from its state (fresh, or restored from a checkpoint with the
    sampler's and strategy's own state). ``train_model``: the loss module the caller already built
    (it must exist before the optimizer under FSDP); None builds it here."""
    t, domains = config.train, inputs.data.domains
    sizes = train_sizes(inputs)
    strategy = make_strategy(config, domains, state.prior, sizes)
    sampler = DomainSampler([len(inputs.train_encoded[d]) for d in domains], state.weights, seed=t.seed)
    if strategy_state is not None:
        strategy.load_state_dict(strategy_state)
        sampler.load_state_dict(sampler_state)
    # Re-weight every `interval` steps, or once per pass over the training data (the paper).
    interval = config.method.interval or max(1, math.ceil(sizes.sum() / t.batch_size))
    if strategy.probe_step_count() >= interval:
        raise ConfigError(
            f"method.interval={interval} steps cannot hold {config.method.method}'s probes: {strategy.probe_step_count()} "
            f"steps per round (|D|={len(domains)} x method.aioli_probe_rounds x method.aioli_probe_steps). Raise "
            f"method.interval above {strategy.probe_step_count()}, or lower the probe rounds or steps.")
    model = inputs.loaded.model
    train_model = train_model if train_model is not None else training_loss_module(config, model, parallel)
    return TrainingRun(
        inputs=inputs, state=state, model=model, train_model=train_model,
        sharded_loss=train_model if is_sharded(config, parallel) else None,
        optimizer=optimizer, scheduler=scheduler, strategy=strategy, sampler=sampler,
        trainable=[p for group in optimizer.param_groups for p in group["params"]],
        interval=interval,
        ref_loss=np.array([state.reference_loss[d] for d in domains]),
        parallel=parallel,
    )


def is_sharded(config: RunConfig, parallel: Parallel) -> bool:
    """FSDP applies to several workers; one worker (or one process) holds the whole model anyway."""
    return config.distributed.strategy == "fsdp" and parallel.world_size > 1


def training_loss_module(config: RunConfig, model: torch.nn.Module, parallel: Parallel = SINGLE_PROCESS) -> torch.nn.Module:
    """What a training step calls: the response-only loss of ``model``, with gradient checkpointing,
    torch.compile and DDP or FSDP as configured. Evaluation uses the plain model, except under FSDP,
    where the sharded loss module returned here is the only way to run the model (sharding.py).
    Under FSDP this shards ``model`` in place: build the optimizer after it."""
    t = config.train
    if t.gradient_checkpointing:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        # Non-reentrant checkpointing needs no input that requires grad, so it also works under LoRA.
        kwargs = {"use_reentrant": False}
        if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x; the older name is deprecated
            base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    module: torch.nn.Module = ResponseLoss(model, bf16=config.model.bf16, response_only=t.response_only_loss)
    if is_sharded(config, parallel):
        return sharding.shard(config, module, model)
    if t.compile:
        module = torch.compile(module, dynamic=True)  # lengths vary from batch to batch
    if parallel.world_size > 1:
        device = next(model.parameters()).device
        module = torch.nn.parallel.DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)
    return module
