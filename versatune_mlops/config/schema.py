"""Typed configuration (the schema): dataclasses, YAML presets in ``projects/``, and the one place that validates.

A run is described by :class:`RunConfig`. It is built from a preset (``projects/<name>.yaml``) or a
YAML file, then dotted overrides (``train.max_steps=40``) are applied, then :func:`validate` checks
every value once. Modules downstream trust a validated config and do not re-check it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from ..mixing.estimators import estimator_names
from ..mixing.strategies import DEFAULT_TARGET_INITIAL_SHARE, DEFAULT_TARGET_MAX_SHARE, method_names
from ..mixing.weights import Coefficients

DEFAULT_DOMAINS = ("law", "medicine", "finance", "science", "code", "general")

# Every method list derives from the strategy registry (the mixing/strategies package): one class per method.
METHODS = method_names()
EXPANSION_METHODS = method_names(supports_expansion=True)
EXPANSION_ONLY_METHODS = method_names(expansion_only=True)
REFERENCE_STRATEGIES = ("initial_fraction", "fixed", "specialist", "released_code", "curve_fit")
# What a dynamic method reads as each domain's loss at a re-weighting point (method.signal).
SIGNALS = ("eval", "train")
ESTIMATORS = estimator_names()
PARALLEL_STRATEGIES = ("ddp", "fsdp")
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")


def projects_dir() -> Path:
    """The folder with the ready experiment presets.

    ``projects/`` at the repository root is where users read and copy them; ``versatune_mlops/presets``
    is a link to it, which a wheel ships as package data, so an installed package finds the same files.
    """
    return Path(__file__).resolve().parent.parent / "presets"


@dataclass
class DataConfig:
    source: str = "mmlu"
    """``mmlu`` (embedded MMLU, six domains), ``multigenre`` (embedded, six domains in different
    genres: MMLU exam QA, Python code, the base model's own conversational answers), a local JSONL/CSV/Parquet file or folder, a saved
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
    self_answer_max_tokens: int = 96
    """``multigenre``: the longest answer (new tokens) the base model writes to a general prompt."""


@dataclass
class TinyModelConfig:
    num_layers: int = 4
    hidden_size: int = 256
    num_heads: int = 4
    vocab_size: int = 2048


@dataclass
class ModelConfig:
    name: str = "smollm2"
    """``smollm2`` (embedded SmolLM2-135M-Instruct), ``tiny`` (random init, for tests), a ``.gguf``
    file (converted once to a plain checkpoint under ``cache_dir``), a local folder, or a hub id."""
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    bf16: bool = False
    """bf16 autocast (CPU or GPU). The cross-entropy stays fp32."""
    dtype: str = "float32"
    """Storage of the weights: ``float32`` or ``bfloat16``. Under LoRA only the frozen base weights
    go to bf16 (the trainable adapter stays fp32); full fine-tuning in bf16 is allowed on GPU only
    (AdamW then updates bf16 weights, which rounds small updates away: under
    ``distributed.strategy=fsdp`` prefer float32 weights with ``bf16: true``, i.e. bf16 compute over
    fp32 master weights)."""
    attn_implementation: str = "sdpa"
    """Attention kernel passed to transformers: ``sdpa`` (PyTorch's fused attention), ``eager`` or
    ``flash_attention_2`` (needs the ``flash_attn`` package on every worker)."""
    trust_remote_code: bool = False
    """Run the modelling code a hub model ships in its own repository. Off by default: it executes
    code from the model's author; turn it on only for a model you have reviewed."""
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
    estimator: str = "embedding"
    """Domain-probability estimator: ``embedding`` (sentence embeddings + calibrated classifier) or
    ``tfidf_logreg`` (TF-IDF; reads narrative prose as law: see mixing/estimators.py)."""
    embedding_model: str = "minilm"
    """Sentence-embedding model of the ``embedding`` estimator: ``minilm`` (the bundled
    all-MiniLM-L6-v2), a local folder or a hub id."""
    judge_model: str = "base"
    """Instruct model of the ``llm_judge`` estimator: ``base`` (the run's own model), ``smollm2``, a
    local folder or a hub id (on a cluster, a large instruct model)."""
    other_texts: str = "none"
    """Background texts that teach the classifier estimators an "other" class (text in none of the
    domains): ``none``, ``mmlu`` (the embedded MMLU's subjects outside the six domains), or a .txt/.jsonl
    file. The judge always has "other" among its labels."""
    other_domain: Optional[str] = None
    """Where the "other" share goes in the prior: null drops it and renormalises over the domains (as the
    paper's labeller dropped answers outside its labels); a domain name (a catch-all) receives it, and
    when that domain is not among the run's domains the share is dropped (with a warning)."""
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
    (free: ``reference_fraction`` x the base model's loss), ``fixed`` (``reference_losses``),
    ``specialist`` (short single-domain runs, cached on disk), ``released_code`` (the released code's
    score: no reference and the absolute potential, so gamma_d = l_d; with method.beta=0 this is the
    released update w * exp(l_d)), or ``curve_fit`` (the asymptote of each domain's own held-out loss
    curve, refitted at every re-weighting point; initial_fraction until 3 evaluations exist)."""
    reference_fraction: float = 0.8
    signal: str = "eval"
    """What the re-weighting reads as each domain's loss l_d: ``eval`` (the held-out loss, evaluated at
    every re-weighting point, as the paper; one evaluation pass per point) or ``train`` (each domain's
    token-mean training loss over the steps since the last point: no evaluation pass, as ODM's reward;
    on a first epoch those examples were unseen when their loss was taken, so it estimates the
    held-out loss, half an interval late and noisier for domains with small shares). A domain not
    drawn since the last point keeps its last value."""
    signal_min_tokens: int = 0
    """``method.signal=train``: read a domain's window loss only once its window holds at least this
    many response tokens; until then the domain keeps its last value and its tokens carry into the
    next window. A domain with a small share sees a handful of examples per window, whose mean loss
    moves with which examples were drawn (the forgetting degree then reads that noise as forgetting);
    pooling windows trades how often such a domain is read for a steadier loss. 0 reads every window
    that drew the domain."""
    aioli_probe_rounds: int = 1
    """Aioli: sweeps over the domains' probe mixtures per round (the reference code's lp_rounds)."""
    aioli_probe_steps: int = 1
    """Aioli: training steps on each probe mixture (lp_steps). A round's probes take |D| x rounds x
    steps of the run's own steps (counted in train.max_steps), each mixture followed by an evaluation."""
    aioli_one_hot_factor: float = 0.625
    """Aioli: a probe mixture's share of its own domain, the rest split equally (one_hot_factor; the
    reference README's example value)."""
    max_domain_share: Optional[float] = None
    """VersaTune fostering: no domain's share above this, from the start and after every update; the
    excess goes to the others in proportion to their weights. In [1/|D|, 1]; None: no cap. A large η
    otherwise piles the data onto one domain (BENCHMARKS.md §7)."""
    reference_losses: Optional[dict[str, float]] = None
    specialist_steps: int = 20
    target_initial_share: float = DEFAULT_TARGET_INITIAL_SHARE
    """Expansion: the target's share at the start; the other domains split the rest by the probe's prior.
    .9 was chosen on seed 0 and kept >= 93% of 100%-target's gain on both targets of the multi-genre
    benchmark (seeds 1-3); .5 kept 74-82% (BENCHMARKS.md §7). At .9 = target_max_share the target's
    share stays put and re-weighting moves only the replay among the other domains (by forgetting);
    raise target_max_share to let the target grow by its learnable potential."""
    target_max_share: float = DEFAULT_TARGET_MAX_SHARE
    """Expansion: the target's share never grows above this (in [target_initial_share, 1))."""

    def coefficients(self) -> Coefficients:
        """The re-weighting coefficients as one frozen object (ranges checked by validate())."""
        return Coefficients(alpha=self.alpha, beta=self.beta, eta=self.eta, epsilon=self.epsilon)


