"""Behaviour of formatting: loss only on the reply + EOS, exact boundaries, truncation, batching."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from versatune_mlops.data.examples import SFTExample
from versatune_mlops.errors import ConfigError
from versatune_mlops.data.formatting import (
    IGNORE_INDEX,
    check_max_length,
    collate,
    encode_choice,
    encode_example,
    encode_prompt,
    has_labels,
    render_prompt,
)

# A chat template in the style of real ones: it writes BOS and turn markers into the text itself.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _train_tokenizer() -> PreTrainedTokenizerFast:
    words = ["law", "medicine", "finance", "science", "code", "question", "answer", "option", "the", "of"]
    texts = [
        f"### User:\nWrite a {w} question {i}.\n\n### Assistant:\nThe {w} answer is B. option {i * 7}, naïve café."
        for i in range(40)
        for w in words
    ]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any byte can be encoded
    )
    tokenizer.train_from_iterator(texts, trainer)
    # Like Llama's, this tokenizer adds BOS by default, so adding special tokens twice would show.
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


@pytest.fixture(scope="module")
def plain_tokenizer() -> PreTrainedTokenizerFast:
    return _train_tokenizer()


@pytest.fixture(scope="module")
def chat_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = _train_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


@pytest.fixture(params=["plain_tokenizer", "chat_tokenizer"])
def tokenizer(request) -> PreTrainedTokenizerFast:
    """Each behaviour is checked with and without a chat template."""
    return request.getfixturevalue(request.param)


EXAMPLE = SFTExample("law", (("system", "Be exact."), ("user", "Write a law question.")), "The law answer is B. option 7, naïve café.")


def _prompt_length(tokenizer, messages) -> int:
    return len(encode_prompt(tokenizer, messages))


def test_render_prompt_plain_template(plain_tokenizer) -> None:
    text = render_prompt(plain_tokenizer, EXAMPLE.messages)
    assert text == "### System:\nBe exact.\n\n### User:\nWrite a law question.\n\n### Assistant:\n"


def test_render_prompt_uses_the_chat_template(chat_tokenizer) -> None:
    text = render_prompt(chat_tokenizer, (("user", "Hi"),))
    assert text == "<s><|user|>\nHi</s>\n<|assistant|>\n"


def test_labels_mask_exactly_the_prompt(tokenizer) -> None:
    encoded = encode_example(tokenizer, EXAMPLE, max_length=512)
    ids, labels = encoded["input_ids"], encoded["labels"]
    n_prompt = _prompt_length(tokenizer, EXAMPLE.messages)
    assert len(ids) == len(labels) > n_prompt
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    # The reply tokens decode back to the reply, and the sequence ends with EOS.
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[n_prompt:-1]) == EXAMPLE.response
    # The prompt tokens are the rendered prompt (the plain template gets BOS prepended).
    prompt_text = render_prompt(tokenizer, EXAMPLE.messages)
    if not tokenizer.chat_template:
        prompt_text = tokenizer.bos_token + prompt_text
    assert tokenizer.decode(ids[:n_prompt]) == prompt_text


def test_special_tokens_are_not_doubled(tokenizer) -> None:
    ids = encode_example(tokenizer, EXAMPLE, max_length=512)["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    if tokenizer.chat_template:
        # The template closes each earlier turn with EOS; the reply adds exactly one more.
        assert ids.count(tokenizer.eos_token_id) == len(EXAMPLE.messages) + 1
    else:
        assert ids.count(tokenizer.eos_token_id) == 1


def test_encode_choice_matches_encode_example(tokenizer) -> None:
    choice = encode_choice(tokenizer, EXAMPLE.messages, EXAMPLE.response, max_length=512)
    assert choice == encode_example(tokenizer, EXAMPLE, max_length=512)
    other = encode_choice(tokenizer, EXAMPLE.messages, "C. option 3", max_length=512)
    n_prompt = _prompt_length(tokenizer, EXAMPLE.messages)
    assert other["input_ids"][:n_prompt] == choice["input_ids"][:n_prompt]
    assert tokenizer.decode(other["input_ids"][n_prompt:-1]) == "C. option 3"


def test_truncation_cuts_the_reply_from_the_right(tokenizer) -> None:
    full = encode_example(tokenizer, EXAMPLE, max_length=512)
    n_prompt = _prompt_length(tokenizer, EXAMPLE.messages)
    cut = encode_example(tokenizer, EXAMPLE, max_length=n_prompt + 3)
    assert cut["input_ids"] == full["input_ids"][: n_prompt + 3]
    assert cut["labels"] == full["labels"][: n_prompt + 3]
    assert sum(label != IGNORE_INDEX for label in cut["labels"]) == 3
    assert has_labels(cut)


def test_reply_cut_off_entirely_has_no_labels(tokenizer) -> None:
    n_prompt = _prompt_length(tokenizer, EXAMPLE.messages)
    for max_length in (n_prompt, n_prompt - 2):
        encoded = encode_example(tokenizer, EXAMPLE, max_length=max_length)
        assert len(encoded["input_ids"]) == len(encoded["labels"]) == max_length
        assert encoded["labels"] == [IGNORE_INDEX] * max_length
        assert not has_labels(encoded)


def test_check_max_length(tokenizer) -> None:
    template = _prompt_length(tokenizer, (("user", ""),))
    check_max_length(tokenizer, template + 1)  # room for one reply token
    with pytest.raises(ConfigError) as info:
        check_max_length(tokenizer, template)
    assert str(info.value) == (
        f"train.max_length={template} is shorter than the prompt template ({template} tokens); raise it above {template}."
    )


def test_collate_pads_right(tokenizer) -> None:
    short = encode_choice(tokenizer, (("user", "Hi"),), "B", max_length=512)
    long = encode_example(tokenizer, EXAMPLE, max_length=512)
    batch = collate([short, long], pad_token_id=tokenizer.pad_token_id)
    width = len(long["input_ids"])
    assert set(batch) == {"input_ids", "labels", "attention_mask"}
    for key in batch:
        assert batch[key].shape == (2, width) and batch[key].dtype == torch.long
    n = len(short["input_ids"])
    assert batch["input_ids"][0, :n].tolist() == short["input_ids"]
    assert batch["input_ids"][0, n:].tolist() == [tokenizer.pad_token_id] * (width - n)
    assert batch["labels"][0, :n].tolist() == short["labels"]
    assert batch["labels"][0, n:].tolist() == [IGNORE_INDEX] * (width - n)
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * (width - n)
    assert batch["attention_mask"][1].tolist() == [1] * width
    assert batch["input_ids"][1].tolist() == long["input_ids"]
