"""Turning examples into token ids with the loss on the response only, and batching them.

The prompt and the response are tokenised separately and concatenated, so the boundary between
them is exact: every prompt token is labelled :data:`IGNORE_INDEX`, every response token and the
final EOS carry their own id as label (the model shifts labels itself).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import torch

from .examples import SFTExample
from ..errors import ConfigError, DataError, ModelError

log = logging.getLogger(__name__)

IGNORE_INDEX = -100

Messages = Sequence[tuple[str, str]]

# Used when the tokenizer has no chat template (e.g. a base model or the tiny test tokenizer).
PLAIN_ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


def render_prompt(tokenizer: Any, messages: Messages) -> str:
    """The prompt text up to where the assistant's reply starts."""
    if getattr(tokenizer, "chat_template", None):
        chat = [{"role": role, "content": content} for role, content in messages]
        return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    turns = [f"### {PLAIN_ROLE_NAMES.get(role, role.capitalize())}:\n{content}\n\n" for role, content in messages]
    return "".join(turns) + "### Assistant:\n"


def encode_prompt(tokenizer: Any, messages: Messages) -> list[int]:
    """Token ids of the rendered prompt, special tokens included exactly once."""
    # A chat template writes its own special tokens (BOS, turn markers) into the text, so the
    # tokenizer must not add them again. The plain template has none: add BOS ourselves.
    ids = list(tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"])
    if not getattr(tokenizer, "chat_template", None) and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id] + ids
    return ids


def encode_response(tokenizer: Any, response: str) -> list[int]:
    """Token ids of the reply followed by EOS, which teaches the model where to stop."""
    if tokenizer.eos_token_id is None:
        raise ModelError("The tokenizer has no EOS token, so a reply's end cannot be marked. Set tokenizer.eos_token.")
    return list(tokenizer(response, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]


def _encode(tokenizer: Any, messages: Messages, response: str, max_length: int) -> dict[str, list[int]]:
    prompt_ids = encode_prompt(tokenizer, messages)
    response_ids = encode_response(tokenizer, response)
    # Truncate from the right: the end of a long reply is lost first, the prompt is kept whole
    # when it fits. A prompt that fills max_length leaves every label ignored (callers skip those).
    input_ids = (prompt_ids + response_ids)[:max_length]
    n_prompt = min(len(prompt_ids), max_length)
    labels = [IGNORE_INDEX] * n_prompt + input_ids[n_prompt:]
    return {"input_ids": input_ids, "labels": labels}


def encode_example(tokenizer: Any, example: SFTExample, max_length: int) -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` of one SFT example; labels are IGNORE_INDEX except on the reply + EOS."""
    return _encode(tokenizer, example.messages, example.response, max_length)


def encode_choice(tokenizer: Any, messages: Messages, choice: str, max_length: int) -> dict[str, list[int]]:
    """Like :func:`encode_example`, for one candidate reply of a multiple-choice item."""
    return _encode(tokenizer, messages, choice, max_length)


def has_labels(encoded: dict[str, list[int]]) -> bool:
    """False when truncation cut the whole reply off, so the example carries no loss."""
    return any(label != IGNORE_INDEX for label in encoded["labels"])


def encode_split(tokenizer: Any, split: Mapping[str, Sequence[SFTExample]], max_length: int,
                 what: str) -> dict[str, list[dict[str, list[int]]]]:
    """Encode every domain's examples; drops (with a warning) those whose reply is cut off entirely."""
    encoded: dict[str, list[dict[str, list[int]]]] = {}
    skipped: list[str] = []
    for domain, examples in split.items():
        rows = [encode_example(tokenizer, ex, max_length) for ex in examples]
        # A prompt longer than max_length leaves no response token to learn from.
        kept = [row for row in rows if has_labels(row)]
        if len(kept) < len(rows):
            skipped.append(f"{domain} {len(rows) - len(kept)}/{len(rows)}")
        if not kept:
            raise DataError(
                f"Every {what} example of domain {domain!r} has its response cut off by "
                f"train.max_length={max_length}. Raise train.max_length or shorten the prompts."
            )
        encoded[domain] = kept
    if skipped:  # one line for the split, not one per domain
        log.warning("%s: skipped examples with no response token within max_length=%d: %s",
                    what, max_length, ", ".join(skipped))
    return encoded


def check_max_length(tokenizer: Any, max_length: int) -> None:
    """Fail early when max_length cannot fit even an empty prompt plus one reply token."""
    template_tokens = len(encode_prompt(tokenizer, (("user", ""),)))
    if max_length <= template_tokens:
        raise ConfigError(
            f"train.max_length={max_length} is shorter than the prompt template ({template_tokens} tokens); "
            f"raise it above {template_tokens}."
        )


def collate(batch: list[dict[str, list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: input_ids with pad_token_id, labels with IGNORE_INDEX, attention_mask 0 on padding."""
    if not batch:
        raise ValueError("collate() needs at least one example")
    width = max(len(item["input_ids"]) for item in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, item in enumerate(batch):
        n = len(item["input_ids"])
        input_ids[row, :n] = torch.tensor(item["input_ids"], dtype=torch.long)
        labels[row, :n] = torch.tensor(item["labels"], dtype=torch.long)
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
