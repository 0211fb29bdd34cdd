"""MLflow model evaluator ``versatune``: per-domain held-out response loss and accuracy of a causal LM.

    mlflow.models.evaluate("models:/versatune-tiny@champion", frame, model_type="text",
                           evaluators=["versatune"], evaluator_config={"versatune": {}})

``frame`` has one row per held-out example: ``domain``, ``prompt`` and ``response`` (the loss is on
the response tokens only), and optionally ``choices`` (candidate responses, a list or its JSON
text) and ``answer`` (the index of the right one) for multiple-choice accuracy. A row may carry a
response, choices, or both. :func:`evaluation_frame` builds it from the project's own held-out
split. The numbers come from :mod:`versatune_mlops.evaluation`, the code the training loop uses,
with the model run's own ``train.max_length``, ``train.eval_batch_size`` and ``model.bf16``, so
they equal the run's final ``eval_loss/<domain>`` and ``accuracy/<domain>``.

Config keys (all optional): ``domain_column``, ``prompt_column``, ``response_column``,
``messages_column``, ``choices_column``, ``answer_column`` (column names), ``domains`` (evaluate
only these), ``max_length``, ``batch_size``, ``bf16``.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

from mlflow.models.evaluation.base import EvaluationResult, ModelEvaluator

from ....errors import ConfigError, DataError, ModelError
from ..run_context import TAG_PREFIX

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

ARTIFACT_DIR = "versatune_eval"
MODEL_TYPES = ("text",)


@dataclass
class EvaluatorSettings:
    """``evaluator_config`` of the ``versatune`` evaluator, checked once."""

    domain_column: str = "domain"
    prompt_column: str = "prompt"
    response_column: str = "response"
    messages_column: Optional[str] = None
    choices_column: str = "choices"
    answer_column: str = "answer"
    domains: Optional[list[str]] = None
    max_length: Optional[int] = None
    """Default: the model run's ``train.max_length`` (256 for a model not trained by VersaTune)."""
    batch_size: Optional[int] = None
    """Default: the model run's ``train.eval_batch_size`` (16)."""
    bf16: Optional[bool] = None
    """Default: the model run's ``model.bf16`` (False)."""

    @classmethod
    def parse(cls, config: Mapping[str, Any]) -> "EvaluatorSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known - {"col_mapping"})  # col_mapping is read by MLflow itself
        if unknown:
            raise ConfigError(f"Unknown evaluator_config key(s) {unknown} for the 'versatune' evaluator. "
                              f"Known keys: {', '.join(sorted(known))}.")
        settings = cls(**{k: v for k, v in config.items() if k in known})
        if settings.domains is not None and (not isinstance(settings.domains, list) or not settings.domains):
            raise ConfigError(f"evaluator_config domains={settings.domains!r} must be a non-empty list of domain names.")
        for name in ("max_length", "batch_size"):
            value = getattr(settings, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"evaluator_config {name}={value!r} must be a positive integer.")
        return settings


class VersaTuneEvaluator(ModelEvaluator):
    """Registered under the name ``versatune`` through the ``mlflow.model_evaluator`` entry point."""

    @classmethod
    def can_evaluate(cls, *, model_type, evaluator_config, **kwargs) -> bool:
        return model_type in MODEL_TYPES

    def evaluate(self, *, model_type, dataset, run_id, evaluator_config, model=None, **kwargs) -> EvaluationResult:
        from mlflow.tracking import MlflowClient

        settings = EvaluatorSettings.parse(evaluator_config or {})
        if model is None:
            raise ConfigError("The 'versatune' evaluator computes losses with the model itself: pass a model URI "
                              "(e.g. models:/<name>@champion), not a static predictions table.")
        hf_model, tokenizer = _causal_lm(model)
        source = _source_run_info(getattr(model.metadata, "run_id", None))
        trained_domains = source.get("domains")
        frame = _frame(dataset)
        examples, mc_items, domains = frame_to_items(frame, settings, trained_domains)
        max_length = settings.max_length or int(source.get("max_length", 256))
        batch_size = settings.batch_size or int(source.get("batch_size", 16))
        bf16 = settings.bf16 if settings.bf16 is not None else source.get("bf16", False)

        metrics, table = evaluate_causal_lm(hf_model, tokenizer, examples, mc_items, max_length, batch_size, bf16)
        log.info("versatune evaluator on %s: %s", ", ".join(domains),
                 ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith(("eval_loss/", "score/"))))

        client = MlflowClient()
        _log_metrics(client, run_id, metrics)
        tags = {f"{TAG_PREFIX}eval.domains": ",".join(domains), f"{TAG_PREFIX}eval.max_length": str(max_length)}
        if source.get("run_id"):
            tags[f"{TAG_PREFIX}eval.model_run"] = source["run_id"]
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
        artifacts = _log_artifacts(client, run_id, table)
        return EvaluationResult(metrics=metrics, artifacts=artifacts)


