"""Probe fidelity (`versatune bench-probe`): does the probe recover a distribution we know?

The probe's answer on the model's free generations cannot be checked: nobody knows the true mixture.
This benchmark builds texts whose domain is known and mixes them in known, skewed proportions:

- *in-genre*: held-out SFT texts (what every estimator is trained on: the easy case);
- *out-of-genre* (the case that matters): the base model's own prose written under domain-conditioned
  prompts ("Write a short paragraph about jurisprudence", topics from the domain's MMLU subject names,
  or the domain name for other data), plus off-topic prose (cooking, sport, travel, ...) whose true
  label is "other". The prompts never enter any estimator's training data.

Each estimator labels every pooled text once; each seed then draws a Dirichlet-skewed mixture of the
pools and compares the estimator's recovered distribution (domains + "other") with the drawn one by
total-variation distance. The same run gives each estimator's prior on the model's BOS generations.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..config import RunConfig
from ..data.mmlu import SUBJECT_TO_DOMAIN
from ..data.sources import load_domain_data, load_other_texts
from ..errors import ConfigError
from ..mixing.probe import (OTHER, example_text, fit_estimator, generate_free_text, generate_from_prompts, load_judge,
                            resolve_other_domain, total_variation)
from ..mixing.weights import fold_other
from ..training.models import load_model

log = logging.getLogger(__name__)

OFF_TOPIC_TOPICS = ("cooking", "football", "travel", "gardening", "music", "fashion", "pets", "films")
"""Prose about these should land in "other": none of the default domains covers them."""
PROMPT_TEMPLATES = (
    "Write a short paragraph about {topic}.",
    "Tell me something interesting about {topic}.",
    "Describe an everyday situation that involves {topic}.",
)


def topics_for(domain: str, source: str) -> list[str]:
    """A domain's prompt topics: its MMLU subject names on the embedded data, else the domain's name."""
    subjects = [s for s, d in SUBJECT_TO_DOMAIN.items() if d == domain] if source == "mmlu" else []
    return subjects or [domain]


def out_of_genre_prompts(domains: Sequence[str], source: str, per_class: int, seed: int) -> dict[str, list[str]]:
    """``per_class`` prompts per domain and for "other", cycling through topic x template pairs."""
    rng = np.random.default_rng(seed)
    prompts = {}
    for label in [*domains, OTHER]:
        topics = list(OFF_TOPIC_TOPICS) if label == OTHER else topics_for(label, source)
        pairs = [t.format(topic=topic) for topic in topics for t in PROMPT_TEMPLATES]
        order = rng.permutation(len(pairs))
        prompts[label] = [pairs[order[i % len(pairs)]] for i in range(per_class)]
    return prompts


def generate_pools(model, tokenizer, prompts: dict[str, list[str]], config: RunConfig, cache_file: Path) -> dict[str, list[str]]:
    """The model's answers to every prompt, generated once and kept in ``cache_file`` (resume)."""
    if cache_file.is_file():
        cached = json.loads(cache_file.read_text())
        if cached.get("prompts") == prompts:
            log.info("Out-of-genre texts from %s", cache_file)
            return cached["texts"]
    labels = list(prompts)
    flat = [p for label in labels for p in prompts[label]]
    answers = generate_from_prompts(model, tokenizer, flat, config.probe, seed=config.probe.seed + 1)
    texts, start = {}, 0
    for label in labels:
        texts[label] = answers[start:start + len(prompts[label])]
        start += len(prompts[label])
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_text(json.dumps({"prompts": prompts, "texts": texts}, indent=1))
    return texts


def cached_bos_texts(model, tokenizer, config: RunConfig, num_samples: int, cache_file: Path) -> tuple[list[str], float]:
    """The model's free generations from BOS (what the probe reads) and sequences/s; cached with their settings."""
    p = config.probe
    key = {"num_samples": num_samples, "model": config.model.name, "decoding": [p.max_new_tokens, p.temperature, p.top_p,
           p.top_k, p.repetition_penalty, p.seed]}
    if cache_file.is_file():
        cached = json.loads(cache_file.read_text())
        if cached.get("key") == key:
            return cached["texts"], cached["sequences_per_s"]
    started = time.perf_counter()
    texts = generate_free_text(model, tokenizer, config.probe, num_samples=num_samples)
    rate = len(texts) / (time.perf_counter() - started)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_text(json.dumps({"key": key, "texts": texts, "sequences_per_s": rate}, indent=1))
    return texts, rate


@dataclass(frozen=True)
class EstimatorRow:
    """One row of the fidelity table: an estimator and where its "other" class comes from."""

    estimator: str
    other_texts: str = "none"

    @property
    def label(self) -> str:
        if self.estimator == "llm_judge":
            return "llm_judge"
        return self.estimator + ("" if self.other_texts == "none" else f" + other ({self.other_texts})")


