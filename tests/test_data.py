"""Behaviour of the data module: embedded MMLU, user datasets in every format, helpful errors."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pandas as pd
import pytest

from versatune_mlops.config import DEFAULT_DOMAINS, DataConfig
from versatune_mlops.data.examples import DomainData, MCItem, SFTExample
from versatune_mlops.data.mmlu import SUBJECT_TO_DOMAIN
from versatune_mlops.data.sources import load_domain_data
from versatune_mlops.errors import ConfigError, DataError

# ----------------------------------------------------------------------------------------------
# Embedded MMLU


@pytest.fixture(scope="module")
def mmlu() -> DomainData:
    return load_domain_data(DataConfig())


def _write_question(example: SFTExample) -> str:
    """The question text of a "write" item (its response up to the options)."""
    return example.response.split("\nA. ")[0]


def _is_write_item(example: SFTExample) -> bool:
    return example.messages[0][1].startswith("Write a multiple-choice exam question")


def test_mmlu_has_six_nonempty_domains(mmlu: DomainData) -> None:
    assert mmlu.domains == list(DEFAULT_DOMAINS)
    assert set(SUBJECT_TO_DOMAIN.values()) == set(DEFAULT_DOMAINS)
    for domain in mmlu.domains:
        assert mmlu.train[domain], domain
        assert mmlu.eval[domain], domain
        assert len(mmlu.eval_mc[domain]) == len(mmlu.eval[domain])
        assert all(ex.domain == domain for ex in mmlu.train[domain] + mmlu.eval[domain])
    # Default eval size: 10% capped at 48 questions (code has 412 questions -> 41).
    assert len(mmlu.eval["law"]) == 48
    assert len(mmlu.eval["code"]) == 41
    # Two items (write + answer) per training question; law has 1763 questions.
    assert mmlu.sizes()["law"] == 2 * (1763 - 48)
    assert mmlu.sizes() == {d: len(mmlu.train[d]) for d in mmlu.domains}


def test_mmlu_items_have_the_designed_shape(mmlu: DomainData) -> None:
    write, answer = mmlu.train["medicine"][0], mmlu.train["medicine"][1]
    assert _is_write_item(write) and write.messages[0][0] == "user"
    assert "_" not in write.messages[0][1]  # subject names are written with spaces
    question = _write_question(write)
    assert len(question) > 10
    assert write.response.splitlines()[-1] in {f"Answer: {x}" for x in "ABCD"}
    for letter in "ABCD":
        assert f"\n{letter}. " in write.response
    # The answer item asks the same question and replies "X. <option text>".
    assert answer.messages[0][1].startswith(question)
    assert answer.messages[0][1].endswith("Answer with the letter and the text of the correct option.")
    letter = write.response[-1]
    assert answer.response.startswith(f"{letter}. ")
    assert f"\n{answer.response}\n" in write.response

    # Eval loss items are "write" items; MC items reuse the answer prompt with four choices.
    assert all(_is_write_item(ex) for ex in mmlu.eval["medicine"])
    for ex, item in zip(mmlu.eval["medicine"], mmlu.eval_mc["medicine"]):
        assert isinstance(item, MCItem)
        assert item.messages[0][1].startswith(_write_question(ex))
        assert [c[:3] for c in item.choices] == ["A. ", "B. ", "C. ", "D. "]
        assert ex.response.endswith(f"Answer: {'ABCD'[item.answer]}")
        assert f"\n{item.choices[item.answer]}\n" in ex.response


def test_mmlu_train_and_eval_are_disjoint_by_question(mmlu: DomainData) -> None:
    for domain in mmlu.domains:
        train_questions = {_write_question(ex) for ex in mmlu.train[domain] if _is_write_item(ex)}
        eval_questions = {_write_question(ex) for ex in mmlu.eval[domain]}
        assert train_questions and eval_questions
        assert not train_questions & eval_questions, domain
        # Answer items of held-out questions are not trained on either.
        for ex in mmlu.train[domain]:
            if not _is_write_item(ex):
                assert ex.messages[0][1].split("\nA. ")[0] not in eval_questions


def test_mmlu_split_is_deterministic_and_seeded(mmlu: DomainData) -> None:
    again = load_domain_data(DataConfig())
    assert again.eval == mmlu.eval and again.train == mmlu.train
    assert again.fingerprint() == mmlu.fingerprint()
    other = load_domain_data(DataConfig(split_seed=1))
    assert other.eval["law"] != mmlu.eval["law"]
    assert other.fingerprint() != mmlu.fingerprint()


def test_mmlu_domain_subset_and_caps() -> None:
    data = load_domain_data(DataConfig(domains=["code", "law"], max_examples_per_domain=30, eval_fraction=0.2))
    assert data.domains == ["code", "law"]
    assert set(data.train) == {"code", "law"}
    for domain in data.domains:
        assert len(data.eval[domain]) == 6  # 20% of 30 questions
        assert len(data.train[domain]) == 2 * 24
    # A seeded sample, not the first 30 questions (which would all be one subject).
    law_prompts = {ex.messages[0][1] for ex in data.train["law"] if _is_write_item(ex)}
    assert len(law_prompts) > 1
    assert load_domain_data(DataConfig(domains=["code", "law"], max_examples_per_domain=30, eval_fraction=0.2)).train == data.train


def test_mmlu_unknown_domain_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_domain_data(DataConfig(domains=["law", "cooking"]))
    message = str(info.value)
    assert "'cooking'" in message
    for domain in DEFAULT_DOMAINS:
        assert domain in message


# ----------------------------------------------------------------------------------------------
# User datasets

DOMAIN_ROWS = [
    {"prompt": f"{domain} prompt {i}", "response": f"{domain} response {i}", "domain": domain}
    for i in range(10)
    for domain in ("cooking", "travel", "music")
]


def _write_jsonl(path, rows) -> str:
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return str(path)


def _check_user_data(data: DomainData, n_per_domain: int = 10) -> None:
    assert data.domains == ["cooking", "travel", "music"]  # order of first appearance
    for domain in data.domains:
        assert len(data.eval[domain]) == 1  # max(1, round(0.1 * 10))
        assert len(data.train[domain]) == n_per_domain - 1
        assert data.eval_mc[domain] == []
        train = {ex.response for ex in data.train[domain]}
        assert not train & {ex.response for ex in data.eval[domain]}
        for ex in data.train[domain] + data.eval[domain]:
            assert ex.domain == domain
            assert ex.messages == (("user", ex.response.replace("response", "prompt")),)


def test_jsonl_loads_and_splits(tmp_path) -> None:
    data = load_domain_data(DataConfig(source=_write_jsonl(tmp_path / "d.jsonl", DOMAIN_ROWS)))
    _check_user_data(data)
    again = load_domain_data(DataConfig(source=str(tmp_path / "d.jsonl")))
    assert again.fingerprint() == data.fingerprint()
    seeds = {load_domain_data(DataConfig(source=str(tmp_path / "d.jsonl"), split_seed=s)).fingerprint() for s in range(4)}
    assert len(seeds) > 1


def test_csv_loads(tmp_path) -> None:
    pd.DataFrame(DOMAIN_ROWS).to_csv(tmp_path / "d.csv", index=False)
    _check_user_data(load_domain_data(DataConfig(source=str(tmp_path / "d.csv"))))


def test_parquet_loads_with_custom_columns(tmp_path) -> None:
    frame = pd.DataFrame(DOMAIN_ROWS).rename(columns={"prompt": "q", "response": "a", "domain": "area"})
    frame.to_parquet(tmp_path / "d.parquet")
    config = DataConfig(source=str(tmp_path / "d.parquet"), prompt_column="q", response_column="a", domain_column="area")
    _check_user_data(load_domain_data(config))


def test_save_to_disk_folder_loads(tmp_path) -> None:
    import datasets

    datasets.Dataset.from_list(DOMAIN_ROWS).save_to_disk(str(tmp_path / "saved"))
    _check_user_data(load_domain_data(DataConfig(source=str(tmp_path / "saved"))))
    # A DatasetDict picks data.hf_split, and a missing split lists the present ones.
    datasets.DatasetDict({"train": datasets.Dataset.from_list(DOMAIN_ROWS)}).save_to_disk(str(tmp_path / "dict"))
    _check_user_data(load_domain_data(DataConfig(source=str(tmp_path / "dict"))))
    with pytest.raises(DataError, match=r"no split 'validation'.*train.*data\.hf_split"):
        load_domain_data(DataConfig(source=str(tmp_path / "dict"), hf_split="validation"))


def test_messages_column_loads(tmp_path) -> None:
    rows = [
        {
            "chat": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": row["prompt"]},
                {"role": "assistant", "content": row["response"]},
            ],
            "domain": row["domain"],
        }
        for row in DOMAIN_ROWS
    ]
    data = load_domain_data(DataConfig(source=_write_jsonl(tmp_path / "chat.jsonl", rows), messages_column="chat"))
    example = data.train["travel"][0]
    assert example.messages[0] == ("system", "Be brief.")
    assert example.messages[1][0] == "user" and len(example.messages) == 2
    assert example.response == example.messages[1][1].replace("prompt", "response")
    # Parquet keeps the list-of-dicts structure too.
    pd.DataFrame(rows).to_parquet(tmp_path / "chat.parquet")
    again = load_domain_data(DataConfig(source=str(tmp_path / "chat.parquet"), messages_column="chat"))
    assert again.fingerprint() == data.fingerprint()


def test_domains_subset_must_match_the_data(tmp_path) -> None:
    source = _write_jsonl(tmp_path / "d.jsonl", DOMAIN_ROWS)
    data = load_domain_data(DataConfig(source=source, domains=["music", "travel", "cooking"]))
    assert data.domains == ["music", "travel", "cooking"]
    # A configured domain absent from the data: named, with the present ones listed.
    with pytest.raises(DataError) as info:
        load_domain_data(DataConfig(source=source, domains=["cooking", "travel", "music", "law"]))
    assert "'law'" in str(info.value) and "cooking, travel, music" in str(info.value)
    # A data domain missing from the config: listed, with the fix.
    with pytest.raises(DataError) as info:
        load_domain_data(DataConfig(source=source, domains=["cooking"]))
    message = str(info.value)
    assert "'travel'" in message and "'music'" in message and "data.domains" in message


def test_max_examples_per_domain_for_user_data(tmp_path) -> None:
    source = _write_jsonl(tmp_path / "d.jsonl", DOMAIN_ROWS)
    data = load_domain_data(DataConfig(source=source, max_examples_per_domain=4, eval_fraction=0.5))
    assert data.sizes() == {"cooking": 2, "travel": 2, "music": 2}
    assert all(len(data.eval[d]) == 2 for d in data.domains)


# ----------------------------------------------------------------------------------------------
# Bad input: each error names the problem and the fix


def test_missing_file(tmp_path) -> None:
    with pytest.raises(DataError, match=r"not found.*data\.source") as info:
        load_domain_data(DataConfig(source=str(tmp_path / "nope.jsonl")))
    assert "nope.jsonl" in str(info.value)


def test_malformed_jsonl_line_reports_file_and_line(tmp_path) -> None:
    path = tmp_path / "broken.jsonl"
    lines = [json.dumps(row) for row in DOMAIN_ROWS[:2]] + ['{"prompt": "x", "response": ']
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        load_domain_data(DataConfig(source=str(path)))
    assert "broken.jsonl line 3" in str(info.value)
    path.write_text(json.dumps(DOMAIN_ROWS[0]) + "\n[1, 2]\n")
    with pytest.raises(DataError, match=r"broken\.jsonl line 2 is list, not a JSON object"):
        load_domain_data(DataConfig(source=str(path)))


def test_missing_column_lists_columns_and_config_key(tmp_path) -> None:
    rows = [{"question": r["prompt"], "response": r["response"], "domain": r["domain"]} for r in DOMAIN_ROWS]
    with pytest.raises(DataError) as info:
        load_domain_data(DataConfig(source=_write_jsonl(tmp_path / "d.jsonl", rows)))
    message = str(info.value)
    assert "'prompt'" in message and "question, response, domain" in message and "data.prompt_column" in message
    # A column present in some rows but not others names the row.
    rows = DOMAIN_ROWS[:5] + [{"prompt": "p", "domain": "cooking"}]
    with pytest.raises(DataError, match=r"line 6 has no 'response' field"):
        load_domain_data(DataConfig(source=_write_jsonl(tmp_path / "e.jsonl", rows)))


def test_missing_messages_column(tmp_path) -> None:
    with pytest.raises(DataError, match=r"'chat' not found.*data\.messages_column"):
        load_domain_data(DataConfig(source=_write_jsonl(tmp_path / "d.jsonl", DOMAIN_ROWS), messages_column="chat"))


def test_domain_with_too_few_examples(tmp_path) -> None:
    rows = DOMAIN_ROWS + [{"prompt": "p", "response": "r", "domain": "rare"}]
    with pytest.raises(DataError) as info:
        load_domain_data(DataConfig(source=_write_jsonl(tmp_path / "d.jsonl", rows)))
    assert "'rare' has 1 example" in str(info.value)


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ({"prompt": "", "response": "r"}, r"line 4: the prompt is empty"),
        ({"prompt": "  ", "response": "r"}, r"line 4: the prompt is empty"),
        ({"prompt": "p", "response": 42}, r"line 4: the response is not a string \(42\)"),
        ({"prompt": "p", "response": None}, r"line 4: the response is not a string"),
    ],
)
def test_empty_or_non_string_text_names_the_row(tmp_path, bad, fragment) -> None:
    rows = DOMAIN_ROWS[:3] + [{**bad, "domain": "cooking"}] + DOMAIN_ROWS[3:]
    with pytest.raises(DataError, match=fragment):
        load_domain_data(DataConfig(source=_write_jsonl(tmp_path / "d.jsonl", rows)))


def test_empty_csv_cell_names_the_row(tmp_path) -> None:
    rows = [dict(r) for r in DOMAIN_ROWS]
    rows[6]["response"] = ""
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"d\.csv row 7: the response is empty"):
        load_domain_data(DataConfig(source=str(tmp_path / "d.csv")))


@pytest.mark.parametrize(
    "chat, fragment",
    [
        ([{"role": "user", "content": "q"}, {"role": "user", "content": "a"}], r"last message has role 'user', not 'assistant'"),
        ([{"role": "assistant", "content": "a"}], r"at least one message before it"),
        ([{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}], r"role 'bot'"),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}], r"assistant\) message is empty"),
        ("not a list", r"not valid JSON"),
    ],
)
def test_bad_messages(tmp_path, chat, fragment) -> None:
    good = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    rows = [{"chat": good, "domain": "x"}, {"chat": chat, "domain": "x"}, {"chat": good, "domain": "x"}]
    with pytest.raises(DataError, match=fragment) as info:
        load_domain_data(DataConfig(source=_write_jsonl(tmp_path / "d.jsonl", rows), messages_column="chat"))
    assert "line 2" in str(info.value)


def test_unknown_suffix_and_empty_file(tmp_path) -> None:
    (tmp_path / "d.txt").write_text("hello\n")
    with pytest.raises(DataError, match=r"suffix '\.txt'.*data\.format"):
        load_domain_data(DataConfig(source=str(tmp_path / "d.txt")))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="has no rows"):
        load_domain_data(DataConfig(source=str(tmp_path / "empty.jsonl")))


def test_explicit_format_overrides_the_suffix(tmp_path) -> None:
    (tmp_path / "d.txt").write_text("\n".join(json.dumps(row) for row in DOMAIN_ROWS))
    _check_user_data(load_domain_data(DataConfig(source=str(tmp_path / "d.txt"), format="jsonl")))


def test_unknown_hub_dataset_offline(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match=r"'no-such-org/no-such-dataset'.*could not be loaded.*offline"):
        load_domain_data(DataConfig(source="no-such-org/no-such-dataset"))
