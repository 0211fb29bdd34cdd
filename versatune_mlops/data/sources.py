"""Multi-domain SFT data: the embedded MMLU (six domains), the embedded multi-genre domains, or a
user's own dataset.

:func:`load_domain_data` returns per-domain train examples, held-out examples for the per-domain
loss, and held-out multiple-choice items for accuracy. Every problem with the input is a
:class:`DataError` (or :class:`ConfigError`) whose message names the problem and the fix.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..config import DataConfig
from ..errors import ConfigError, DataError
from .examples import DomainData
from .files import load_user_data
from .mmlu import load_mmlu, off_domain_texts
from .multigenre import load_multigenre

logger = logging.getLogger(__name__)


def load_domain_data(config: DataConfig) -> DomainData:
    """Load, validate and split the data a run trains and evaluates on."""
    if config.source == "mmlu":
        data = load_mmlu(config)
    elif config.source == "multigenre":
        data = load_multigenre(config)
    else:
        data = load_user_data(config)
    logger.info(
        "Loaded %s: %s",
        config.source,
        ", ".join(f"{d} {len(data.train[d])} train / {len(data.eval[d])} eval" for d in data.domains),
    )
    return data


def load_other_texts(source: str, limit: int, seed: int = 0) -> list[str]:
    """Background texts for the probe's "other" class (``probe.other_texts``): ``none`` (no class),
    ``mmlu`` (MMLU subjects outside the six domains), or a ``.txt`` file (one text per line) or
    ``.jsonl`` file (a ``text`` field per line) of texts that belong to none of the run's domains."""
    if source == "none":
        return []
    if source == "mmlu":
        return off_domain_texts(limit, seed)
    path = Path(source).expanduser()
    if not path.is_file():
        raise ConfigError(f"probe.other_texts={source!r} is not a file. Pass a .txt (one text per line) or .jsonl "
                          f"(a 'text' field per line) file of off-domain texts, 'mmlu' or 'none'.")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        try:
            texts = [str(json.loads(line)["text"]) for line in lines]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: every line must be a JSON object with a 'text' field ({exc}).") from exc
    else:
        texts = lines
    if len(texts) < 2:
        raise DataError(f"{path} has {len(texts)} text(s); the 'other' class needs at least 2. Add texts, or set "
                        f"probe.other_texts=none.")
    return texts[:limit]
