"""MLflow plugins, reached through MLflow's own entry points: the `versatune` evaluator and the run-context
provider (the Ray project backend is in test_ray_backend.py)."""

from importlib.metadata import entry_points

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from versatune_mlops import __version__

from versatune_mlops.integrations.mlflow import run_context
from versatune_mlops.config import load_config
from versatune_mlops.data.sources import load_domain_data
from versatune_mlops.errors import DataError
from versatune_mlops.integrations.mlflow.plugins.evaluator import evaluation_frame
from versatune_mlops.integrations.mlflow.tracking import configure_tracking

DOMAINS = ["law", "medicine", "finance", "science", "code", "general"]
STEPS = 6
TRAIN = ["--set", f"train.max_steps={STEPS}", "--set", "method.interval=3", "--set", "probe.num_samples=8",
         "--set", "train.eval_accuracy=true"]


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A tracked tiny training run whose model is registered as vt-plugin@champion."""
    from versatune_mlops.cli import main
    from versatune_mlops.integrations.mlflow.registry import register_best

    folder = tmp_path_factory.mktemp("plugins")
    with pytest.MonkeyPatch.context() as monkeypatch:
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        configure_tracking(uri)
        assert main(["train", "--preset", "tiny", "--experiment", "train", "--output-dir", str(folder / "out"), *TRAIN]) == 0
        client = MlflowClient()
        (run,) = client.search_runs([client.get_experiment_by_name("train").experiment_id])
        register_best("vt-plugin", run_ids=[run.info.run_id])
        yield run


def _evaluate(model_uri, frame, **config):
    return mlflow.models.evaluate(model_uri, frame, model_type="text", evaluators=["versatune"],
                                  evaluator_config={"versatune": config})


def _held_out_frame():
    return evaluation_frame(load_domain_data(load_config("tiny").data))


def _metric_at(client, run_id, key, step):
    (value,) = [m.value for m in client.get_metric_history(run_id, key) if m.step == step]
    return value


def test_plugins_are_registered_as_entry_points():
    names = {group: {e.name: e.value for e in entry_points(group=group)}
             for group in ("mlflow.model_evaluator", "mlflow.run_context_provider", "mlflow.project_backend")}
    assert names["mlflow.model_evaluator"]["versatune"] == "versatune_mlops.integrations.mlflow.plugins.evaluator:VersaTuneEvaluator"
    assert names["mlflow.project_backend"]["ray"] == "versatune_mlops.integrations.mlflow.plugins.ray_backend:RayBackend"
    assert "versatune" in names["mlflow.run_context_provider"]
    assert "versatune" in mlflow.models.list_evaluators(), "MLflow's evaluator registry loaded the entry point"


def test_evaluator_on_the_champion_equals_the_runs_own_final_evaluation(champion):
    client = MlflowClient()
    with mlflow.start_run(run_name="eval-champion") as run:
        result = _evaluate("models:/vt-plugin@champion", _held_out_frame())
    train_id = champion.info.run_id
    for d in DOMAINS:
        # Same model, same held-out split, same max_length and batches: the project's numbers.
        assert result.metrics[f"eval_loss/{d}"] == pytest.approx(_metric_at(client, train_id, f"eval_loss/{d}", STEPS),
                                                                 abs=1e-5)
        assert result.metrics[f"accuracy/{d}"] == _metric_at(client, train_id, f"accuracy/{d}", STEPS)
    for key in ("eval_loss/mean", "eval_loss/worst", "score/multi_domain"):
        assert result.metrics[key] == pytest.approx(_metric_at(client, train_id, key, STEPS), abs=1e-5)

    logged = client.get_run(run.info.run_id)
    assert logged.data.metrics["eval_loss/law"] == pytest.approx(result.metrics["eval_loss/law"])
    assert logged.data.tags["versatune.eval.model_run"] == train_id
    assert logged.data.tags["versatune.version"] == __version__, "the context provider tagged the eval run"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "versatune_eval")}
    assert {"versatune_eval/per_domain.csv", "versatune_eval/per_domain.json", "versatune_eval/per_domain.png"} <= artifacts
    table = result.artifacts["per_domain_table"].content
    assert list(table["domain"]) == DOMAINS and table["loss_examples"].min() > 0


@pytest.mark.slow
def test_evaluator_on_a_logged_base_model_equals_the_runs_step_zero(champion, tmp_path):
    """Before vs after SFT: the untrained tiny model, logged for comparison, scores as the run's step 0."""
    from versatune_mlops.training.setup import prepare_inputs
    from versatune_mlops.integrations.mlflow.tracking import log_transformers_model

    inputs = prepare_inputs(load_config("tiny"))
    inputs.loaded.model.save_pretrained(tmp_path / "base")
    inputs.loaded.tokenizer.save_pretrained(tmp_path / "base")
    with mlflow.start_run(run_name="base") as base_run:
        base_uri = log_transformers_model(base_run.info.run_id, tmp_path / "base")
    with mlflow.start_run(run_name="eval-base"):
        result = _evaluate(base_uri, _held_out_frame(), max_length=256)
    client = MlflowClient()
    for d in DOMAINS:
        before = _metric_at(client, champion.info.run_id, f"eval_loss/{d}", 0)
        assert result.metrics[f"eval_loss/{d}"] == pytest.approx(before, abs=1e-5)
        assert result.metrics[f"eval_loss/{d}"] > _metric_at(client, champion.info.run_id, f"eval_loss/{d}", STEPS)


