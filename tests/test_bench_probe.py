"""`versatune bench-probe`: the probe-fidelity benchmark on the tiny preset, tracked and resumable."""

import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from versatune_mlops.bench.probe_fidelity import (EstimatorRow, draw_mixture, fidelity_scores, out_of_genre_prompts,
                                                  parse_rows)
from versatune_mlops.cli import main
from versatune_mlops.integrations.mlflow.tracking import configure_tracking

SMALL = ["--preset", "tiny", "--per-class", "2", "--mixture-size", "16", "--seeds", "0,1", "--bos-samples", "4",
         "--set", "data.max_examples_per_domain=40"]


def test_rows_parse_with_their_other_class():
    assert parse_rows("tfidf_logreg, embedding+mmlu,llm_judge") == [
        EstimatorRow("tfidf_logreg"), EstimatorRow("embedding", "mmlu"), EstimatorRow("llm_judge")]
    assert EstimatorRow("embedding", "mmlu").label == "embedding + other (mmlu)"


def test_prompts_cover_every_domain_and_other_with_topics_from_mmlu():
    prompts = out_of_genre_prompts(["law", "code"], "mmlu", per_class=4, seed=0)
    assert list(prompts) == ["law", "code", "other"] and all(len(p) == 4 for p in prompts.values())
    assert all(any(s in p for s in ("law", "jurisprudence")) for p in prompts["law"])
    assert out_of_genre_prompts(["contracts"], "my.jsonl", 2, 0)["contracts"][0].count("contracts") == 1


def test_a_perfect_estimator_has_zero_tv_and_a_uniform_one_does_not():
    labels = ["a"] * 5 + ["b"] * 5 + ["other"] * 5
    classes = ["a", "b", "other"]
    perfect = np.eye(3)[[classes.index(x) for x in labels]]
    scores = fidelity_scores(perfect, labels, classes, seeds=[0, 1, 2], size=50, concentration=0.5, other_domain=None)
    assert scores["tv"]["mean"] == pytest.approx(0) and scores["tv_prior"]["mean"] == pytest.approx(0)
    uniform = np.full((15, 3), 1 / 3)
    assert fidelity_scores(uniform, labels, classes, [0, 1, 2], 50, 0.5, None)["tv"]["mean"] > 0.1
    picked, drawn = draw_mixture({"a": [0, 1], "b": [2]}, np.array([0.25, 0.75]), 40, np.random.default_rng(0))
    assert len(picked) == 40 and drawn.sum() == pytest.approx(1) and set(picked) <= {0, 1, 2}


def test_bench_probe_tracks_its_tables_and_resumes(tmp_path, monkeypatch, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    configure_tracking(uri)
    out = tmp_path / "fidelity"
    argv = ["bench-probe", *SMALL, "--estimators", "tfidf_logreg,tfidf_logreg+mmlu,llm_judge", "--output-dir", str(out),
            "--experiment", "fidelity"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| tfidf_logreg + other (mmlu) |" in printed and "| llm_judge |" in printed
    report = json.loads((out / "report.json").read_text())
    for row in report["rows"].values():
        for genre in ("in_genre", "out_of_genre"):
            assert 0 <= row[genre]["tv"]["mean"] <= 1 and len(row[genre]["per_seed"]) == 2
        assert sum(row["bos_prior"].values()) == pytest.approx(1)
    assert report["rows"]["llm_judge"]["bos_mean"]["other"] > 0, "the judge has 'other' among its labels"
    assert report["rows"]["tfidf_logreg"]["bos_mean"]["other"] == 0, "no background texts, no 'other' class"
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("fidelity").experiment_id])
    assert run.info.status == "FINISHED" and "fidelity/llm_judge/out_of_genre_tv" in run.data.metrics

    # Rerun on the same folder: the texts and every finished row are reused, nothing is refitted.
    def no_refit(*args, **kwargs):
        raise AssertionError("a finished row was measured again")

    monkeypatch.setattr("versatune_mlops.bench.probe_fidelity.fit_estimator", no_refit)
    assert main([*argv, "--no-tracking"]) == 0
    assert json.loads((out / "report.json").read_text())["rows"] == report["rows"]


def test_a_judge_that_is_not_a_causal_lm_fails_the_run_cleanly(tmp_path, monkeypatch, capsys):
    from versatune_mlops.mixing.estimators import resolve_embedding_model

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    configure_tracking(uri)
    code = main(["probe", "--preset", "tiny", "--set", "probe.estimator=llm_judge", "--set",
                 f"probe.judge_model={resolve_embedding_model('minilm')}", "--set", "probe.num_samples=2",
                 "--experiment", "bad-judge", "--output-dir", str(tmp_path / "probe")])
    assert code == 2 and "is not a causal language model" in capsys.readouterr().err
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("bad-judge").experiment_id])
    assert run.info.status == "FAILED", "no run is left RUNNING"
