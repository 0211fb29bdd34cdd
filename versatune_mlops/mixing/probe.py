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
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import ProbeConfig
from ..data.examples import DomainData, SFTExample
from ..errors import ConfigError
from .estimators import DomainEstimator, build_estimator
from .weights import apply_floor

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Generation and aggregation


def example_text(example: SFTExample) -> str:
    return "\n".join([content for _, content in example.messages] + [example.response])


@torch.no_grad()
def generate_free_text(model, tokenizer, config: ProbeConfig) -> list[str]:
    """Sample sequences from the BOS token alone, with no instruction (the paper's decoding)."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise ConfigError("The tokenizer has neither a BOS nor an EOS token, so free generation has no start token.")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(config.seed)
    texts: list[str] = []
    batches = range(0, config.num_samples, config.batch_size)
    for first in tqdm(batches, desc="probe: generating", unit="batch"):
        size = min(config.batch_size, config.num_samples - first)
        input_ids = torch.full((size, 1), start, dtype=torch.long, device=device)
        output = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=True,
            temperature=config.temperature,
            top_p=config.top_p,
            top_k=config.top_k or None,
            repetition_penalty=config.repetition_penalty,
            max_new_tokens=config.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
        texts.extend(tokenizer.batch_decode(output[:, 1:], skip_special_tokens=True))
    torch.random.set_rng_state(generator_state)
    model.train(was_training)
    return texts


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
    initial_weights: dict[str, float]
    num_samples: int
    estimator: str
    estimator_accuracy: float
    samples: list[str] = field(default_factory=list)

    def to_json(self, max_samples: int = 20) -> dict:
        return {
            "domains": self.domains,
            "distribution": self.distribution,
            "initial_weights": self.initial_weights,
            "num_samples": self.num_samples,
            "estimator": self.estimator,
            "estimator_accuracy": self.estimator_accuracy,
            "sample_texts": self.samples[:max_samples],
        }


def fit_estimator(data: DomainData, name: str, max_per_domain: Optional[int] = None, seed: int = 0,
                  **options) -> tuple[DomainEstimator, float]:
    """Train the estimator on the SFT train split; report its accuracy on the held-out split.

    At most ``max_per_domain`` seeded examples per domain (default: the estimator's own
    ``max_train_per_domain``); ``options`` go to the estimator (e.g. ``embedding_model``, ``cache_dir``).
    """
    estimator = build_estimator(name, **options)
    max_per_domain = max_per_domain or estimator.max_train_per_domain
    rng = np.random.default_rng(seed)
    train = []
    for d in data.domains:
        examples = data.train[d]
        keep = rng.permutation(len(examples))[:max_per_domain]
        train.extend(examples[i] for i in sorted(keep))
    estimator.fit([example_text(ex) for ex in train], [ex.domain for ex in train], data.domains)
    held_out = [ex for d in data.domains for ex in data.eval[d]]
    predicted = estimator.predict_proba([example_text(ex) for ex in held_out]).argmax(axis=1)
    truth = np.array([data.domains.index(ex.domain) for ex in held_out])
    accuracy = float((predicted == truth).mean())
    log.info("Probe estimator %s: held-out accuracy %.3f on %d examples", name, accuracy, len(held_out))
    return estimator, accuracy


def run_probe(model, tokenizer, data: DomainData, config: ProbeConfig,
              cache_dir: Optional[str | Path] = None) -> ProbeResult:
    """Generate freely, estimate each text's domains, average. ``cache_dir`` keeps the embedding
    estimator's embeddings, so a sweep or benchmark embeds the same texts once."""
    estimator, accuracy = fit_estimator(data, config.estimator, seed=config.seed,
                                        embedding_model=config.embedding_model, cache_dir=cache_dir)
    texts = generate_free_text(model, tokenizer, config)
    distribution = aggregate_distribution(estimator.predict_proba(texts))
    weights = apply_floor(distribution, config.floor)
    result = ProbeResult(
        domains=list(data.domains),
        distribution=dict(zip(data.domains, map(float, distribution))),
        initial_weights=dict(zip(data.domains, map(float, weights))),
        num_samples=len(texts),
        estimator=config.estimator,
        estimator_accuracy=accuracy,
        samples=texts,
    )
    log.info("Probe distribution: %s", {d: round(p, 3) for d, p in result.distribution.items()})
    return result
