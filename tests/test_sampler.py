"""Behavioural tests of the live-weight domain sampler and its checkpoint state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from versatune_mlops.errors import ConfigError, DataError
from versatune_mlops.mixing.sampler import DomainSampler

SIZES = [50, 30, 200, 7]


def test_realised_share_converges_to_weights():
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    sampler = DomainSampler(SIZES, weights, seed=0)
    np.testing.assert_array_equal(sampler.realised_share(), np.zeros(4))
    for _ in range(200):
        sampler.sample(100)
    # 20,000 i.i.d. draws: a share's binomial std is at most sqrt(0.25 / 20000) ~= 0.0035, so a 0.01
    # tolerance is ~3 std wide (and the seed is fixed, so the test is deterministic anyway).
    np.testing.assert_allclose(sampler.realised_share(), weights, atol=0.01)
    assert sampler.counts.sum() == 20_000
    assert sampler.epochs_completed == pytest.approx(20_000 / sum(SIZES))


def test_same_seed_gives_same_stream_and_other_seed_differs():
    a = DomainSampler(SIZES, [0.25] * 4, seed=42)
    b = DomainSampler(SIZES, [0.25] * 4, seed=42)
    c = DomainSampler(SIZES, [0.25] * 4, seed=43)
    draws_a = [a.sample(16) for _ in range(20)]
    assert draws_a == [b.sample(16) for _ in range(20)]
    assert draws_a != [c.sample(16) for _ in range(20)]


@pytest.mark.parametrize("through_json", [False, True])
def test_restoring_state_mid_stream_continues_identically(through_json):
    reference = DomainSampler(SIZES, [0.4, 0.3, 0.2, 0.1], seed=7)
    interrupted = DomainSampler(SIZES, [0.4, 0.3, 0.2, 0.1], seed=7)
    for _ in range(13):  # past one epoch of the small domains, so cursors and reshuffles matter
        reference.sample(11)
        interrupted.sample(11)
    reference.set_weights([0.1, 0.1, 0.1, 0.7])
    interrupted.set_weights([0.1, 0.1, 0.1, 0.7])
    state = interrupted.state_dict()
    if through_json:
        state = json.loads(json.dumps(state))
    # A fresh object built with different weights and seed must take everything from the state.
    resumed = DomainSampler(SIZES, [1.0, 0.0, 0.0, 0.0], seed=999)
    resumed.load_state_dict(state)
    expected = [reference.sample(11) for _ in range(30)]
    assert [resumed.sample(11) for _ in range(30)] == expected
    np.testing.assert_array_equal(resumed.counts, reference.counts)
    np.testing.assert_array_equal(resumed.realised_share(), reference.realised_share())


def test_weight_change_mid_stream_is_followed():
    sampler = DomainSampler(SIZES, [0.7, 0.1, 0.1, 0.1], seed=3)
    sampler.sample(5000)
    before = sampler.counts.copy()
    sampler.set_weights([0.0, 0.0, 0.2, 0.8])
    sampler.sample(5000)
    after = sampler.counts - before
    assert after[0] == after[1] == 0
    # 5,000 draws: std of a share <= sqrt(0.25 / 5000) ~= 0.007; 0.03 is > 4 std.
    assert after[3] / 5000 == pytest.approx(0.8, abs=0.03)


def test_zero_weight_domain_is_never_drawn():
    sampler = DomainSampler(SIZES, [0.0, 0.5, 0.0, 0.5], seed=11)
    drawn = {d for d, _ in sampler.sample(20_000)}
    assert drawn == {1, 3}


def test_within_domain_no_repeats_until_exhausted_then_reshuffled():
    sampler = DomainSampler([5, 9], [0.0, 1.0], seed=5)
    draws = [i for _, i in sampler.sample(9 * 4)]
    epochs = [draws[k * 9:(k + 1) * 9] for k in range(4)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(9))  # every example exactly once per epoch
    assert len({tuple(e) for e in epochs}) > 1  # a new shuffle each epoch
    assert sampler.epochs_completed == pytest.approx(36 / 14)


def test_examples_are_valid_indices_of_their_domain():
    sampler = DomainSampler(SIZES, [0.25] * 4, seed=2)
    for d, i in sampler.sample(3000):
        assert 0 <= i < SIZES[d]


def test_empty_domain_is_rejected():
    with pytest.raises(ConfigError) as info:
        DomainSampler([10, 0, 5], [0.3, 0.3, 0.4], seed=0)
    assert "index 1" in str(info.value) and "at least one" in str(info.value)


@pytest.mark.parametrize(
    "weights, fragment",
    [([0.5, -0.5, 1.0], "negative"), ([0.5, np.nan, 0.5], "NaN"), ([0, 0, 0], "sum to zero"), ([0.5, 0.5], "3 domains")],
)
def test_bad_weights_are_rejected(weights, fragment):
    with pytest.raises(ConfigError, match=fragment):
        DomainSampler([3, 4, 5], weights, seed=0)
    sampler = DomainSampler([3, 4, 5], [1, 1, 1], seed=0)
    with pytest.raises(ConfigError, match=fragment):
        sampler.set_weights(weights)


def test_state_from_other_data_is_rejected():
    state = DomainSampler([3, 4], [0.5, 0.5], seed=0).state_dict()
    with pytest.raises(DataError, match="same data"):
        DomainSampler([3, 5], [0.5, 0.5], seed=0).load_state_dict(state)
