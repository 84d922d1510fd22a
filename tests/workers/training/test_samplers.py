"""Epoch samplers: determinism in (seed, epoch), exact and statistical class frequencies."""

from __future__ import annotations

import math

import pytest
import torch

from workers.training.samplers import SAMPLER_KINDS, epoch_seed, make_sampler

COUNTS = [500, 60, 7, 133]
LABELS = torch.repeat_interleave(torch.arange(4), torch.tensor(COUNTS))[
    torch.randperm(700, generator=torch.Generator().manual_seed(0))
]


@pytest.mark.parametrize("kind", SAMPLER_KINDS)
def test_deterministic_in_seed_and_epoch_and_in_range(kind):
    sampler = make_sampler(kind, labels=LABELS, seed=3, device="cpu")
    again = make_sampler(kind, labels=LABELS, seed=3, device="cpu")
    first = sampler.indices(1)
    assert first.dtype == torch.int64 and first.device.type == "cpu"
    assert first.shape == (sampler.epoch_length,)
    assert int(first.min()) >= 0 and int(first.max()) < LABELS.numel()
    assert torch.equal(first, again.indices(1))
    assert torch.equal(sampler.indices(5), again.indices(5))
    assert not torch.equal(first, sampler.indices(2))
    assert not torch.equal(first, make_sampler(kind, labels=LABELS, seed=4, device="cpu").indices(1))


def test_epoch_lengths():
    n, k = 700, 4
    expected = {"random": n, "weighted": n, "sqrt": n, "oversample": k * max(COUNTS), "undersample": k * min(COUNTS)}
    for kind, length in expected.items():
        assert make_sampler(kind, labels=LABELS, seed=0, device="cpu").epoch_length == length


def test_epoch_seed_matches_the_documented_derivation():
    from workers.training.seeding import derive_seed

    assert epoch_seed(7, 3) == derive_seed(7, "sampler", 3)
    assert epoch_seed(7, 3) != epoch_seed(7, 4) and epoch_seed(7, 3) != epoch_seed(8, 3)


def test_random_is_a_permutation():
    indices = make_sampler("random", labels=LABELS, seed=1, device="cpu").indices(1)
    assert torch.equal(torch.sort(indices).values, torch.arange(700))


@pytest.mark.parametrize(("kind", "power"), [("weighted", 1.0), ("sqrt", 0.5)])
def test_class_frequencies_are_within_binomial_bounds(kind, power):
    sampler = make_sampler(kind, labels=LABELS, seed=2, device="cpu")
    epochs = 100
    drawn = torch.cat([sampler.indices(e) for e in range(1, epochs + 1)])
    total = drawn.numel()
    mass = torch.tensor(COUNTS, dtype=torch.float64) ** (1 - power)
    probs = mass / mass.sum()
    class_counts = torch.bincount(LABELS[drawn], minlength=4).double()
    for c in range(4):
        p = float(probs[c])
        assert abs(float(class_counts[c]) - total * p) < 5 * math.sqrt(total * p * (1 - p)), (c, class_counts)
    # within the rarest class every sample is equally likely
    per_sample = torch.bincount(drawn, minlength=700).double()[LABELS == 2]
    p = 1 / 7
    per_class = float(class_counts[2])
    assert (per_sample - per_class * p).abs().max() < 5 * math.sqrt(per_class * p * (1 - p))


def test_oversample_exact_counts():
    sampler = make_sampler("oversample", labels=LABELS, seed=5, device="cpu")
    for epoch in (1, 2):
        indices = sampler.indices(epoch)
        assert torch.bincount(LABELS[indices], minlength=4).tolist() == [500] * 4
        times = torch.bincount(indices, minlength=700)
        for c, n in enumerate(COUNTS):
            seen = times[LABELS == c]
            assert int(seen.min()) >= 500 // n and int(seen.max()) <= 500 // n + (500 % n > 0)


def test_undersample_exact_counts_fresh_subsets():
    sampler = make_sampler("undersample", labels=LABELS, seed=6, device="cpu")
    subsets = []
    for epoch in (1, 2):
        indices = sampler.indices(epoch)
        assert torch.bincount(LABELS[indices], minlength=4).tolist() == [7] * 4
        assert indices.unique().numel() == indices.numel()
        subsets.append(set(indices[LABELS[indices] == 0].tolist()))
    assert subsets[0] != subsets[1]
    # the rarest class is always taken whole
    assert set(sampler.indices(3)[LABELS[sampler.indices(3)] == 2].tolist()) == set(
        torch.nonzero(LABELS == 2).flatten().tolist()
    )


def test_validation():
    with pytest.raises(ValueError, match="'balanced'.*random, weighted, sqrt, oversample, undersample"):
        make_sampler("balanced", labels=LABELS, seed=0, device="cpu")
    gap = torch.tensor([0, 0, 2, 2])
    with pytest.raises(ValueError, match=r"classes \[1\] have no samples"):
        make_sampler("weighted", labels=gap, seed=0, device="cpu")
    assert make_sampler("random", labels=gap, seed=0, device="cpu").epoch_length == 4
    with pytest.raises(ValueError, match="empty"):
        make_sampler("random", labels=torch.zeros(0, dtype=torch.int64), seed=0, device="cpu")
    with pytest.raises(TypeError, match="integer"):
        make_sampler("random", labels=torch.zeros(3), seed=0, device="cpu")
    with pytest.raises(ValueError, match="non-negative"):
        make_sampler("random", labels=torch.tensor([0, -1]), seed=0, device="cpu")
