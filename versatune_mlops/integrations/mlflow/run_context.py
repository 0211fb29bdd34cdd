"""Which VersaTune run this process belongs to, as environment variables (no MLflow, no Ray).

The CLI sets them around a command (:func:`active`), so every process it starts (``mlflow run``
steps, Ray workers and trials) inherits them, and the MLflow run-context provider
(:mod:`versatune_mlops.integrations.mlflow.plugins.context`) turns them into tags on any run started there.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Mapping, Optional, Sequence

TAG_PREFIX = "versatune."
"""Every MLflow tag this package sets starts with it (its one definition; this module is light, so
the plugins import it from here)."""
ENV_PREFIX = "VERSATUNE_RUN_"
FIELDS = ("method", "mode", "preset", "domains")


def _variable(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def describe(config, domains: Optional[Sequence[str]] = None) -> dict[str, str]:
    """The context of a run of ``config`` (a RunConfig); domains when known before the data loads."""
    values = {"method": config.method.method, "mode": config.method.mode, "preset": config.preset or "custom"}
    if domains is None and config.data.domains is not None:
        domains = config.data.domains
    if domains is None and config.data.source == "mmlu":
        from ...config import DEFAULT_DOMAINS

        domains = DEFAULT_DOMAINS
    if domains is not None:
        values["domains"] = ",".join(domains)
    return values


def current() -> dict[str, str]:
    """The context set in this process's environment (empty outside a VersaTune run)."""
    return {field: os.environ[_variable(field)] for field in FIELDS if os.environ.get(_variable(field))}


def set_domains(domains: Sequence[str]) -> None:
    """Record the domains once the data has been loaded (user data without ``data.domains``)."""
    if current():
        os.environ[_variable("domains")] = ",".join(domains)


@contextlib.contextmanager
def active(values: Mapping[str, str]) -> Iterator[None]:
    """Set the context for the duration of a command; the previous environment comes back afterwards."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown run-context fields {sorted(unknown)}; known: {', '.join(FIELDS)}")
    saved = {field: os.environ.get(_variable(field)) for field in FIELDS}
    for field in FIELDS:
        os.environ.pop(_variable(field), None)
    os.environ.update({_variable(field): str(value) for field, value in values.items()})
    try:
        yield
    finally:
        for field, value in saved.items():
            if value is None:
                os.environ.pop(_variable(field), None)
            else:
                os.environ[_variable(field)] = value