# ----------------------------------------------------------------------------------------------
# The model and the run that trained it


def _causal_lm(model) -> tuple[Any, Any]:
    """The transformers model and tokenizer inside a pyfunc model of the transformers flavor."""
    try:
        pipeline = model.get_raw_model()
        hf_model, tokenizer = pipeline.model, pipeline.tokenizer
    except (NotImplementedError, AttributeError) as exc:
        flavors = ", ".join(getattr(model.metadata, "flavors", {}) or {}) or "unknown"
        raise ModelError(
            f"The 'versatune' evaluator needs a causal LM logged with the transformers flavor (a text-generation "
            f"pipeline with its tokenizer); this model has flavors: {flavors}. Log it with "
            f"mlflow.transformers.log_model (versatune_mlops.tracking.log_transformers_model)."
        ) from exc
    if tokenizer is None:
        raise ModelError("The logged transformers model has no tokenizer. Log the model with its tokenizer.")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # as models.load_model does: padding is masked anyway
    return hf_model, tokenizer


def _source_run_info(run_id: Optional[str]) -> dict[str, Any]:
    """Domains and evaluation settings of the run that logged the model (empty for other models)."""
    if not run_id:
        return {}
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException:
        log.warning("The model's source run %s is not in this tracking store; using default settings", run_id)
        return {}
    info: dict[str, Any] = {"run_id": run_id}
    tags, params = run.data.tags, run.data.params
    if tags.get(f"{TAG_PREFIX}domains"):
        info["domains"] = tags[f"{TAG_PREFIX}domains"].split(",")
    if "train.max_length" in params:
        info["max_length"] = int(params["train.max_length"])
    if "train.eval_batch_size" in params:
        info["batch_size"] = int(params["train.eval_batch_size"])
    if "model.bf16" in params:
        info["bf16"] = params["model.bf16"] == "True"
    return info


# ----------------------------------------------------------------------------------------------
# Data: rows -> per-domain SFT examples and multiple-choice items


def _frame(dataset):
    """The evaluation rows as a DataFrame, the target column (if MLflow split one off) put back."""
    import pandas as pd

    frame = dataset.features_data
    if not isinstance(frame, pd.DataFrame):
        raise DataError("The 'versatune' evaluator needs a pandas DataFrame (or mlflow.data dataset) with domain, "
                        "prompt and response columns, not an array.")
    frame = frame.copy()
    if dataset.labels_data is not None and dataset.targets_name:
        frame[dataset.targets_name] = list(dataset.labels_data)
    return frame


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return not (isinstance(value, str) and not value.strip())


