"""Multi-domain SFT data: the embedded MMLU (six domains) or a user's own dataset.

:func:`load_domain_data` returns per-domain train examples, held-out examples for the per-domain
loss, and held-out multiple-choice items for accuracy. Every problem with the input is a
:class:`DataError` (or :class:`ConfigError`) whose message names the problem and the fix.
"""

from __future__ import annotations

import logging

from ..config import DataConfig
from .examples import DomainData
from .files import load_user_data
from .mmlu import load_mmlu

logger = logging.getLogger(__name__)


def load_domain_data(config: DataConfig) -> DomainData:
    """Load, validate and split the data a run trains and evaluates on."""
    if config.source == "mmlu":
        data = load_mmlu(config)
    else:
        data = load_user_data(config)
    logger.info(
        "Loaded %s: %s",
        config.source,
        ", ".join(f"{d} {len(data.train[d])} train / {len(data.eval[d])} eval" for d in data.domains),
    )
    return data
