"""The probe: estimator, aggregation, free generation, and the `versatune probe` output."""

import numpy as np
import pytest

from versatune_mlops.config import DataConfig
from versatune_mlops.data.sources import load_domain_data
from versatune_mlops.errors import ConfigError
from versatune_mlops.mixing.estimators import ESTIMATORS, EmbeddingEstimator, build_estimator
from versatune_mlops.mixing.probe import aggregate_distribution, fit_estimator, run_probe


def test_aggregate_is_mean_of_probability_vectors():
    q = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.2, 0.8], [0.1, 0.1, 0.8]])
    # Hand computation: column sums 1.6, 0.8, 1.6 over N=4.
    assert aggregate_distribution(q) == pytest.approx([0.4, 0.2, 0.4])
    with pytest.raises(ConfigError, match="at least one generated sequence"):
        aggregate_distribution(np.zeros((0, 3)))


def test_unknown_estimator_is_rejected():
    assert "tfidf_logreg" in ESTIMATORS
    with pytest.raises(ConfigError, match="Unknown probe estimator 'llm'"):
        build_estimator("llm")


@pytest.fixture(scope="module")
def small_data():
    return load_domain_data(DataConfig(max_examples_per_domain=60, eval_fraction=0.2))


def test_estimator_recognises_held_out_domains(small_data):
    estimator, accuracy = fit_estimator(small_data, "tfidf_logreg")
    assert accuracy > 0.6, "six domains: chance is 0.17"
    probabilities = estimator.predict_proba(["The defendant appealed the court's ruling on the contract.",
                                             "def f(x): return x + 1  # a Python function in a program"])
    assert probabilities.shape == (2, 6) and np.allclose(probabilities.sum(axis=1), 1)
    assert small_data.domains[probabilities[0].argmax()] == "law"
    assert small_data.domains[probabilities[1].argmax()] == "code"


def test_estimator_is_not_biased_by_domain_sizes(small_data):
    """Balanced classes: text with no domain signal should not land on the biggest domain."""
    lopsided = small_data
    lopsided.train["law"] = lopsided.train["law"] * 5
    estimator, _ = fit_estimator(lopsided, "tfidf_logreg", max_per_domain=10_000)
    p = estimator.predict_proba(["zzzz qqqq xxxx"])[0]
    assert p[lopsided.domains.index("law")] < 0.4


def test_run_probe_generates_and_aggregates(tiny_config):
    from versatune_mlops.training.setup import prepare_inputs

    config = tiny_config(**{"probe.num_samples": 10, "probe.batch_size": 4, "probe.floor": 0.05})
    inputs = prepare_inputs(config)
    result = run_probe(inputs.loaded.model, inputs.loaded.tokenizer, inputs.data, config.probe)
    assert result.num_samples == 10 and len(result.samples) == 10
    assert sum(result.distribution.values()) == pytest.approx(1)
    assert sum(result.initial_weights.values()) == pytest.approx(1)
    assert min(result.initial_weights.values()) >= 0.05 / (1 + 6 * 0.05) - 1e-9
    again = run_probe(inputs.loaded.model, inputs.loaded.tokenizer, inputs.data, config.probe)
    assert again.samples == result.samples, "generation is seeded by probe.seed"


def test_embedding_estimator_reads_prose_by_topic_and_caches_its_embeddings(tmp_path, monkeypatch):
    data = load_domain_data(DataConfig(max_examples_per_domain=30, eval_fraction=0.2))
    estimator, accuracy = fit_estimator(data, "embedding", cache_dir=tmp_path)
    assert accuracy > 0.6, "six domains: chance is 0.17"
    prose = ["The court held that the contract was void because the seller had misrepresented the land.",
             "The patient was given antibiotics after the infection spread to the lungs."]
    probabilities = estimator.predict_proba(prose)
    assert probabilities.shape == (2, 6) and np.allclose(probabilities.sum(axis=1), 1) and (probabilities >= 0).all()
    assert [data.domains[i] for i in probabilities.argmax(axis=1)] == ["law", "medicine"]
    assert len(list((tmp_path / "embeddings").glob("*.npy"))) == 3  # train, held-out, the two texts

    # A second estimator on the same texts reads the cache instead of running the encoder.
    def no_encoder(self, texts):
        raise AssertionError("the encoder ran although the embeddings were cached")

    monkeypatch.setattr(EmbeddingEstimator, "_encode", no_encoder)
    again, again_accuracy = fit_estimator(data, "embedding", cache_dir=tmp_path)
    assert again_accuracy == accuracy
    np.testing.assert_allclose(again.predict_proba(prose), probabilities)


@pytest.mark.parametrize("model, fragment", [("/no/such/encoder", "is not a model folder"),
                                              ("minilm-typo", "could not be loaded as a text encoder")])
def test_a_bad_embedding_model_names_the_fix(model, fragment):
    estimator = build_estimator("embedding", embedding_model=model)
    with pytest.raises(ConfigError, match=fragment):
        estimator.embed(["some text"])


def test_the_estimator_registry_is_what_config_accepts():
    from versatune_mlops.config import ESTIMATORS as ACCEPTED, load_config

    assert ACCEPTED == tuple(ESTIMATORS) and {"tfidf_logreg", "embedding"} <= set(ACCEPTED)
    assert load_config("smollm2").probe.estimator == "embedding"
    with pytest.raises(ConfigError, match="probe.estimator='bert' is unknown"):
        load_config("tiny", overrides={"probe.estimator": "bert"})
