"""The base model's own answers to a domain's prompts (the multigenre ``general`` domain).

Generated once per model and prompt list, greedily (deterministic, so every rank and every rerun
gets the same text), with the exact prompt the training loss sees (:func:`.formatting.encode_prompt`),
and cached on disk under ``<model cache>/self_answers/<key>.json``. The key hashes the model's input
embedding weights (two runs of one model name with other weights, e.g. two tiny seeds, differ), the
tokenizer's vocabulary size, the prompts and the decoding settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from .examples import DomainData, SFTExample
from .formatting import encode_prompt

logger = logging.getLogger(__name__)

# A mild repetition penalty keeps greedy decoding of a small model out of loops.
REPETITION_PENALTY = 1.1


def fill_self_answers(data: DomainData, model: torch.nn.Module, tokenizer, cache_dir: Path,
                      max_new_tokens: int, batch_size: int = 16) -> DomainData:
    """``data`` with every example of ``data.self_answer_domains`` answered by ``model``; unchanged
    when there are none."""
    if not data.self_answer_domains:
        return data
    train, evals = dict(data.train), dict(data.eval)
    for domain in data.self_answer_domains:
        prompts = sorted({ex.messages[-1][1] for ex in train[domain] + evals[domain]})
        answers = cached_answers(model, tokenizer, prompts, Path(cache_dir), max_new_tokens, batch_size)
        train[domain] = [_answered(ex, answers) for ex in train[domain]]
        evals[domain] = [_answered(ex, answers) for ex in evals[domain]]
    return dataclasses.replace(data, train=train, eval=evals, self_answer_domains=())


def _answered(example: SFTExample, answers: dict[str, str]) -> SFTExample:
    return dataclasses.replace(example, response=answers[example.messages[-1][1]])


def cache_key(model: torch.nn.Module, tokenizer, prompts: list[str], max_new_tokens: int) -> str:
    h = hashlib.sha256()
    weights = model.get_input_embeddings().weight.detach().to("cpu", torch.float32).contiguous()
    h.update(weights.numpy().tobytes())
    h.update(json.dumps([len(tokenizer), prompts, max_new_tokens, REPETITION_PENALTY, "greedy"]).encode())
    return h.hexdigest()[:20]


def cached_answers(model: torch.nn.Module, tokenizer, prompts: list[str], cache_dir: Path,
                   max_new_tokens: int, batch_size: int) -> dict[str, str]:
    path = cache_dir / "self_answers" / f"{cache_key(model, tokenizer, prompts, max_new_tokens)}.json"
    if path.is_file():
        logger.info("Self-answers: reusing %s", path)
        return json.loads(path.read_text())
    logger.info("Self-answers: generating %d answers (max %d new tokens), cached at %s",
                len(prompts), max_new_tokens, path)
    answers = dict(zip(prompts, generate_answers(model, tokenizer, prompts, max_new_tokens, batch_size)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # several ranks may write the same file
    tmp.write_text(json.dumps(answers, indent=1))
    os.replace(tmp, path)
    return answers


@torch.no_grad()
def generate_answers(model: torch.nn.Module, tokenizer, prompts: list[str], max_new_tokens: int,
                     batch_size: int) -> list[str]:
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers: list[str] = []
    try:
        for first in range(0, len(prompts), batch_size):
            encoded = [encode_prompt(tokenizer, (("user", p),)) for p in prompts[first:first + batch_size]]
            width = max(len(ids) for ids in encoded)
            input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded], device=device)
            attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded], device=device)
            output = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
                                    max_new_tokens=max_new_tokens, repetition_penalty=REPETITION_PENALTY,
                                    pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
            # Kept verbatim (no strip): the text is the model's own continuation, whitespace included.
            answers.extend(tokenizer.batch_decode(output[:, width:], skip_special_tokens=True))
            logger.info("Self-answers: %d/%d", len(answers), len(prompts))
    finally:
        model.train(was_training)
    return answers