def test_evaluator_refuses_data_without_a_domain_column(champion):
    frame = _held_out_frame().rename(columns={"domain": "subject"})
    with mlflow.start_run(), pytest.raises(DataError, match="no domain column 'domain'.*subject"):
        _evaluate("models:/vt-plugin@champion", frame)
    with mlflow.start_run():  # the fix the message names works
        result = _evaluate("models:/vt-plugin@champion", frame, domain_column="subject")
    assert set(DOMAINS) <= {k.split("/")[1] for k in result.metrics if k.startswith("eval_loss/")}


def test_evaluator_refuses_domains_the_model_did_not_train_on(champion):
    frame = _held_out_frame()
    frame.loc[frame.index[:3], "domain"] = "poetry"
    with mlflow.start_run(), pytest.raises(DataError, match=r"\['poetry'\] that the model's run did not train on"):
        _evaluate("models:/vt-plugin@champion", frame)


def test_context_tags_on_a_plain_start_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run() as outside:
        pass
    config = load_config("tiny", overrides={"method.method": "doremi", "data.domains": ["law", "code"]})
    with run_context.active(run_context.describe(config)):
        with mlflow.start_run() as inside:
            pass
    with mlflow.start_run() as after:
        pass
    client = MlflowClient()
    tags = {name: {k: v for k, v in client.get_run(r.info.run_id).data.tags.items() if k.startswith("versatune.")}
            for name, r in (("outside", outside), ("inside", inside), ("after", after))}
    assert tags["outside"] == {"versatune.version": __version__}
    assert tags["inside"] == {"versatune.version": __version__, "versatune.method": "doremi",
                              "versatune.mode": "fostering", "versatune.preset": "tiny", "versatune.domains": "law,code"}
    assert tags["after"] == tags["outside"], "the context ends with the command"


def test_cli_sets_the_run_context_for_the_command_only(tmp_path, monkeypatch):
    from versatune_mlops import cli
    from versatune_mlops.integrations.mlflow import entrypoints

    seen = {}

    def fake_train(config, out, run_id, resume):
        seen.update(run_context.current())
        raise DataError("stop here")

    monkeypatch.setattr(entrypoints, "train_here", fake_train)
    assert cli.main(["train", "--preset", "tiny", "--method", "uniform", "--no-tracking",
                     "--output-dir", str(tmp_path)]) == 2
    assert seen == {"method": "uniform", "mode": "fostering", "preset": "tiny", "domains": ",".join(DOMAINS)}
    assert run_context.current() == {}
