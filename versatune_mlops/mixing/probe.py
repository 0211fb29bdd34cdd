"""Phase 1: detect the base model's knowledge distribution over domains (the paper's Phase 1).

1. The model generates N sequences freely, starting from its BOS token alone.
2. A domain-probability estimator gives each sequence a probability vector over the domains.
3. The distribution is the mean of those vectors; initial weights are that plus a floor.

Estimators are registered by name; the default is a calibrated TF-IDF + logistic regression
classifier trained on the run's own domain-labelled SFT training split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoConfig

from ..config import ModelConfig, ProbeConfig
from ..data.examples import DomainData, SFTExample
from ..data.formatting import encode_prompt
from ..data.sources import load_other_texts
from ..errors import ConfigError
from ..training.models import load_model
from .estimators import OTHER, DomainEstimator, build_estimator
from .weights import apply_floor, fold_other

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Generation and aggregation


def example_text(example: SFTExample) -> str:
    return "\n".join([content for _, content in example.messages] + [example.response])


def generate_free_text(model, tokenizer, config: ProbeConfig, seed: Optional[int] = None,
                       num_samples: Optional[int] = None) -> list[str]:
    """Sample sequences from the BOS token alone, with no instruction (the paper's decoding).

    ``seed`` and ``num_samples`` default to the config's; a Ray worker passes its own share and seed.
    """
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise ConfigError("The tokenizer has neither a BOS nor an EOS token, so free generation has no start token.")
    num_samples = config.num_samples if num_samples is None else num_samples
    prompts = [[start]] * num_samples
    return sample_continuations(model, tokenizer, prompts, config, config.seed if seed is None else seed,
                                desc="probe: generating")


def generate_from_prompts(model, tokenizer, prompts: Sequence[str], config: ProbeConfig, seed: int) -> list[str]:
    """The model's answers to user prompts, through its chat template when it has one (the texts the
    fidelity benchmark labels by construction: prose about a known topic, in the model's own voice)."""
    encoded = [encode_prompt(tokenizer, (("user", p),)) for p in prompts]  # the prompt format SFT trains on
    return sample_continuations(model, tokenizer, encoded, config, seed, desc="probe: answering prompts")


@torch.no_grad()
def sample_continuations(model, tokenizer, prompts: Sequence[Sequence[int]], config: ProbeConfig, seed: int,
                         desc: str) -> list[str]:
    """Sampled continuations of token-id prompts with the probe's decoding, batched (left-padded), seeded
    without disturbing the caller's RNG. Returns only the new text."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    texts: list[str] = []
    try:
        for first in tqdm(range(0, len(prompts), config.batch_size), desc=desc, unit="batch"):
            batch = prompts[first:first + config.batch_size]
            width = max(len(ids) for ids in batch)
            input_ids = torch.tensor([[pad] * (width - len(ids)) + list(ids) for ids in batch], device=device)
            attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=device)
            output = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                do_sample=True,
                temperature=config.temperature,
                top_p=config.top_p,
                top_k=config.top_k or None,
                repetition_penalty=config.repetition_penalty,
                max_new_tokens=config.max_new_tokens,
                pad_token_id=pad,
            )
            texts.extend(tokenizer.batch_decode(output[:, width:], skip_special_tokens=True))
    finally:
        torch.random.set_rng_state(generator_state)
        model.train(was_training)
    return texts


def total_variation(p, q) -> float:
    """TV(p, q) = ½ Σ|p_i − q_i|: the largest difference in probability the two give any set of domains."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    if p.shape != q.shape:
        raise ValueError(f"total_variation: shapes {p.shape} and {q.shape} differ")
    return float(0.5 * np.abs(p - q).sum())


def aggregate_distribution(probabilities: np.ndarray) -> np.ndarray:
    """p_d = (1/N) Σ_n q_n[d]: the mean of the per-sequence probability vectors."""
    probabilities = np.asarray(probabilities, dtype=float)
    if probabilities.ndim != 2 or probabilities.shape[0] == 0:
        raise ConfigError("The probe needs at least one generated sequence (probe.num_samples >= 1).")
    return probabilities.mean(axis=0)


@dataclass
class ProbeResult:
    domains: list[str]
    distribution: dict[str, float]
    """The prior over the domains: the probe's mean with the "other" share folded in (see fold_other)."""
    initial_weights: dict[str, float]
    num_samples: int
    estimator: str
    estimator_accuracy: float
    other_share: float = 0.0
    """Mean probability of "other": texts the estimator placed in none of the domains."""
    other_domain: Optional[str] = None
    samples: list[str] = field(default_factory=list)
    sample_probabilities: list[list[float]] = field(default_factory=list)
    """Per-sample rows over ``domains`` + "other", parallel to ``samples``."""

    def to_json(self, max_samples: int = 20) -> dict:
        return {
            "domains": self.domains,
            "distribution": self.distribution,
            "initial_weights": self.initial_weights,
            "num_samples": self.num_samples,
            "estimator": self.estimator,
            "estimator_accuracy": self.estimator_accuracy,
            "other_share": self.other_share,
            "other_domain": self.other_domain,
            "sample_texts": self.samples[:max_samples],
            "sample_probabilities": [[round(float(v), 4) for v in row] for row in self.sample_probabilities[:max_samples]],
        }



def fit_estimator(data: DomainData, name: str, max_per_domain: Optional[int] = None, seed: int = 0,
                  other_texts: Sequence[str] = (), **options) -> tuple[DomainEstimator, float]:
    """Train the estimator on the SFT train split (plus ``other_texts`` as an "other" class, when
    given); report its accuracy over the domains on the held-out split.

    At most ``max_per_domain`` seeded examples per domain (default: the estimator's own
    ``max_train_per_domain``; also the cap on ``other_texts``); ``options`` go to the estimator (e.g.
    ``embedding_model``, ``cache_dir``, ``judge``).
    """
    estimator = build_estimator(name, **options)
    max_per_domain = max_per_domain or estimator.max_train_per_domain
    if estimator.max_train_per_domain > 1:  # a classifier, not the zero-shot judge
        short = {d: len(data.train[d]) for d in data.domains if len(data.train[d]) < 2}
        if short:
            raise ConfigError(
                f"The probe's {name} classifier needs at least 2 labelled training examples per domain; "
                f"{', '.join(f'{d} has {n}' for d, n in short.items())}. Add examples to those domains, drop them "
                f"with data.domains, or give the prior directly with method.prior.")
    rng = np.random.default_rng(seed)
    train = []
    for d in data.domains:
        examples = data.train[d]
        keep = rng.permutation(len(examples))[:max_per_domain]
        train.extend(examples[i] for i in sorted(keep))
    texts, labels = [example_text(ex) for ex in train], [ex.domain for ex in train]
    other = list(other_texts)[:max_per_domain]
    classes = [*data.domains, OTHER] if other else list(data.domains)
    estimator.fit(texts + other, labels + [OTHER] * len(other), classes)
    held_out = [ex for d in data.domains for ex in data.eval[d]]
    predicted = estimator.predict_proba([example_text(ex) for ex in held_out]).argmax(axis=1)
    truth = np.array([data.domains.index(ex.domain) for ex in held_out])
    accuracy = float((predicted == truth).mean())
    log.info("Probe estimator %s: held-out accuracy %.3f on %d examples%s", name, accuracy, len(held_out),
             f", 'other' class from {len(other)} background texts" if other else "")
    return estimator, accuracy


def resolve_other_domain(other_domain: Optional[str], domains: Sequence[str]) -> Optional[str]:
    """``probe.other_domain`` for this run: the named catch-all, or None (drop the share) when the run's
    domains do not include it, since a preset's catch-all (e.g. general) need not survive a narrower
    ``data.domains``."""
    if other_domain is not None and other_domain not in domains:
        log.warning("probe.other_domain=%r is not among this run's domains (%s): the 'other' share is dropped "
                    "and the rest renormalised.", other_domain, ", ".join(domains))
        return None
    return other_domain


def load_judge(config: ProbeConfig, model, tokenizer):
    """The (model, tokenizer) of the llm_judge estimator: the run's own model for ``base``, else loaded."""
    if config.judge_model == "base":
        return model, tokenizer
    if config.judge_model == "tiny":
        raise ConfigError("probe.judge_model=tiny is an untrained test model; use 'base' (the run's own model), "
                          "'smollm2', an instruct model's folder or a hub id.")
    not_causal = ConfigError(
        f"probe.judge_model={config.judge_model!r} is not a causal language model. The judge scores labels as "
        f"its answer, so it must be an instruct (causal) LM: 'base', 'smollm2', a folder or a hub id.")
    if config.judge_model != "smollm2":
        try:
            architectures = AutoConfig.from_pretrained(config.judge_model).architectures or []
        except (OSError, ValueError):
            architectures = []  # load_model below names what is wrong with the path
        # transformers would load a BERT encoder as BertLMHeadModel; what the checkpoint was saved as tells.
        if architectures and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
            raise not_causal
    try:
        loaded = load_model(ModelConfig(name=config.judge_model))
    except ValueError as exc:  # transformers' answer for a config with no causal-LM class
        raise not_causal from exc
    return loaded.model, loaded.tokenizer


def run_probe(model, tokenizer, data: DomainData, config: ProbeConfig,
              cache_dir: Optional[str | Path] = None, texts: Optional[Sequence[str]] = None) -> ProbeResult:
    """Generate freely (or take ``texts``, e.g. generated by Ray workers), estimate each text's domains,
    average. ``cache_dir`` keeps the embedding estimator's embeddings, so a sweep or benchmark embeds
    the same texts once."""
    judge = load_judge(config, model, tokenizer) if config.estimator == "llm_judge" else None
    other = load_other_texts(config.other_texts, limit=600, seed=config.seed) if config.estimator != "llm_judge" else []
    estimator, accuracy = fit_estimator(data, config.estimator, seed=config.seed, other_texts=other,
                                        embedding_model=config.embedding_model, cache_dir=cache_dir, judge=judge)
    texts = generate_free_text(model, tokenizer, config) if texts is None else list(texts)
    rows = estimator.predict_with_other(texts)
    mean = aggregate_distribution(rows)
    other_domain = resolve_other_domain(config.other_domain, data.domains)
    distribution = fold_other(mean, other_domain, list(data.domains))
    weights = apply_floor(distribution, config.floor)
    result = ProbeResult(
        domains=list(data.domains),
        distribution=dict(zip(data.domains, map(float, distribution))),
        initial_weights=dict(zip(data.domains, map(float, weights))),
        num_samples=len(texts),
        estimator=config.estimator,
        estimator_accuracy=accuracy,
        other_share=float(mean[-1]),
        other_domain=other_domain,
        samples=list(texts),
        sample_probabilities=rows.tolist(),
    )
    log.info("Probe distribution: %s (other share %.3f)", {d: round(p, 3) for d, p in result.distribution.items()},
             result.other_share)
    return result
