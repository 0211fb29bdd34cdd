"""A user's own SFT data: JSONL / CSV / Parquet files or folders, ``save_to_disk`` folders, hub names.

Rows have a domain column and either prompt/response columns or a chat ``messages`` column; every
problem with a row is a :class:`DataError` that names the file, the line and the fix.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

from ..config import DataConfig
from ..errors import ConfigError, DataError
from .examples import DomainData, SFTExample, capped_sample, domain_rng, split_counts

logger = logging.getLogger(__name__)


SUFFIX_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
ROLES = ("system", "user", "assistant")

# A row of the user's data and where it came from ("data.jsonl line 4"), for error messages.
Row = tuple[dict[str, Any], str]


def load_user_data(config: DataConfig) -> DomainData:
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
        rng = domain_rng(config, domain)
        items = capped_sample(by_domain[domain], config, rng, lambda n: (
            f"Domain {domain!r} has {n} example(s) in {name}; at least 2 are needed to hold one "
            f"out for evaluation. Add examples of {domain!r}, or remove it from the data (and from data.domains)."))
        order = list(range(len(items)))
        rng.shuffle(order)
        n_eval = split_counts(len(items), config)
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
        return list(read_jsonl(path))
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


def read_jsonl(path: Path) -> list[Row]:
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