def frame_to_items(frame, settings: EvaluatorSettings, trained_domains: Optional[list[str]] = None):
    """(examples per domain, MC items per domain, domain order) from the evaluation rows.

    Errors name the missing column or the domains the model was not trained on.
    """
    from ....config import DataConfig
    from ....data.examples import MCItem
    from ....data.files import to_example

    columns = [str(c) for c in frame.columns]
    if settings.domain_column not in columns:
        raise DataError(
            f"The evaluation data has no domain column {settings.domain_column!r} (columns: {', '.join(columns)}). "
            f"Add a column with each row's domain, or name yours with "
            f"evaluator_config={{'versatune': {{'domain_column': '<column>'}}}}."
        )
    has_choices = settings.choices_column in columns and settings.answer_column in columns
    text_column = settings.messages_column or settings.response_column
    if text_column not in columns and not has_choices:
        raise DataError(
            f"The evaluation data has no {text_column!r} column and no {settings.choices_column!r}/"
            f"{settings.answer_column!r} columns (columns: {', '.join(columns)}), so there is nothing to score. "
            f"Add responses (loss) or choices + answer (accuracy), or set response_column / messages_column."
        )
    rows = frame.to_dict("records")
    present = list(dict.fromkeys(str(r[settings.domain_column]) for r in rows if _present(r[settings.domain_column])))
    if any(not _present(r[settings.domain_column]) for r in rows):
        raise DataError(f"Some evaluation rows have an empty {settings.domain_column!r} value. Give every row a domain.")
    domains = settings.domains or present
    unknown_requested = [d for d in domains if d not in present]
    if unknown_requested:
        raise DataError(f"evaluator_config domains {unknown_requested} have no rows in the evaluation data "
                        f"(domains present: {', '.join(present)}). Remove them or add their rows.")
    if trained_domains is not None:
        untrained = [d for d in domains if d not in trained_domains]
        if untrained:
            raise DataError(
                f"The evaluation data has domain(s) {untrained} that the model's run did not train on "
                f"(it trained on: {', '.join(trained_domains)}). Drop those rows, or pass "
                f"evaluator_config={{'versatune': {{'domains': [...]}}}} with the domains to evaluate."
            )
        domains = [d for d in trained_domains if d in domains]  # the run's order, as in its metrics

    data_config = DataConfig(prompt_column=settings.prompt_column, response_column=settings.response_column,
                             domain_column=settings.domain_column, messages_column=settings.messages_column)
    examples: dict[str, list] = {d: [] for d in domains}
    mc_items: dict[str, list] = {d: [] for d in domains}
    for number, row in enumerate(rows, start=1):
        domain = str(row[settings.domain_column])
        if domain not in examples:
            continue
        where = f"evaluation row {number}"
        if _present(row.get(text_column)):
            examples[domain].append(to_example(row, where, data_config, "the evaluation data", columns))
        if has_choices and _present(row.get(settings.choices_column)):
            prompt = row.get(settings.prompt_column)
            if not _present(prompt):
                raise DataError(f"{where}: a multiple-choice row needs its question in column {settings.prompt_column!r}.")
            choices = _choices(row[settings.choices_column], where)
            answer = _answer(row.get(settings.answer_column), len(choices), where)
            mc_items[domain].append(MCItem(domain, (("user", str(prompt)),), tuple(choices), answer))
    empty = [d for d in domains if not examples[d] and not mc_items[d]]
    if empty:
        raise DataError(f"Domain(s) {empty} have rows but no response and no choices to score. Fill those rows in.")
    return {d: v for d, v in examples.items() if v}, {d: v for d, v in mc_items.items() if v}, domains


