"""Typed configuration: dataclasses, YAML presets in ``projects/``, and the one place that validates.

A run is described by :class:`RunConfig`. It is built from a preset (``projects/<name>.yaml``) or a
YAML file, then dotted overrides (``train.max_steps=40``) are applied, then :func:`validate` checks
every value once. Modules downstream trust a validated config and do not re-check it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from .errors import ConfigError
from .mixing.strategies import MODES, check_method_mode, method_names
from .mixing.weights import Coefficients

DEFAULT_DOMAINS = ("law", "medicine", "finance", "science", "code", "general")

# Every method list derives from the strategy registry (mixing/strategies.py): one class per method.
METHODS = method_names()
EXPANSION_METHODS = method_names(supports_expansion=True)
EXPANSION_ONLY_METHODS = method_names(expansion_only=True)
REFERENCE_STRATEGIES = ("initial_fraction", "fixed", "specialist")
ESTIMATORS = ("tfidf_logreg",)


def projects_dir() -> Path:
    """The folder with the ready experiment presets (``projects/`` at the repository root)."""
    return Path(__file__).resolve().parent.parent / "projects"


@dataclass
class DataConfig:
    source: str = "mmlu"
    """``mmlu`` (embedded MMLU, six domains), a local JSONL/CSV/Parquet file or folder, a saved
    ``datasets`` folder, or a hub dataset name."""
    format: str = "auto"
    """``auto`` (from the file suffix), ``jsonl``, ``csv``, ``parquet`` or ``hf``."""
    hf_split: str = "train"
    prompt_column: str = "prompt"
    response_column: str = "response"
    domain_column: str = "domain"
    messages_column: Optional[str] = None
    """If set, a chat ``messages`` column is used instead of prompt/response columns; the last
    assistant message is the response."""
    domains: Optional[list[str]] = None
    """Domains to train on. ``None``: the six defaults for MMLU, every domain present otherwise."""
    eval_fraction: float = 0.1
    """Share of each domain held out for evaluation (at least one example per domain)."""
    max_eval_per_domain: Optional[int] = 48
    max_examples_per_domain: Optional[int] = None
    """Cap on examples (MMLU: questions) per domain before the split, for quick runs."""
    split_seed: int = 0


@dataclass
class TinyModelConfig:
    num_layers: int = 4
    hidden_size: int = 256
    num_heads: int = 4
    vocab_size: int = 2048


@dataclass
class ModelConfig:
    name: str = "smollm2"
    """``smollm2`` (embedded SmolLM2-135M-Instruct), ``tiny`` (random init, for tests), a local
    folder, or a hub id."""
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    bf16: bool = False
    """bf16 autocast (CPU or GPU). The LM head and losses stay fp32."""
    torch_threads: Optional[int] = None
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    cache_dir: Optional[str] = None
    """Where converted checkpoints, tokenizers and reference losses are cached.
    Default: ``$VERSATUNE_CACHE`` or ``~/.cache/versatune_mlops``."""


@dataclass
class ProbeConfig:
    num_samples: int = 256
    max_new_tokens: int = 64
    batch_size: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.1
    estimator: str = "tfidf_logreg"
    floor: float = 0.02
    """Minimum initial weight of a domain before renormalising, so none starts at zero."""
    seed: int = 0


@dataclass
class MethodConfig:
    method: str = "versatune"
    mode: str = "fostering"
    target: Optional[str] = None
    """Target domain in expansion mode."""
    alpha: float = 1.0
    """Potential coefficient."""
    beta: float = 1.0
    """Forgetting coefficient."""
    eta: float = 1.0
    """Step size of the multiplicative update."""
    epsilon: float = 0.0
    """Smoothing toward uniform after each update, in [0, 1]."""
    interval: int = 10
    """Re-weight every this many optimizer steps; 0 re-weights once per epoch (the paper)."""
    prior: Optional[dict[str, float]] = None
    """Initial distribution used instead of running the probe (domain -> probability)."""
    reference: str = "initial_fraction"
    """How the reference loss (the loss a domain can reach) is obtained: ``initial_fraction``
    (free: ``reference_fraction`` x the base model's loss), ``fixed`` (``reference_losses``), or
    ``specialist`` (short single-domain runs, cached on disk)."""
    reference_fraction: float = 0.8
    reference_losses: Optional[dict[str, float]] = None
    specialist_steps: int = 20
    target_initial_share: float = 0.5
    target_max_share: float = 0.9

    def coefficients(self) -> Coefficients:
        """The re-weighting coefficients as one frozen object (ranges checked by validate())."""
        return Coefficients(alpha=self.alpha, beta=self.beta, eta=self.eta, epsilon=self.epsilon)


@dataclass
class TrainConfig:
    max_steps: int = 40
    batch_size: int = 8
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    lr_schedule: str = "cosine"
    grad_clip: float = 1.0
    max_length: int = 256
    eval_batch_size: int = 16
    checkpoint_every: int = 0
    """Save a checkpoint every this many steps (0: only at the end)."""
    keep_checkpoints: int = 1
    """How many of the newest checkpoints to keep (older ones are deleted after a new one is written)."""
    log_every: int = 5
    eval_static_mixtures: bool = True
    """Evaluate static mixtures at the re-weighting points too, for their loss curves. Dynamic
    methods always evaluate there (their update needs it); false keeps static runs eval-free."""
    eval_accuracy: bool = True
    """Multiple-choice accuracy before and after training (costs one forward pass per option)."""
    save_model: bool = True
    """Save the trained model (LoRA merged) and tokenizer to ``<output_dir>/model``."""
    seed: int = 0


@dataclass
class DistributedConfig:
    num_workers: int = 0
    """Ray Train workers; 0 runs the plain single-process loop (no Ray)."""
    use_gpu: Optional[bool] = None
    """One GPU per worker; None: when the cluster has GPUs."""
    address: Optional[str] = None
    """Ray cluster address (``ray://host:10001`` or ``auto``); None starts a local Ray."""
    storage_path: Optional[str] = None
    """Where Ray keeps checkpoints (absolute path or ``s3://...``; shared storage on a cluster).
    Default: ``<output_dir>/ray``."""
    max_failures: int = 0
    """Restarts of a failed worker group from its newest checkpoint."""


SEARCHERS = ("random", "grid", "optuna")
# The user-facing range of every re-weighting coefficient: method.<name> and the tune.<name> ranges.
COEFFICIENT_BOUNDS = {"alpha": (0.0, 100.0), "beta": (0.0, 100.0), "eta": (0.0, 100.0), "epsilon": (0.0, 1.0)}
TUNED = tuple(COEFFICIENT_BOUNDS)
# Objectives a sweep or the registry can rank by, and which way is better. Any other metric ranks
# as objective_mode() says: eval_loss/* is minimised, everything else maximised.
OBJECTIVES = {"score/multi_domain": "max", "eval_loss/mean": "min", "eval_loss/worst": "min", "accuracy/mean": "max"}


def objective_mode(metric: str) -> str:
    """'min' or 'max': the direction in which ``metric`` improves."""
    return OBJECTIVES.get(metric, "min" if metric.startswith("eval_loss/") else "max")


@dataclass
class TuneConfig:
    searcher: str = "optuna"
    """``random``, ``grid`` or ``optuna``."""
    num_samples: int = 4
    """Trials for random/optuna (grid: one per grid point)."""
    grid_points: int = 2
    """Grid values per coefficient range (grid searcher)."""
    objective: str = "score/multi_domain"
    """Metric to optimise: score/multi_domain (max), eval_loss/mean or eval_loss/worst (min), accuracy/mean (max)."""
    asha: bool = True
    grace_intervals: int = 1
    """ASHA stops no trial before this many re-weighting intervals after the first weight update
    (before it, trials that differ only in their coefficients have trained identically)."""
    workers_per_trial: int = 0
    """Ray Train workers inside each trial (each trial then builds its own TorchTrainer); 0 trains in
    the trial's own process. Needs ``asha: false``: see validate()."""
    alpha: list[float] = field(default_factory=lambda: [0.0, 2.0])
    beta: list[float] = field(default_factory=lambda: [0.0, 2.0])
    eta: list[float] = field(default_factory=lambda: [0.5, 2.0])
    epsilon: list[float] = field(default_factory=lambda: [0.0, 0.1])
    interval: list[int] = field(default_factory=lambda: [5, 10])
    """Re-weighting intervals to choose from."""
    log_models: bool = True
    seed: int = 0


@dataclass
class RunConfig:
    preset: Optional[str] = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values, for logging as parameters."""
        return flatten(self.to_dict())


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and key not in ("prior", "reference_losses"):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


# ----------------------------------------------------------------------------------------------
# Building a config from presets, files and overrides


def available_presets() -> list[str]:
    return sorted(p.stem for p in projects_dir().glob("*.yaml"))


def load_config(
    preset: Optional[str] = None,
    config_file: Optional[str | Path] = None,
    overrides: Optional[Mapping[str, Any]] = None,
) -> RunConfig:
    """Build and validate a config: defaults < preset < config file < overrides."""
    tree: dict[str, Any] = {}
    if preset is not None:
        path = projects_dir() / f"{preset}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"Unknown preset {preset!r}. Available presets: {', '.join(available_presets())}. "
                f"Pass one of them with --preset, or a YAML file with --config."
            )
        tree = _deep_merge(tree, _read_yaml(path))
        tree["preset"] = preset
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"Config file {str(path)!r} does not exist. Check the --config path.")
        tree = _deep_merge(tree, _read_yaml(path))
    for dotted, value in (overrides or {}).items():
        set_dotted(tree, dotted, value)
    config = from_dict(tree)
    validate(config)
    return config


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}. Fix the file's syntax.") from exc
    if not isinstance(tree, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (data, model, train, ...).")
    return tree


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"Override {dotted!r}: {part!r} is a value, not a section.")
    node[parts[-1]] = value


def from_dict(tree: Mapping[str, Any]) -> RunConfig:
    """Turn a nested mapping into a RunConfig, rejecting unknown keys with a suggestion."""
    return _build(RunConfig, tree, "")


def _build(cls: type, tree: Mapping[str, Any], where: str):
    if not isinstance(tree, Mapping):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {tree!r}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in tree.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"Unknown config key {where + key!r}.{hint} Known keys here: {', '.join(fields)}."
            )
        sub = _DATACLASS_FIELDS.get((cls, key))
        kwargs[key] = _build(sub, value, f"{where}{key}.") if sub else value
    return cls(**kwargs)


_DATACLASS_FIELDS = {
    (RunConfig, "data"): DataConfig,
    (RunConfig, "model"): ModelConfig,
    (RunConfig, "probe"): ProbeConfig,
    (RunConfig, "method"): MethodConfig,
    (RunConfig, "train"): TrainConfig,
    (RunConfig, "distributed"): DistributedConfig,
    (RunConfig, "tune"): TuneConfig,
    (ModelConfig, "tiny"): TinyModelConfig,
}


# ----------------------------------------------------------------------------------------------
# Validation: the one place that checks values


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
    d, m, p, mc, t = config.data, config.model, config.probe, config.method, config.train

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

    _check(isinstance(m.name, str) and m.name, "model.name must be 'smollm2', 'tiny', a local folder or a hub id.")
    _check(m.lora_r >= 1, f"model.lora_r={m.lora_r} must be >= 1.")
    _check(m.device == "auto" or m.device == "cpu" or m.device.startswith("cuda"),
           f"model.device={m.device!r} is unknown; use auto, cpu, cuda or cuda:N.")
    _check(m.torch_threads is None or m.torch_threads >= 1, f"model.torch_threads={m.torch_threads} must be >= 1.")

    _check(p.num_samples >= 1, f"probe.num_samples={p.num_samples} must be >= 1.")
    _check(p.max_new_tokens >= 1, f"probe.max_new_tokens={p.max_new_tokens} must be >= 1.")
    _check(p.batch_size >= 1, f"probe.batch_size={p.batch_size} must be >= 1.")
    _check(p.temperature > 0, f"probe.temperature={p.temperature} must be > 0 (the paper uses 1.0).")
    _check(0 < p.top_p <= 1, f"probe.top_p={p.top_p} must be in (0, 1].")
    _check(p.top_k >= 0, f"probe.top_k={p.top_k} must be >= 0 (0 turns top-k off).")
    _check(p.repetition_penalty > 0, f"probe.repetition_penalty={p.repetition_penalty} must be > 0.")
    _check(p.estimator in ESTIMATORS, f"probe.estimator={p.estimator!r} is unknown; use one of {', '.join(ESTIMATORS)}.")
    _check(0 <= p.floor < 1, f"probe.floor={p.floor} must be in [0, 1).")

    check_method_mode(mc.method, mc.mode)  # the registry's classes say which method supports which mode
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
    if mc.prior is not None:
        validate_distribution(mc.prior, "method.prior")
    _check(mc.reference in REFERENCE_STRATEGIES,
           f"method.reference={mc.reference!r} is unknown; use one of {', '.join(REFERENCE_STRATEGIES)}.")
    _check(_is_number(mc.reference_fraction) and 0 < mc.reference_fraction <= 1,
           f"method.reference_fraction={mc.reference_fraction} must be in (0, 1].")
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

    _check(isinstance(t.max_steps, int) and t.max_steps >= 1, f"train.max_steps={t.max_steps!r} must be an integer >= 1.")
    _check(t.batch_size >= 1, f"train.batch_size={t.batch_size} must be >= 1.")
    _check(_is_number(t.learning_rate) and t.learning_rate > 0, f"train.learning_rate={t.learning_rate} must be > 0.")
    _check(0 <= t.warmup_ratio < 1, f"train.warmup_ratio={t.warmup_ratio} must be in [0, 1).")
    _check(t.lr_schedule in ("cosine", "linear", "constant"),
           f"train.lr_schedule={t.lr_schedule!r} is unknown; use cosine, linear or constant.")
    _check(t.max_length >= 8, f"train.max_length={t.max_length} must be >= 8 tokens.")
    _check(t.eval_batch_size >= 1, f"train.eval_batch_size={t.eval_batch_size} must be >= 1.")
    _check(t.checkpoint_every >= 0, f"train.checkpoint_every={t.checkpoint_every} must be >= 0.")
    _check(t.keep_checkpoints >= 1, f"train.keep_checkpoints={t.keep_checkpoints} must be >= 1.")
    _check(t.log_every >= 1, f"train.log_every={t.log_every} must be >= 1.")

    dc = config.distributed
    _check(isinstance(dc.num_workers, int) and dc.num_workers >= 0,
           f"distributed.num_workers={dc.num_workers!r} must be an integer >= 0 (0: no Ray).")
    if dc.num_workers:
        _check(t.batch_size >= dc.num_workers,
               f"train.batch_size={t.batch_size} is smaller than distributed.num_workers={dc.num_workers}: every "
               f"worker needs at least one example per step. Raise the batch size or use fewer workers.")
    _check(dc.max_failures >= 0, f"distributed.max_failures={dc.max_failures} must be >= 0.")

    tc = config.tune
    _check(tc.searcher in SEARCHERS, f"Unknown searcher {tc.searcher!r}. Use one of: {', '.join(SEARCHERS)}.")
    _check(tc.num_samples >= 1, f"tune.num_samples={tc.num_samples} must be >= 1.")
    _check(tc.grid_points >= 1, f"tune.grid_points={tc.grid_points} must be >= 1.")
    _check(tc.objective in OBJECTIVES,
           f"tune.objective={tc.objective!r} is unknown; use one of {', '.join(OBJECTIVES)}.")
    _check(tc.grace_intervals >= 1, f"tune.grace_intervals={tc.grace_intervals} must be >= 1.")
    _check(tc.workers_per_trial >= 0, f"tune.workers_per_trial={tc.workers_per_trial} must be >= 0.")
    # Measured with Ray 2.60 without ray[default]: when ASHA stops a trial that runs its own
    # TorchTrainer, the trainer's placement group is not cleaned up (the cleaner needs the state
    # API of the dashboard), its CPUs stay taken and the next trial waits forever.
    _check(not (tc.asha and tc.workers_per_trial > 0),
           f"tune.asha=true with tune.workers_per_trial={tc.workers_per_trial} would leak the CPUs of every "
           f"early-stopped trial's TorchTrainer and hang the sweep. Set tune.asha=false to keep Train workers "
           f"per trial, or tune.workers_per_trial=0 to stop trials early.")
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
    return config


def check_domains_against_data(config: RunConfig, data_domains: list[str]) -> None:
    """Checks that need the loaded data: the target and the prior must name the run's domains."""
    mc = config.method
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