def parse_rows(text: str) -> list[EstimatorRow]:
    """``NAME[+OTHER_TEXTS],...`` e.g. ``tfidf_logreg,embedding+mmlu,llm_judge``."""
    rows = []
    for item in [part.strip() for part in text.split(",") if part.strip()]:
        name, _, other = item.partition("+")
        rows.append(EstimatorRow(name, other or "none"))
    return rows


DEFAULT_ROWS = "tfidf_logreg,tfidf_logreg+mmlu,embedding,embedding+mmlu,llm_judge"


def draw_mixture(pools: dict[str, list[int]], truth: np.ndarray, size: int, rng: np.random.Generator):
    """Indices of ``size`` pooled texts drawn by ``truth`` over the pools (with replacement inside a
    pool), and the drawn mixture's exact distribution."""
    labels = list(pools)
    counts = rng.multinomial(size, truth)
    picked = [int(i) for label, n in zip(labels, counts) for i in rng.choice(pools[label], size=n, replace=True)]
    return picked, counts / size


def fidelity_scores(rows: np.ndarray, pool_labels: Sequence[str], classes: Sequence[str], seeds: Sequence[int],
                    size: int, concentration: float, other_domain: Optional[str]) -> dict:
    """TV between recovered and true mixtures over ``seeds``: over domains + "other", and of the prior
    (both folded by the run's rule: "other" dropped, or given to ``other_domain``)."""
    domains = list(classes[:-1])
    pools = {label: [i for i, lab in enumerate(pool_labels) if lab == label] for label in classes}
    pools = {label: idx for label, idx in pools.items() if idx}
    present = [classes.index(label) for label in pools]
    tv, tv_prior = [], []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        skew = rng.dirichlet([concentration] * len(pools))
        picked, drawn = draw_mixture(pools, skew, size, rng)
        truth = np.zeros(len(classes))
        truth[present] = drawn
        recovered = rows[picked].mean(axis=0)
        tv.append(total_variation(recovered, truth))
        try:
            tv_prior.append(total_variation(fold_other(recovered, other_domain, domains),
                                            fold_other(truth, other_domain, domains)))
        except ConfigError:  # all of one side is "other" and it is dropped: the prior is undefined
            continue
    return {"tv": _mean_sd(tv), "tv_prior": _mean_sd(tv_prior), "per_seed": tv}


def _mean_sd(values: Sequence[float]) -> dict:
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()) if len(values) else float("nan"),
            "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0}