@dataclass
class TrainConfig:
    max_steps: int = 40
    batch_size: int = 8
    """The global batch: examples per optimizer step, summed over all workers and micro-batches."""
    micro_batch_size: Optional[int] = None
    """Examples per forward/backward pass on one worker; the gradients of
    ``batch_size / (workers x micro_batch_size)`` passes are accumulated into one step, with the
    loss normalised by the global batch's response tokens (the same step as one big batch).
    None: the worker's whole share of the batch in one pass."""
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
    length_group_batches: int = 8
    """Draw this many batches at once by the live weights, sort them by length and train on them as
    batches of similar length (less padding); 1 turns grouping off. A group never crosses a
    re-weighting point or a checkpoint, so the mixture and exact resume are unchanged."""
    response_only_loss: bool = True
    """Apply the LM head at the response positions only (same loss, less compute and memory); false
    computes the logits of every position, the reference path the fast one is tested against."""
    gradient_checkpointing: bool = False
    """Recompute each transformer block's activations in the backward pass: less memory, ~30% more compute."""
    compile: bool = False
    """torch.compile the model (see BENCHMARKS.md for when it pays on this machine)."""
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
    strategy: str = "ddp"
    """How the workers share the model: ``ddp`` (every worker holds the whole model and its optimizer
    state; gradients are all-reduced) or ``fsdp`` (FSDP2 ``fully_shard`` per transformer block and
    the root: parameters, gradients and optimizer state are split across the workers, so a model
    too big for one device trains on several; bf16 compute with fp32 gradient reduction on GPU
    when ``model.bf16``)."""
    cpu_offload: bool = False
    """FSDP only: keep the sharded parameters, gradients and optimizer state in CPU memory and move
    each block to the GPU for its forward/backward (fits larger models, costs speed)."""


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
    optuna_startup_trials: Optional[int] = None
    """optuna: trials drawn at random before TPE models the rest. None: a third of ``num_samples``
    (2 to 10). Optuna's own default is 10, which turns a sweep of 10 trials or fewer into random search."""
    objective: str = "score/multi_domain"
    """Metric to optimise: score/multi_domain (max), eval_loss/mean or eval_loss/worst (min), accuracy/mean (max)."""
    asha: bool = True
    grace_intervals: int = 1
    """ASHA stops no trial before this many re-weighting intervals after the first weight update
    (before it, trials that differ only in their coefficients have trained identically), counted with
    the longest interval of ``interval``; ASHA compares trials at equal training steps."""
    workers_per_trial: int = 0
    """Ray Train workers inside each trial (each trial then builds its own TorchTrainer); 0 trains in
    the trial's own process. ASHA works with either: a stopped trial's TorchTrainer frees its CPUs
    (Ray's dashboard, started on loopback, serves the state API that Train's clean-up needs)."""
    memory_per_trial_gb: Optional[float] = None
    """Memory one trial takes (its driver and Train workers together); with the cluster's memory it
    caps how many trials run at once, next to CPUs and GPUs. None: 12 for the embedded SmolLM2 (its
    measured peak is 8-12 GB), 2 for the tiny model, and no memory cap for other models (set it)."""
    alpha: list[float] = field(default_factory=lambda: [0.0, 2.0])
    beta: list[float] = field(default_factory=lambda: [0.0, 2.0])
    eta: list[float] = field(default_factory=lambda: [0.5, 2.0])
    epsilon: list[float] = field(default_factory=lambda: [0.0, 0.1])
    interval: list[int] = field(default_factory=lambda: [5, 10])
    """Re-weighting intervals to choose from."""
    max_domain_share: list[Optional[float]] = field(default_factory=list)
    """Values of ``method.max_domain_share`` to choose from (VersaTune fostering; null = no cap), e.g.
    ``[0.2, 0.25, 0.3, null]``; empty: not tuned, every trial keeps ``method.max_domain_share``."""
    target_initial_share: list[float] = field(default_factory=list)
    """Values of ``method.target_initial_share`` to choose from (expansion mode), e.g. ``[0.5, 0.7, 0.9]``;
    empty: not tuned."""
    baseline: Optional[str] = "auto"
    """A mixing method the sweep runs once more, with the trials' data, seed and budget, as the reference
    every trial is measured against (the 'vs baseline' column, ``best/gain_vs_baseline`` on the sweep
    run), so a sweep whose every trial loses to plain mixing says so. ``auto``: ``uniform`` in fostering
    mode, ``target_uniform`` in expansion mode; null: no baseline run."""
    log_models: bool = True
    seed: int = 0


def sweep_baseline(config: "RunConfig") -> Optional[str]:
    """The method of a sweep's baseline run (``tune.baseline`` with ``auto`` resolved), or None."""
    baseline = config.tune.baseline
    if baseline == "auto":
        return "target_uniform" if config.method.mode == "expansion" else "uniform"
    return baseline


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


