"""The data types every room shares (an SFT example, a multiple-choice item, a run's domain data)
and the seeded helpers that cap and split each domain the same way for every source."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Callable

from ..config import DataConfig
from ..errors import ConfigError, DataError


@dataclass(frozen=True)
class SFTExample:
    domain: str
    messages: tuple[tuple[str, str], ...]
    """The prompt part as (role, content) turns, e.g. ``(("user", "..."),)``."""
    response: str
    """The assistant reply; the loss is computed on it only."""


@dataclass(frozen=True)
class MCItem:
    """A multiple-choice item, scored by comparing the loss of each full candidate response."""

    domain: str
    messages: tuple[tuple[str, str], ...]
    choices: tuple[str, ...]
    """Full candidate responses, e.g. ``"B. <option text>"``."""
    answer: int
    """Index of the correct choice."""


@dataclass
class DomainData:
    domains: list[str]
    train: dict[str, list[SFTExample]]
    eval: dict[str, list[SFTExample]]
    """Held-out examples, for the per-domain loss."""
    eval_mc: dict[str, list[MCItem]]
    """Held-out multiple-choice items; empty lists for data without choices."""
    provenance: dict[str, str] = field(default_factory=dict)
    """Where each domain's examples come from and under which licence (embedded sources fill it)."""
    self_answer_domains: tuple[str, ...] = ()
    """Domains whose responses are still empty: the run's own model answers their prompts once
    (``data/self_answers.py``, called by ``training/setup.prepare_inputs``) before anything reads them."""

    def sizes(self) -> dict[str, int]:
        """Train examples per domain."""
        return {d: len(self.train[d]) for d in self.domains}

    def fingerprint(self) -> str:
        """A stable short hash of the content, so caches keyed on it change when the data does."""
        h = hashlib.sha256()
        h.update(json.dumps(self.domains).encode())
        for part in (self.train, self.eval):
            for d in self.domains:
                for ex in part[d]:
                    h.update(json.dumps([ex.domain, ex.messages, ex.response]).encode())
                h.update(b"\x00")  # domain boundary, so moving an example between domains changes the hash
        for d in self.domains:
            for item in self.eval_mc[d]:
                h.update(json.dumps([item.domain, item.messages, item.choices, item.answer]).encode())
            h.update(b"\x00")
        return h.hexdigest()[:16]


def embedded_domains(config: DataConfig, valid: tuple[str, ...], source: str) -> list[str]:
    """The domains an embedded source loads: ``data.domains`` (each must be one it provides) or all."""
    domains = list(config.domains) if config.domains is not None else list(valid)
    unknown = [d for d in domains if d not in valid]
    if unknown:
        raise ConfigError(
            f"data.domains has {', '.join(map(repr, unknown))}, which {source} does not provide. "
            f"Valid {source} domains: {', '.join(valid)}. Remove the others, or point data.source at "
            f"your own data."
        )
    return domains


def split_counts(n: int, config: DataConfig) -> int:
    """How many of ``n`` questions/examples to hold out: at least one, and at least one left to train."""
    n_eval = max(1, round(config.eval_fraction * n))
    if config.max_eval_per_domain is not None:
        n_eval = min(n_eval, config.max_eval_per_domain)
    return min(n_eval, n - 1)


def domain_rng(config: DataConfig, domain: str) -> random.Random:
    # Seeding with a string is deterministic across processes (unlike hash()), and a per-domain
    # stream keeps one domain's split unchanged when another domain is added or removed.
    return random.Random(f"versatune-split:{config.split_seed}:{domain}")


def capped_sample(items: list, config: DataConfig, rng: random.Random, too_few: Callable[[int], str]) -> list:
    """At most ``max_examples_per_domain`` items, as a seeded sample (files are often ordered by
    subject, so the first N would be biased); fewer than 2 cannot be split into train and eval."""
    if config.max_examples_per_domain is not None and len(items) > config.max_examples_per_domain:
        items = rng.sample(items, config.max_examples_per_domain)
    if len(items) < 2:
        raise DataError(too_few(len(items)))
    return items