def run_probe_fidelity(config: RunConfig, rows: Sequence[EstimatorRow], seeds: Sequence[int], output_dir: str | Path,
                       per_class: int = 24, mixture_size: int = 120, concentration: float = 0.5,
                       bos_samples: Optional[int] = None) -> dict:
    """The fidelity table for ``rows`` over ``seeds`` (see the module docstring); resumable: the
    generated texts and finished rows stay in ``output_dir``."""
    for row in rows:
        if row.estimator not in ("tfidf_logreg", "embedding", "llm_judge"):
            raise ConfigError(f"bench-probe: unknown estimator {row.estimator!r}; use tfidf_logreg, embedding or "
                              f"llm_judge, optionally with +mmlu or +<file> for an 'other' class.")
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = load_domain_data(config.data)
    loaded = load_model(dataclasses.replace(config.model, lora=False, dtype="float32"),
                        tokenizer_corpus=[example_text(ex) for d in data.domains for ex in data.train[d]])
    model, tokenizer = loaded.model, loaded.tokenizer
    classes = [*data.domains, OTHER]
    other_domain = resolve_other_domain(config.probe.other_domain, data.domains)

    prompts = out_of_genre_prompts(data.domains, config.data.source, per_class, seed=0)
    gen_started = time.perf_counter()
    fresh = not (output / "out_of_genre_texts.json").is_file()
    ood = generate_pools(model, tokenizer, prompts, config, output / "out_of_genre_texts.json")
    prompted_rate = sum(map(len, ood.values())) / (time.perf_counter() - gen_started) if fresh else None
    bos, bos_rate = cached_bos_texts(model, tokenizer, config, bos_samples or config.probe.num_samples,
                                     output / "bos_texts.json")
    in_genre = {d: [example_text(ex) for ex in data.eval[d]] for d in data.domains}
    in_texts = [t for d in data.domains for t in in_genre[d]]
    in_labels = [d for d in data.domains for _ in in_genre[d]]
    ood_texts = [t for label in classes for t in ood[label]]
    ood_labels = [label for label in classes for _ in ood[label]]

    results_file = output / "rows.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    judge = None
    for row in rows:
        if row.label in results:
            log.info("bench-probe: %s already measured, reused", row.label)
            continue
        if row.estimator == "llm_judge" and judge is None:
            judge = load_judge(config.probe, model, tokenizer)
        other = load_other_texts(row.other_texts, limit=600, seed=config.probe.seed)
        timings = []
        with tempfile.TemporaryDirectory(prefix="versatune-bench-probe-") as cache:
            for _ in range(1 if row.estimator == "tfidf_logreg" or row.estimator == "llm_judge" else 2):
                tick = time.perf_counter()  # cold (empty embedding cache), then warm (cached)
                estimator, accuracy = fit_estimator(data, row.estimator, seed=config.probe.seed, other_texts=other,
                                                    embedding_model=config.probe.embedding_model, cache_dir=cache,
                                                    judge=judge)
                bos_rows = estimator.predict_with_other(bos)
                timings.append(time.perf_counter() - tick)
        in_rows = estimator.predict_with_other(in_texts)
        ood_rows = estimator.predict_with_other(ood_texts)
        bos_mean = bos_rows.mean(axis=0)
        # Every text's row, so the tables can be recomputed under another "other" rule without refitting.
        np.savez(output / f"predictions-{row.estimator}-{Path(row.other_texts).stem}.npz",
                 in_genre=in_rows, out_of_genre=ood_rows, bos=bos_rows)
        results[row.label] = {
            "estimator": row.estimator, "other_texts": row.other_texts, "held_out_accuracy": accuracy,
            "in_genre": fidelity_scores(in_rows, in_labels, classes, seeds, mixture_size, concentration, other_domain),
            "out_of_genre": fidelity_scores(ood_rows, ood_labels, classes, seeds, mixture_size, concentration,
                                            other_domain),
            "out_of_genre_accuracy": float(np.mean(ood_rows.argmax(axis=1) == [classes.index(c) for c in ood_labels])),
            "bos_mean": dict(zip(classes, map(float, bos_mean))),
            "bos_prior": dict(zip(data.domains, map(float, fold_other(bos_mean, other_domain, data.domains)))),
            "fit_predict_seconds": timings[0], "fit_predict_seconds_cached": timings[-1] if len(timings) > 1 else None,
        }
        results_file.write_text(json.dumps(results, indent=1))  # resume point: each finished row
    report = {
        "model": loaded.source, "domains": data.domains, "seeds": list(seeds), "mixture_size": mixture_size,
        "concentration": concentration, "per_class": per_class, "bos_samples": len(bos),
        "other_domain": other_domain, "rows": {row.label: results[row.label] for row in rows},
        "generation": {"bos_sequences_per_s": bos_rate, "prompted_sequences_per_s": prompted_rate,
                       "max_new_tokens": config.probe.max_new_tokens, "batch_size": config.probe.batch_size},
        "wall_seconds": time.perf_counter() - started,
    }
    (output / "report.json").write_text(json.dumps(report, indent=1))
    (output / "report.md").write_text(render_fidelity_markdown(report))
    return report


def render_fidelity_markdown(report: dict) -> str:
    domains = report["domains"]
    fold = f"other → {report['other_domain']}" if report["other_domain"] else "other dropped"
    lines = [
        f"Probe fidelity on {report['model']}: {len(report['seeds'])} seeds, mixtures of {report['mixture_size']} texts "
        f"drawn Dirichlet({report['concentration']}); out-of-genre pools of {report['per_class']} prompted texts per "
        f"class; priors from {report['bos_samples']} BOS generations.",
        "",
        f"| estimator | held-out acc | in-genre TV | out-of-genre TV | out-of-genre TV of the prior ({fold}) "
        f"| out-of-genre acc | fit + predict s (cached) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, row in report["rows"].items():
        cached = row["fit_predict_seconds_cached"]
        lines.append(
            f"| {label} | {row['held_out_accuracy']:.3f} | {_fmt(row['in_genre']['tv'])} | {_fmt(row['out_of_genre']['tv'])} "
            f"| {_fmt(row['out_of_genre']['tv_prior'])} | {row['out_of_genre_accuracy']:.2f} "
            f"| {row['fit_predict_seconds']:.1f}{f' ({cached:.1f})' if cached is not None else ''} |")
    lines += ["", f"Priors on the BOS generations ({fold}; 'other share' is the mean 'other' probability):", "",
              "| estimator | " + " | ".join(domains) + " | other share |", "|---|" + "---|" * (len(domains) + 1)]
    for label, row in report["rows"].items():
        lines.append(f"| {label} | " + " | ".join(f"{row['bos_prior'][d]:.2f}" for d in domains)
                     + f" | {row['bos_mean'][OTHER]:.2f} |")
    gen = report["generation"]
    prompted = f", prompted {gen['prompted_sequences_per_s']:.2f}" if gen["prompted_sequences_per_s"] else ""
    lines += ["", f"Generation: BOS {gen['bos_sequences_per_s']:.2f} sequences/s{prompted} "
                  f"({gen['max_new_tokens']} new tokens, batch {gen['batch_size']}); wall {report['wall_seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def _fmt(stat: dict) -> str:
    return f"{stat['mean']:.3f} ± {stat['sd']:.3f}"
