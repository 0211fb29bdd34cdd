"""Multiple-choice scoring with a shared prompt cache gives the numbers of scoring each sequence in full."""

import math

import pytest
import torch

from versatune_mlops.config import load_config
from versatune_mlops.data.sources import load_domain_data
from versatune_mlops.training.evaluation import choice_mean_losses, domain_accuracy, per_example_loss
from versatune_mlops.data.formatting import collate, encode_choice
from versatune_mlops.training.setup import prepare_inputs


@pytest.fixture(scope="module")
def tiny_inputs():
    config = load_config("tiny", overrides={"data.max_examples_per_domain": 12})
    inputs = prepare_inputs(config, load_domain_data(config.data))
    torch.manual_seed(1)
    with torch.no_grad():  # a random head so the choices get clearly different losses
        for p in inputs.loaded.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return inputs


def _full_scores(model, tokenizer, encoded):
    batch = collate(encoded, tokenizer.pad_token_id)
    loss_sum, count = per_example_loss(model, batch)
    return torch.where(count > 0, loss_sum / count.clamp(min=1), math.nan).tolist()


@pytest.mark.parametrize("max_length", [256, 40])
def test_shared_prompt_cache_scores_like_full_sequences(tiny_inputs, max_length):
    model, tokenizer = tiny_inputs.loaded.model.eval(), tiny_inputs.loaded.tokenizer
    items = [item for items in tiny_inputs.data.eval_mc.values() for item in items[:2]]
    scored = 0
    for item in items:
        encoded = [encode_choice(tokenizer, item.messages, c, max_length) for c in item.choices]
        cached = choice_mean_losses(model, encoded, tokenizer.pad_token_id, False, torch.device("cpu"))
        full = _full_scores(model, tokenizer, encoded)
        # A prompt that fills max_length leaves no reply token: NaN on both paths.
        assert cached == pytest.approx(full, abs=1e-4, nan_ok=True)
        scored += len({round(x, 6) for x in full if not math.isnan(x)}) > 1
    if max_length == 256:
        assert scored >= 6, "most items fit and their choices get different losses, so the comparison means something"
    else:
        assert scored == 0, "max_length=40 cuts every prompt"


def test_accuracy_is_the_share_of_items_whose_answer_has_the_lowest_loss(tiny_inputs):
    model, tokenizer = tiny_inputs.loaded.model.eval(), tiny_inputs.loaded.tokenizer
    accuracy = domain_accuracy(model, tokenizer, tiny_inputs.data.eval_mc, 256)
    for domain, items in tiny_inputs.data.eval_mc.items():
        hits = []
        for item in items:
            scores = _full_scores(model, tokenizer, [encode_choice(tokenizer, item.messages, c, 256)
                                                     for c in item.choices])
            if all(math.isfinite(s) for s in scores):
                hits.append(min(range(len(scores)), key=scores.__getitem__) == item.answer)
        if hits:
            assert accuracy[domain] == pytest.approx(sum(hits) / len(hits))
