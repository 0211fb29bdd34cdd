"""The probe: estimator, aggregation, free generation, and the `versatune probe` output."""

import numpy as np
import pytest

from versatune_mlops.config import DataConfig
from versatune_mlops.data.sources import load_domain_data
from versatune_mlops.errors import ConfigError, DataError
from versatune_mlops.mixing.estimators import ESTIMATORS, EmbeddingEstimator, build_estimator
from versatune_mlops.mixing.probe import aggregate_distribution, example_text, fit_estimator, run_probe


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
    assert len(list((tmp_path / "embeddings").glob("*.npy"))) == 6 + 2  # train (one per domain), held-out, the two texts

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


# -- the "other" answer, the fidelity metric, the judge ---------------------------------------------

from versatune_mlops.mixing.estimators import LLMJudgeEstimator, resolve_embedding_model  # noqa: E402
from versatune_mlops.mixing.probe import OTHER, total_variation  # noqa: E402
from versatune_mlops.mixing.weights import fold_other  # noqa: E402

OFF_TOPIC = ["Whisk three eggs with the sugar, fold in the flour and bake the sponge for twenty minutes.",
             "The striker volleyed the ball into the top corner and the fans sang until the final whistle."]


def test_total_variation_on_hand_computed_cases():
    assert total_variation([0.5, 0.5], [0.5, 0.5]) == 0
    assert total_variation([1, 0, 0], [0, 1, 0]) == 1  # disjoint supports
    # |.6-.2| + |.3-.3| + |.1-.5| = .8, halved.
    assert total_variation([0.6, 0.3, 0.1], [0.2, 0.3, 0.5]) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="shapes"):
        total_variation([1.0], [0.5, 0.5])


def test_fold_other_drops_and_renormalises_or_feeds_a_catch_all():
    domains = ["law", "code", "general"]
    mean = [0.2, 0.2, 0.1, 0.5]  # the last entry is "other"
    assert fold_other(mean, None, domains) == pytest.approx([0.4, 0.4, 0.2])  # the paper: dropped
    assert fold_other(mean, "general", domains) == pytest.approx([0.2, 0.2, 0.6])
    with pytest.raises(ConfigError, match="not one of the run's domains"):
        fold_other(mean, "misc", domains)
    with pytest.raises(ConfigError, match="Every probe sample fell in 'other'"):
        fold_other([0, 0, 0, 1], None, domains)


BACKGROUND = [  # everyday prose in none of the six domains: the "other" class's training texts
    "Knead the dough for ten minutes, let it rise, then bake the loaf until it sounds hollow.",
    "Simmer the onions in butter until golden and stir in the stock and a bay leaf.",
    "Season the chicken with salt and lemon, roast it for an hour and rest it before carving.",
    "The goalkeeper saved the penalty and the home side held on to win the cup final.",
    "She ran the last lap in sixty seconds and crossed the line ahead of the champion.",
    "The team trained on the pitch every morning before the league match on Saturday.",
    "We took the night train to the coast and spent the week swimming and reading on the beach.",
    "Pack light, book the ferry early and try the fish market near the harbour.",
    "Water the tomatoes every evening and pinch out the side shoots as the plants grow.",
    "The band played their old songs and the crowd sang along to every chorus.",
]


@pytest.mark.parametrize("name", ["tfidf_logreg", "embedding"])
def test_classifier_estimators_learn_an_other_class_from_background_texts(name, tmp_path):
    small_data = load_domain_data(DataConfig(max_examples_per_domain=30, eval_fraction=0.2))
    estimator, accuracy = fit_estimator(small_data, name, other_texts=BACKGROUND, cache_dir=tmp_path)
    assert estimator.classes == [*small_data.domains, OTHER] and accuracy > 0.6
    on_topic = [example_text(ex) for ex in small_data.eval["law"][:3] + small_data.eval["code"][:3]]
    rows = estimator.predict_with_other(on_topic + OFF_TOPIC)
    assert rows.shape == (8, 7) and np.allclose(rows.sum(axis=1), 1) and (rows >= 0).all()
    assert (rows[-2:].argmax(axis=1) == 6).all(), "cooking and football prose is none of the six domains"
    assert (rows[:6].argmax(axis=1) != 6).all(), "held-out domain texts stay in their domains"
    domains_only = estimator.predict_proba(OFF_TOPIC)
    assert domains_only.shape == (2, 6) and np.allclose(domains_only.sum(axis=1), 1)
    plain, _ = fit_estimator(small_data, name, cache_dir=tmp_path)
    assert (plain.predict_with_other(OFF_TOPIC)[:, -1] == 0).all(), "without background texts there is no 'other'"