def _choices(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: choices is text but not a JSON list ({exc}). Write e.g. [\"A. ...\", \"B. ...\"].") from exc
    if not isinstance(value, (list, tuple)) or len(value) < 2 or not all(isinstance(c, str) and c for c in value):
        raise DataError(f"{where}: choices must be a list of at least two non-empty candidate responses, got {value!r:.200}.")
    return list(value)


def _answer(value: Any, n_choices: int, where: str) -> int:
    try:
        index = float(value)
    except (TypeError, ValueError):
        index = math.nan
    if not index.is_integer() or not 0 <= index < n_choices:
        raise DataError(f"{where}: answer={value!r} must be the index (0..{n_choices - 1}) of the right choice.")
    return int(index)


def evaluation_frame(data) -> "pd.DataFrame":
    """The held-out split of a :class:`~versatune_mlops.data.DomainData` as evaluator rows: one row per
    loss example (prompt, response) and one per multiple-choice item (prompt, choices as JSON, answer)."""
    import pandas as pd

    rows = []
    for domain in data.domains:
        for ex in data.eval[domain]:
            rows.append({"domain": domain, "prompt": _single_turn(ex.messages), "response": ex.response,
                         "choices": None, "answer": None})
        for item in data.eval_mc[domain]:
            rows.append({"domain": domain, "prompt": _single_turn(item.messages), "response": None,
                         "choices": json.dumps(list(item.choices)), "answer": item.answer})
    return pd.DataFrame(rows)


def _single_turn(messages) -> str:
    if len(messages) != 1 or messages[0][0] != "user":
        raise DataError("evaluation_frame() writes single-turn prompts; this data has multi-turn conversations. "
                        "Build the frame with a messages column and set messages_column instead.")
    return messages[0][1]


# ----------------------------------------------------------------------------------------------
# Scoring with the project's evaluation code, and logging


def evaluate_causal_lm(model, tokenizer, examples, mc_items, max_length: int, batch_size: int,
                       bf16: bool) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Project metrics (``eval_loss/<domain>``, ``accuracy/<domain>``, aggregates) and a per-domain table."""
    from ....training.evaluation import domain_accuracy, domain_losses, domain_metrics, domain_score
    from ....data.formatting import encode_split

    if not examples:
        raise DataError("No evaluation row has a response, so there is no held-out loss to report. "
                        "Add prompt/response rows per domain.")
    losses = domain_losses(model, encode_split(tokenizer, examples, max_length, "eval"), batch_size,
                           tokenizer.pad_token_id, bf16)
    accuracy = domain_accuracy(model, tokenizer, mc_items, max_length, bf16) if mc_items else {}
    metrics = domain_metrics(losses, accuracy)
    table = [{"domain": d, "eval_loss": losses.get(d), "score": domain_score(losses[d]) if d in losses else None,
              "accuracy": accuracy.get(d), "loss_examples": len(examples.get(d, [])),
              "choice_items": len(mc_items.get(d, []))} for d in list(dict.fromkeys([*losses, *accuracy]))]
    return metrics, table


def _log_metrics(client, run_id: str, metrics: Mapping[str, float]) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, 0) for k, v in metrics.items() if math.isfinite(float(v))]
    client.log_batch(run_id, metrics=batch)


def _log_artifacts(client, run_id: str, table: list[dict[str, Any]]) -> dict[str, Any]:
    """``versatune_eval/per_domain.csv`` + ``.json`` (an MLflow table) and ``per_domain.png`` (bar chart)."""
    import pandas as pd
    from mlflow.models.evaluation.artifacts import CsvEvaluationArtifact, ImageEvaluationArtifact
    from PIL import Image

    from ..figures import domain_bars_figure

    frame = pd.DataFrame(table)
    panels = {"held-out response loss": {r["domain"]: r["eval_loss"] for r in table if r["eval_loss"] is not None}}
    accuracy = {r["domain"]: r["accuracy"] for r in table if r["accuracy"] is not None}
    if accuracy:
        panels["multiple-choice accuracy"] = accuracy
    client.log_table(run_id, frame, f"{ARTIFACT_DIR}/per_domain.json")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        frame.to_csv(folder / "per_domain.csv", index=False)
        domain_bars_figure(panels, folder / "per_domain.png", title="VersaTune evaluation per domain")
        image = Image.open(folder / "per_domain.png")
        image.load()
        client.log_artifacts(run_id, str(folder), artifact_path=ARTIFACT_DIR)
    base = client.get_run(run_id).info.artifact_uri.rstrip("/")
    return {"per_domain_table": CsvEvaluationArtifact(f"{base}/{ARTIFACT_DIR}/per_domain.csv", frame),
            "per_domain_chart": ImageEvaluationArtifact(f"{base}/{ARTIFACT_DIR}/per_domain.png", image)}
