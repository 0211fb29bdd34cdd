"""Validation: the one place that checks a config's values, with messages that say how to fix them.

Modules downstream trust a validated config and do not re-check it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError
from ..mixing.strategies import check_method_mode, strategy_class
from ..mixing.weights import share_cap_problem
from .schema import (ATTENTION_IMPLEMENTATIONS, COEFFICIENT_BOUNDS, ESTIMATORS, OBJECTIVES, PARALLEL_STRATEGIES,
                     REFERENCE_STRATEGIES, SEARCHERS, SIGNALS, RunConfig, sweep_baseline)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_distribution(values: Mapping[str, Any], what: str) -> dict[str, float]:
    """Check a domain -> weight mapping: finite, non-negative, positive sum. Returns it normalised."""
    _check(isinstance(values, Mapping) and len(values) > 0, f"{what} must be a non-empty mapping domain -> weight.")
    for domain, weight in values.items():
        _check(
            _is_number(weight) and weight >= 0,
            f"{what}[{domain!r}] = {weight!r} is not a finite non-negative number. "
            f"Give every domain a weight >= 0.",
        )
    total = float(sum(values.values()))
    _check(total > 0, f"{what} sums to zero. Give at least one domain a positive weight.")
    return {d: float(w) / total for d, w in values.items()}


def validate(config: RunConfig) -> RunConfig:
    """Check every value once, with messages that say how to fix them."""
    _validate_data(config)
    _validate_model(config)
    _validate_probe(config)
    _validate_method(config)
    _validate_train(config)
    _validate_distributed(config)
    _validate_tune(config)
    return config


def _validate_data(config: RunConfig) -> None:
    d = config.data
    _check(d.format in ("auto", "jsonl", "csv", "parquet", "hf"),
           f"data.format={d.format!r} is unknown; use auto, jsonl, csv, parquet or hf.")
    _check(0 < d.eval_fraction < 1, f"data.eval_fraction={d.eval_fraction} must be in (0, 1), e.g. 0.1.")
    if d.domains is not None:
        _check(isinstance(d.domains, list) and len(d.domains) >= 1 and all(isinstance(x, str) and x for x in d.domains),
               f"data.domains={d.domains!r} must be a list of domain names.")
        _check(len(set(d.domains)) == len(d.domains), f"data.domains={d.domains!r} lists a domain twice.")
    for name in ("max_eval_per_domain", "max_examples_per_domain"):
        value = getattr(d, name)
        _check(value is None or (isinstance(value, int) and value >= 1),
               f"data.{name}={value!r} must be a positive integer or null.")
    _check(isinstance(d.self_answer_max_tokens, int) and d.self_answer_max_tokens >= 1,
           f"data.self_answer_max_tokens={d.self_answer_max_tokens!r} must be a positive integer, e.g. 96.")


def _validate_model(config: RunConfig) -> None:
    m = config.model
    _check(isinstance(m.name, str) and m.name,
           "model.name must be 'smollm2', 'tiny', a .gguf file, a local folder or a hub id.")
    # A GGUF file is checked here, before any run starts; what is inside it is checked when it loads.
    _check(not m.name.lower().endswith(".gguf") or Path(m.name).expanduser().is_file(),
           f"model.name={m.name!r}: no such GGUF file. Pass the path of an existing .gguf file "
           f"(relative to the folder you run from), a model folder, a hub id, 'smollm2' or 'tiny'.")
    _check(m.lora_r >= 1, f"model.lora_r={m.lora_r} must be >= 1.")
    _check(m.device == "auto" or m.device == "cpu" or m.device.startswith("cuda"),
           f"model.device={m.device!r} is unknown; use auto, cpu, cuda or cuda:N.")
    _check(m.torch_threads is None or m.torch_threads >= 1, f"model.torch_threads={m.torch_threads} must be >= 1.")
    _check(m.dtype in ("float32", "bfloat16"), f"model.dtype={m.dtype!r} is unknown; use float32 or bfloat16.")
    # Full fine-tuning in bf16 weights is what large-model users run on GPUs (half the memory); on a
    # CPU it only loses precision (no bf16 kernels worth it), so it is refused there.
    on_gpu = m.device.startswith("cuda") or config.distributed.use_gpu is True
    _check(m.dtype == "float32" or m.lora or on_gpu,
           f"model.dtype={m.dtype} with full fine-tuning stores the weights that training updates in bf16, "
           f"which only makes sense on a GPU: set model.device=cuda (or distributed.use_gpu=true), use "
           f"model.lora=true (frozen base in bf16, adapter in fp32), or keep model.dtype=float32 with "
           f"model.bf16 autocast.")
    _check(m.attn_implementation in ATTENTION_IMPLEMENTATIONS,
           f"model.attn_implementation={m.attn_implementation!r} is unknown; use one of "
           f"{', '.join(ATTENTION_IMPLEMENTATIONS)}.")
    _check(isinstance(m.trust_remote_code, bool),
           f"model.trust_remote_code={m.trust_remote_code!r} must be true or false.")


def _validate_probe(config: RunConfig) -> None:
    p = config.probe
    _check(p.num_samples >= 1, f"probe.num_samples={p.num_samples} must be >= 1.")
    _check(p.max_new_tokens >= 1, f"probe.max_new_tokens={p.max_new_tokens} must be >= 1.")
    _check(p.batch_size >= 1, f"probe.batch_size={p.batch_size} must be >= 1.")
    _check(p.temperature > 0, f"probe.temperature={p.temperature} must be > 0 (the paper uses 1.0).")
    _check(0 < p.top_p <= 1, f"probe.top_p={p.top_p} must be in (0, 1].")
    _check(p.top_k >= 0, f"probe.top_k={p.top_k} must be >= 0 (0 turns top-k off).")
    _check(p.repetition_penalty > 0, f"probe.repetition_penalty={p.repetition_penalty} must be > 0.")
    _check(bool(p.other_texts), "probe.other_texts is empty; use 'none', 'mmlu' or a file of off-domain texts.")
    _check(p.estimator in ESTIMATORS, f"probe.estimator={p.estimator!r} is unknown; use one of {', '.join(ESTIMATORS)}.")
    _check(0 <= p.floor < 1, f"probe.floor={p.floor} must be in [0, 1).")


def _validate_method(config: RunConfig) -> None:
    mc, d = config.method, config.data
    check_method_mode(mc.method, mc.mode)  # the registry's classes say which method supports which mode
    # Keys that are accepted but would have no effect are refused, so nothing is silently ignored.
    _check(mc.mode == "expansion" or mc.target is None,
           f"method.target={mc.target!r} only applies in expansion mode; add --mode expansion (method.mode) "
           f"or drop the target.")
    _check(mc.reference == "fixed" or mc.reference_losses is None,
           f"method.reference_losses is only read with method.reference=fixed (now {mc.reference!r}); set "
           f"method.reference=fixed or drop the losses.")
    if mc.mode == "expansion":
        _check(mc.target is not None, "Expansion mode needs a target domain: pass --target DOMAIN.")
        if d.domains is not None:
            _check(mc.target in d.domains,
                   f"Target domain {mc.target!r} is not a domain of this run ({', '.join(d.domains)}). "
                   f"Pick --target from that list.")
    for name, (low, high) in COEFFICIENT_BOUNDS.items():
        value = getattr(mc, name)
        _check(_is_number(value) and low <= value <= high,
               f"method.{name}={value!r} is out of range; it must be a finite number in [{low:g}, {high:g}].")
    _check(isinstance(mc.interval, int) and mc.interval >= 0,
           f"method.interval={mc.interval!r} must be an integer >= 0 (0: once per epoch).")
    for name in ("aioli_probe_rounds", "aioli_probe_steps"):
        value = getattr(mc, name)
        _check(isinstance(value, int) and value >= 1, f"method.{name}={value!r} must be an integer >= 1.")
    _check(_is_number(mc.aioli_one_hot_factor) and 0 < mc.aioli_one_hot_factor <= 1,
           f"method.aioli_one_hot_factor={mc.aioli_one_hot_factor!r} must be in (0, 1], e.g. 0.625.")
    if mc.max_domain_share is not None:
        _check(_is_number(mc.max_domain_share) and 0 < mc.max_domain_share <= 1,
               f"method.max_domain_share={mc.max_domain_share!r} must be in (0, 1] (at least 1/number of domains), "
               f"or null for no cap.")
        _check(mc.method == "versatune" and mc.mode == "fostering",
               f"method.max_domain_share caps VersaTune's fostering mixture; this run is method={mc.method!r}, "
               f"mode={mc.mode!r}. Drop it (expansion bounds its target with method.target_max_share).")
        if d.domains:
            _check_caps([mc.max_domain_share], len(d.domains), "method.max_domain_share")
    if mc.prior is not None:
        validate_distribution(mc.prior, "method.prior")
    _check(mc.reference in REFERENCE_STRATEGIES,
           f"method.reference={mc.reference!r} is unknown; use one of {', '.join(REFERENCE_STRATEGIES)}.")
    _check(_is_number(mc.reference_fraction) and 0 < mc.reference_fraction <= 1,
           f"method.reference_fraction={mc.reference_fraction} must be in (0, 1].")
    _check(mc.signal in SIGNALS, f"method.signal={mc.signal!r} is unknown; use one of {', '.join(SIGNALS)}.")
    if mc.signal == "train":
        _check(not strategy_class(mc.method).needs_held_out,
               f"method.signal=train: {mc.method} evaluates held-out losses after its own probe mixtures, so it "
               f"cannot re-weight from training losses; use method.signal=eval.")
        _check(mc.reference != "curve_fit",
               "method.reference=curve_fit fits each domain's held-out loss curve, which method.signal=train does "
               "not evaluate; use method.signal=eval, or another method.reference.")
    _check(isinstance(mc.signal_min_tokens, int) and not isinstance(mc.signal_min_tokens, bool)
           and mc.signal_min_tokens >= 0,
           f"method.signal_min_tokens={mc.signal_min_tokens!r} must be a whole number of tokens >= 0 (0: read every "
           f"window).")
    _check(mc.signal_min_tokens == 0 or mc.signal == "train",
           f"method.signal_min_tokens={mc.signal_min_tokens} pools training-loss windows, but method.signal="
           f"{mc.signal!r} reads held-out losses; set method.signal=train, or drop method.signal_min_tokens.")
    if mc.reference == "fixed":
        _check(bool(mc.reference_losses), "method.reference=fixed needs method.reference_losses (domain -> loss).")
    if mc.reference_losses is not None:
        for domain, loss in mc.reference_losses.items():
            _check(_is_number(loss) and loss >= 0,
                   f"method.reference_losses[{domain!r}]={loss!r} must be a finite loss >= 0.")
    _check(mc.specialist_steps >= 1, f"method.specialist_steps={mc.specialist_steps} must be >= 1.")
    _check(0 < mc.target_initial_share < 1, f"method.target_initial_share={mc.target_initial_share} must be in (0, 1).")
    _check(mc.target_initial_share <= mc.target_max_share < 1,
           f"method.target_max_share={mc.target_max_share} must be in [target_initial_share, 1).")


def _validate_train(config: RunConfig) -> None:
    t = config.train
    _check(isinstance(t.max_steps, int) and t.max_steps >= 1, f"train.max_steps={t.max_steps!r} must be an integer >= 1.")
    _check(t.batch_size >= 1, f"train.batch_size={t.batch_size} must be >= 1.")
    if t.micro_batch_size is not None:
        workers = max(1, config.distributed.num_workers)
        _check(isinstance(t.micro_batch_size, int) and not isinstance(t.micro_batch_size, bool)
               and t.micro_batch_size >= 1,
               f"train.micro_batch_size={t.micro_batch_size!r} must be a positive integer or null (null: one pass "
               f"per worker and step).")
        # Every worker must run the same number of equal passes: the global batch splits evenly
        # into workers, and each worker's share into micro-batches.
        _check(t.batch_size % workers == 0 and (t.batch_size // workers) % t.micro_batch_size == 0,
               f"train.micro_batch_size={t.micro_batch_size} does not divide the per-worker batch: "
               f"train.batch_size={t.batch_size} over {workers} worker(s) is "
               f"{t.batch_size / workers:g} examples each. Pick a batch size that is a multiple of "
               f"{workers} x micro_batch_size (e.g. train.batch_size={workers * t.micro_batch_size * max(1, round(t.batch_size / (workers * t.micro_batch_size)))}), "
               f"or a micro-batch size that divides {t.batch_size // workers if t.batch_size % workers == 0 else 'it'}.")
    _check(_is_number(t.learning_rate) and t.learning_rate > 0, f"train.learning_rate={t.learning_rate} must be > 0.")
    _check(0 <= t.warmup_ratio < 1, f"train.warmup_ratio={t.warmup_ratio} must be in [0, 1).")
    _check(t.lr_schedule in ("cosine", "linear", "constant"),
           f"train.lr_schedule={t.lr_schedule!r} is unknown; use cosine, linear or constant.")
    _check(t.max_length >= 8, f"train.max_length={t.max_length} must be >= 8 tokens.")
    _check(t.eval_batch_size >= 1, f"train.eval_batch_size={t.eval_batch_size} must be >= 1.")
    _check(t.checkpoint_every >= 0, f"train.checkpoint_every={t.checkpoint_every} must be >= 0.")
    _check(t.keep_checkpoints >= 1, f"train.keep_checkpoints={t.keep_checkpoints} must be >= 1.")
    _check(t.log_every >= 1, f"train.log_every={t.log_every} must be >= 1.")
    _check(isinstance(t.length_group_batches, int) and t.length_group_batches >= 1,
           f"train.length_group_batches={t.length_group_batches!r} must be an integer >= 1 (1: no grouping).")


def _validate_distributed(config: RunConfig) -> None:
    dc, t = config.distributed, config.train
    _check(isinstance(dc.num_workers, int) and dc.num_workers >= 0,
           f"distributed.num_workers={dc.num_workers!r} must be an integer >= 0 (0: no Ray).")
    if dc.num_workers:
        _check(t.batch_size >= dc.num_workers,
               f"train.batch_size={t.batch_size} is smaller than distributed.num_workers={dc.num_workers}: every "
               f"worker needs at least one example per step. Raise the batch size or use fewer workers.")
    _check(dc.max_failures >= 0, f"distributed.max_failures={dc.max_failures} must be >= 0.")
    _check(dc.strategy in PARALLEL_STRATEGIES,
           f"distributed.strategy={dc.strategy!r} is unknown; use ddp (whole model per worker) or fsdp "
           f"(sharded across workers).")
    _check(not dc.cpu_offload or dc.strategy == "fsdp",
           "distributed.cpu_offload=true offloads FSDP shards; it needs distributed.strategy=fsdp.")
    _check(dc.strategy == "ddp" or dc.num_workers >= 1,
           "distributed.strategy=fsdp shards the model across Ray workers, but distributed.num_workers=0 runs "
           "one plain process. Set distributed.num_workers (--num-workers) to the number of devices, or "
           "distributed.strategy=ddp.")
    if dc.strategy == "fsdp":
        _check(not t.compile, "train.compile=true is not supported with distributed.strategy=fsdp yet; set "
                              "train.compile=false.")
        # Multiple-choice accuracy calls the model's own forward with a KV cache; under FSDP only the
        # loss module is the sharded root, so that path cannot gather the root's parameters.
        _check(not t.eval_accuracy,
               "train.eval_accuracy=true is not supported with distributed.strategy=fsdp (the accuracy pass "
               "runs outside the sharded loss module). Set train.eval_accuracy=false; the held-out losses "
               "and scores are still measured.")


def _validate_tune(config: RunConfig) -> None:
    tc = config.tune
    _check(tc.searcher in SEARCHERS, f"Unknown searcher {tc.searcher!r}. Use one of: {', '.join(SEARCHERS)}.")
    _check(tc.num_samples >= 1, f"tune.num_samples={tc.num_samples} must be >= 1.")
    _check(tc.grid_points >= 1, f"tune.grid_points={tc.grid_points} must be >= 1.")
    _check(tc.optuna_startup_trials is None or (isinstance(tc.optuna_startup_trials, int)
                                                and tc.optuna_startup_trials >= 1),
           f"tune.optuna_startup_trials={tc.optuna_startup_trials!r} must be a number of trials >= 1, or null "
           f"(a third of tune.num_samples).")
    _check(tc.objective in OBJECTIVES,
           f"tune.objective={tc.objective!r} is unknown; use one of {', '.join(OBJECTIVES)}.")
    _check(tc.grace_intervals >= 1, f"tune.grace_intervals={tc.grace_intervals} must be >= 1.")
    _check(tc.workers_per_trial >= 0, f"tune.workers_per_trial={tc.workers_per_trial} must be >= 0.")
    _check(tc.memory_per_trial_gb is None or (_is_number(tc.memory_per_trial_gb) and tc.memory_per_trial_gb > 0),
           f"tune.memory_per_trial_gb={tc.memory_per_trial_gb!r} must be a number of GB > 0, or null (estimate).")
    for name in COEFFICIENT_BOUNDS:
        bounds = getattr(tc, name)
        _check(isinstance(bounds, list) and len(bounds) == 2 and all(_is_number(b) for b in bounds),
               f"tune.{name}={bounds!r} must be a range [low, high] of two numbers.")
        _check(bounds[0] <= bounds[1], f"tune.{name}={bounds!r} is an inverted range; write it as [low, high].")
        low, high = COEFFICIENT_BOUNDS[name]
        _check(low <= bounds[0] and bounds[1] <= high,
               f"tune.{name}={bounds!r} leaves the allowed range [{low:g}, {high:g}] of method.{name}.")
    _check(isinstance(tc.interval, list) and len(tc.interval) >= 1
           and all(isinstance(i, int) and i >= 1 for i in tc.interval),
           f"tune.interval={tc.interval!r} must be a non-empty list of positive step counts.")
    baseline = sweep_baseline(config)
    if baseline is not None:
        try:
            check_method_mode(baseline, config.method.mode)
        except ConfigError as error:
            raise ConfigError(f"tune.baseline={tc.baseline!r}: {error} Or set tune.baseline=auto (uniform mixing "
                              f"for this mode), or null for no baseline run.") from None
    _check(isinstance(tc.max_domain_share, list)
           and all(v is None or (_is_number(v) and 0 < v <= 1) for v in tc.max_domain_share),
           f"tune.max_domain_share={tc.max_domain_share!r} must be a list of shares in (0, 1] (null: no cap), "
           f"e.g. [0.2, 0.3, null].")
    if tc.max_domain_share:
        mc = config.method
        _check(mc.method == "versatune" and mc.mode == "fostering",
               f"tune.max_domain_share tunes VersaTune's fostering cap; this sweep is method={mc.method!r}, "
               f"mode={mc.mode!r}. Drop it, or set method.method=versatune and method.mode=fostering.")
        if config.data.domains:
            _check_caps(tc.max_domain_share, len(config.data.domains), "tune.max_domain_share")
    _check(isinstance(tc.target_initial_share, list)
           and all(_is_number(v) and 0 < v <= config.method.target_max_share for v in tc.target_initial_share),
           f"tune.target_initial_share={tc.target_initial_share!r} must be a list of shares in "
           f"(0, method.target_max_share={config.method.target_max_share}], e.g. [0.5, 0.7].")
    _check(not tc.target_initial_share or config.method.mode == "expansion",
           f"tune.target_initial_share tunes the target's starting share in expansion mode; this sweep is "
           f"mode={config.method.mode!r}. Drop it, or pass --mode expansion --target DOMAIN.")


def _check_caps(caps: list, domain_count: int, what: str) -> None:
    """A share cap below 1/|D| cannot hold: the shares could not sum to one."""
    for cap in caps:
        problem = share_cap_problem(what, cap, domain_count)
        if problem:
            raise ConfigError(problem)


def check_domains_against_data(config: RunConfig, data_domains: list[str]) -> None:
    """Checks that need the loaded data (before any model loads): the target, the prior and the share
    caps must fit the run's domains."""
    mc = config.method
    if mc.max_domain_share is not None:
        _check_caps([mc.max_domain_share], len(data_domains), "method.max_domain_share")
    if mc.mode == "expansion" and mc.target not in data_domains:
        raise ConfigError(
            f"Target domain {mc.target!r} is not a domain of this run ({', '.join(data_domains)}). "
            f"Pick --target from that list."
        )
    for what, mapping in (("method.prior", mc.prior), ("method.reference_losses", mc.reference_losses)):
        if mapping is None:
            continue
        unknown = sorted(set(mapping) - set(data_domains))
        missing = sorted(set(data_domains) - set(mapping))
        if unknown or missing:
            raise ConfigError(
                f"{what} does not match the run's domains: unknown {unknown or 'none'}, missing "
                f"{missing or 'none'}. Give exactly one value per domain: {', '.join(data_domains)}."
            )