def test_other_texts_come_from_mmlu_or_a_file(tmp_path):
    from versatune_mlops.data.mmlu import SUBJECT_TO_DOMAIN
    from versatune_mlops.data.sources import load_other_texts

    mmlu_texts = load_other_texts("mmlu", limit=50)
    assert len(mmlu_texts) == 50 and not any(f"question on {s}," in t for t in mmlu_texts for s in SUBJECT_TO_DOMAIN)
    assert load_other_texts("none", limit=50) == []
    (tmp_path / "bg.txt").write_text("\n".join(BACKGROUND[:3]) + "\n\n")
    assert load_other_texts(str(tmp_path / "bg.txt"), limit=10) == BACKGROUND[:3]
    (tmp_path / "bg.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    assert load_other_texts(str(tmp_path / "bg.jsonl"), limit=10) == ["a", "b"]
    with pytest.raises(ConfigError, match="is not a file"):
        load_other_texts(str(tmp_path / "missing.txt"), limit=10)
    (tmp_path / "bad.jsonl").write_text('{"body": "a"}\n{"body": "b"}\n')
    with pytest.raises(DataError, match="'text' field"):
        load_other_texts(str(tmp_path / "bad.jsonl"), limit=10)


@pytest.fixture(scope="module")
def tiny_inputs():
    from versatune_mlops.config import load_config
    from versatune_mlops.training.setup import prepare_inputs
    from conftest import tiny_overrides

    return prepare_inputs(load_config("tiny", overrides=tiny_overrides()))


def test_the_judge_scores_each_label_by_its_log_likelihood(tiny_inputs):
    import torch

    model, tokenizer = tiny_inputs.loaded.model, tiny_inputs.loaded.tokenizer
    domains = tiny_inputs.data.domains
    judge = LLMJudgeEstimator(judge=(model, tokenizer)).fit([], [], domains)
    assert judge.labels == judge.classes == [*domains, OTHER]
    texts = ["the court ruled on the contract", "a function returns a list"]
    for first_token in (True, False):
        judge.first_token_scoring = first_token
        log_probs = judge.label_log_probs(texts)
        assert log_probs.shape == (2, 7) and np.allclose(np.exp(log_probs).sum(axis=1), 1)
        # By hand for the second text: each label's log-likelihood after the prompt, softmaxed over labels.
        prompt = judge._prompt_ids(judge._truncate(texts[1]))
        scores = []
        for ids in judge.label_ids:
            used = ids[:1] if first_token else ids
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([prompt + used])).logits.float().log_softmax(-1)[0]
            scores.append(sum(float(logits[len(prompt) - 1 + j, tok]) for j, tok in enumerate(used)))
        expected = np.array(scores) - np.logaddexp.reduce(scores)
        np.testing.assert_allclose(log_probs[1], expected, atol=1e-4)
    rows = judge.predict_with_other(texts)
    assert np.allclose(rows.sum(axis=1), 1)
    assert np.allclose(judge.predict_proba(texts).sum(axis=1), 1) and judge.predict_proba(texts).shape == (2, 6)


def test_judge_bad_inputs_name_the_fix(tiny_inputs):
    from versatune_mlops.config import ProbeConfig
    from versatune_mlops.mixing.probe import load_judge

    model, tokenizer = tiny_inputs.loaded.model, tiny_inputs.loaded.tokenizer
    with pytest.raises(ConfigError, match="context"):
        judge = LLMJudgeEstimator(judge=(model, tokenizer))
        judge.max_text_tokens = model.config.max_position_embeddings
        judge.fit([], [], tiny_inputs.data.domains)
    with pytest.raises(ConfigError, match="is not a causal language model"):
        load_judge(ProbeConfig(estimator="llm_judge", judge_model=resolve_embedding_model("minilm")), model, tokenizer)
    with pytest.raises(ConfigError, match="needs a judge model"):
        build_estimator("llm_judge")


def test_a_classifier_needs_two_examples_per_domain(small_data):
    import copy

    thin = copy.copy(small_data)
    thin.train = {**small_data.train, "finance": small_data.train["finance"][:1]}
    with pytest.raises(ConfigError, match="at least 2 labelled training examples per domain; finance has 1"):
        fit_estimator(thin, "tfidf_logreg")


def test_a_catch_all_missing_from_the_domains_drops_the_other_share(caplog):
    from versatune_mlops.mixing.probe import resolve_other_domain

    assert resolve_other_domain("general", ["law", "general"]) == "general"
    assert resolve_other_domain(None, ["law", "code"]) is None
    with caplog.at_level("WARNING"):
        assert resolve_other_domain("general", ["law", "code"]) is None
    assert "not among this run's domains (law, code)" in caplog.text
