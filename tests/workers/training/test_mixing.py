"""MixUp / CutMix against torchvision v2, and the statistics of the generator-driven sampling."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from workers.training.beta import sample_beta
from workers.training.mixing import (
    BatchMixer,
    ClassMembers,
    MixParams,
    _cutmix_box,
    apply_balanced_mix,
    apply_mix,
    remix_target_lam,
    sample_balanced_params,
    sample_mix_params,
)


def _batch(seed: int = 0, *, b: int = 8, c: int = 3, h: int = 12, w: int = 10, k: int = 4):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=g), torch.randint(k, (b,), generator=g)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("alpha", [0.4, 1.0, 3.0])
def test_sample_beta_mean_and_variance(alpha):
    draws = sample_beta(alpha, size=20_000, generator=_gen(1))
    assert draws.dtype == torch.float64 and draws.shape == (20_000,)
    assert bool(((draws >= 0) & (draws <= 1)).all())
    var = 1.0 / (4.0 * (2.0 * alpha + 1.0))  # Beta(α, α): mean 1/2, variance 1 / (4(2α + 1))
    tolerance = 5 * math.sqrt(var / 20_000)
    assert abs(float(draws.mean()) - 0.5) < tolerance
    # the variance estimate's standard error is below sqrt(E[(x - 1/2)^4] / n) <= sqrt(1/16 / n)
    assert abs(float(draws.var()) - var) < 5 * math.sqrt(1 / 16 / 20_000)


def test_sample_beta_uniform_quantiles_and_tiny_alpha():
    draws = sample_beta(1.0, size=20_000, generator=_gen(2))
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert abs(float((draws < q).double().mean()) - q) < 5 * math.sqrt(q * (1 - q) / 20_000)
    tiny = sample_beta(0.001, size=1000, generator=_gen(3))
    assert bool(torch.isfinite(tiny).all()) and bool(((tiny >= 0) & (tiny <= 1)).all())
    # Beta(α, α) for α → 0 puts its mass at the two ends
    assert float(((tiny < 0.01) | (tiny > 0.99)).double().mean()) > 0.95
    with pytest.raises(ValueError, match="alpha"):
        sample_beta(0.0, size=1, generator=_gen(0))


def test_sample_beta_is_deterministic_in_the_generator():
    torch.testing.assert_close(
        sample_beta(0.4, size=50, generator=_gen(5)), sample_beta(0.4, size=50, generator=_gen(5))
    )


@pytest.mark.parametrize("mode", ["mixup", "cutmix"])
def test_a_batch_lambda_is_the_beta_draw_the_sampler_tests_check(mode):
    params = sample_mix_params(
        batch_size=8, height=16, width=16, mode=mode, alpha=0.4, cutmix_alpha=0.4, prob=1.0, switch_prob=0.5,
        generator=_gen(7),
    )  # fmt: skip
    replay = _gen(7)
    torch.rand(4, dtype=torch.float64, generator=replay)  # the batch's prob, switch and box-centre uniforms
    lam = float(sample_beta(0.4, size=1, generator=replay)[0])
    if mode == "mixup":
        assert params.lam == lam
    else:  # CutMix's λ is the drawn one corrected to the pasted box's area
        assert params.box is not None
        assert params.lam == _cutmix_box(lam, height=16, width=16, centre=_centre(7))[1]


def _centre(seed: int) -> tuple[float, float]:
    _, _, u_x, u_y = torch.rand(4, dtype=torch.float64, generator=_gen(seed)).tolist()
    return u_x, u_y


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.77, 1.0])
def test_mixup_matches_torchvision(lam):
    images, labels = _batch(1)
    tv = v2.MixUp(num_classes=4)
    tv_params = {"lam": lam, "labels": labels, "batch_size": 8}
    ours = MixParams(mode="mixup", lam=lam, perm=torch.arange(8).roll(1))
    out_images, out_targets = apply_mix(images, F.one_hot(labels, 4).float(), ours)
    torch.testing.assert_close(out_images, tv.transform(images, tv_params), rtol=0, atol=0)
    torch.testing.assert_close(out_targets, tv.transform(labels, tv_params), rtol=0, atol=0)


class _FixedBeta:
    def __init__(self, lam: float) -> None:
        self.lam = lam

    def sample(self, shape=()):
        return torch.tensor(self.lam)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("raw_lam", [0.0, 0.35, 0.9])
def test_cutmix_box_and_output_match_torchvision(seed, raw_lam):
    images, labels = _batch(seed, h=13, w=9)
    before = images.clone()
    tv = v2.CutMix(num_classes=4)
    tv._dist = _FixedBeta(raw_lam)  # pin torchvision's λ; its box centre comes from the global RNG
    torch.manual_seed(seed)
    tv_params = tv.make_params([images])
    torch.manual_seed(seed)  # the same two draws torchvision makes for the box centre
    r_x, r_y = int(torch.randint(9, size=(1,))), int(torch.randint(13, size=(1,)))
    box, lam = _cutmix_box(raw_lam, height=13, width=9, centre=((r_x + 0.5) / 9, (r_y + 0.5) / 13))
    assert box == tv_params["box"] and lam == tv_params["lam_adjusted"]
    ours = MixParams(mode="cutmix", lam=lam, perm=torch.arange(8).roll(1), box=box)
    out_images, out_targets = apply_mix(images, F.one_hot(labels, 4).float(), ours)
    tv_params.update(labels=labels, batch_size=8)
    torch.testing.assert_close(out_images, tv.transform(images, tv_params), rtol=0, atol=0)
    torch.testing.assert_close(out_targets, tv.transform(labels, tv_params), rtol=0, atol=0)
    torch.testing.assert_close(images, before, rtol=0, atol=0)


def test_cutmix_lambda_is_the_pasted_area_fraction():
    b, h, w = 16, 20, 14
    images = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 2, h, w).contiguous()
    targets = F.one_hot(torch.arange(b) % 4, 4).float()
    g = _gen(7)
    for _ in range(50):
        params = sample_mix_params(
            batch_size=b,
            height=h,
            width=w,
            mode="cutmix",
            alpha=1.0,
            cutmix_alpha=1.0,
            prob=1.0,
            switch_prob=0.5,
            generator=g,
        )
        out, _ = apply_mix(images, targets, params)
        from_other = (out != images).double().mean(dim=(1, 2, 3))
        moved = params.perm != torch.arange(b)
        x1, y1, x2, y2 = params.box
        assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h
        torch.testing.assert_close(from_other[moved], torch.full_like(from_other[moved], 1 - params.lam))


@pytest.mark.parametrize("mode", ["none", "mixup", "cutmix", "mixup_cutmix"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_batch_mixer_rows_sum_to_one(mode, smoothing):
    images, labels = _batch(2, b=32)
    mixer = BatchMixer(mode=mode, num_classes=4, alpha=0.4, label_smoothing=smoothing)
    g = _gen(3)
    for _ in range(10):
        out, targets = mixer(images, labels, generator=g)
        assert out.shape == images.shape and targets.shape == (32, 4) and targets.dtype == torch.float32
        torch.testing.assert_close(targets.sum(1), torch.ones(32))
        assert bool((targets >= 0).all())
    if mode == "none":
        assert out is images
        expected = F.one_hot(labels, 4).float() * (1 - smoothing) + smoothing / 4
        torch.testing.assert_close(targets, expected)


def test_batch_mixer_preserves_channels_last_and_is_reproducible():
    images, labels = _batch(4, b=16)
    cl = images.contiguous(memory_format=torch.channels_last)
    mixer = BatchMixer(mode="mixup_cutmix", num_classes=4)
    for seed in range(4):
        a = mixer(images, labels, generator=_gen(seed))
        b = mixer(cl, labels, generator=_gen(seed))
        torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
        torch.testing.assert_close(a[1], b[1], rtol=0, atol=0)


def _params(mode, *, prob=1.0, switch_prob=0.5, g):
    return sample_mix_params(
        batch_size=4,
        height=8,
        width=8,
        mode=mode,
        alpha=1.0,
        cutmix_alpha=1.0,
        prob=prob,
        switch_prob=switch_prob,
        generator=g,
    )


def test_prob_zero_never_mixes_and_prob_sets_the_frequency():
    g = _gen(8)
    assert all(_params("mixup_cutmix", prob=0.0, g=g) is None for _ in range(300))
    assert all(_params(m, prob=1.0, g=g) is not None for m in ("mixup", "cutmix") for _ in range(100))
    n, p = 2000, 0.3
    mixed = sum(_params("mixup", prob=p, g=g) is not None for _ in range(n))
    assert abs(mixed - n * p) < 5 * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("switch_prob", [0.0, 0.3, 1.0])
def test_mixup_cutmix_switches_with_switch_prob(switch_prob):
    g, n = _gen(9), 2000
    modes = [_params("mixup_cutmix", switch_prob=switch_prob, g=g).mode for _ in range(n)]
    cutmix = modes.count("cutmix")
    assert cutmix + modes.count("mixup") == n
    assert abs(cutmix - n * switch_prob) <= 5 * math.sqrt(n * switch_prob * (1 - switch_prob))


def test_validation_errors():
    with pytest.raises(ValueError, match="'manifold'.*none, mixup, cutmix, mixup_cutmix"):
        BatchMixer(mode="manifold", num_classes=3)
    with pytest.raises(ValueError, match="alpha"):
        BatchMixer(mode="mixup", num_classes=3, alpha=0.0)
    with pytest.raises(ValueError, match="prob"):
        BatchMixer(mode="mixup", num_classes=3, prob=1.5)
    with pytest.raises(ValueError, match="num_classes"):
        BatchMixer(mode="mixup", num_classes=1)
    images, labels = _batch(0)
    with pytest.raises(ValueError, match="permutation of 4"):
        apply_mix(images, F.one_hot(labels, 4).float(), MixParams(mode="mixup", lam=0.5, perm=torch.arange(4)))


# --- minority-aware mixing: Balanced-MixUp and ReMix, against hand-computed cases ---

REMIX_COUNTS = torch.tensor([90, 10, 30])
REMIX_LABELS = torch.tensor([0, 1, 0, 2])
REMIX_PERM = torch.tensor([1, 0, 2, 0])  # partners' classes: 1, 0, 0, 0


@pytest.mark.parametrize(
    ("lam", "expected"),
    [
        # row 0: 90 vs 10 (ratio 9 ≥ κ) and λ < τ → the label goes to the minority partner (weight 0)
        # row 1: 10 vs 90 (ratio 1/9) but 1-λ = 0.7 ≥ τ → plain λ; rows 2 and 3 likewise plain λ
        (0.3, [0.0, 0.3, 0.3, 0.3]),
        # row 1: 1-λ = 0.2 < τ → its own (minority) label keeps everything; row 3: ratio 30/90 = 1/κ too
        (0.8, [0.8, 1.0, 0.8, 1.0]),
        (0.5, [0.5, 0.5, 0.5, 0.5]),  # neither λ < τ nor 1-λ < τ
    ],
)
def test_remix_label_weights_by_hand(lam, expected):
    weights = remix_target_lam(REMIX_LABELS, REMIX_PERM, lam=lam, counts=REMIX_COUNTS, kappa=3.0, tau=0.5)
    assert weights.dtype == torch.float32
    torch.testing.assert_close(weights, torch.tensor(expected))


def test_remix_mixer_mixes_images_as_mixup_and_labels_by_the_rule():
    images, _ = _batch(3, b=4, k=3)
    mixer = BatchMixer(
        mode="remix", num_classes=3, alpha=1.0, train_labels=torch.tensor([0] * 90 + [1] * 10 + [2] * 30)
    )
    out, targets = mixer(images, REMIX_LABELS, generator=_gen(11))
    params = sample_mix_params(
        batch_size=4,
        height=12,
        width=10,
        mode="remix",
        alpha=1.0,
        cutmix_alpha=1.0,
        prob=1.0,
        switch_prob=0.5,
        generator=_gen(11),
    )
    lam, perm = params.lam, params.perm
    torch.testing.assert_close(out, lam * images + (1 - lam) * images[perm])
    w = remix_target_lam(REMIX_LABELS, perm, lam=lam, counts=REMIX_COUNTS, kappa=3.0, tau=0.5)
    one_hot = F.one_hot(REMIX_LABELS, 3).float()
    torch.testing.assert_close(targets, w[:, None] * one_hot + (1 - w[:, None]) * one_hot[perm])
    torch.testing.assert_close(targets.sum(1), torch.ones(4))


def test_balanced_mix_by_hand():
    images = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 1.0]]]])
    partner = torch.tensor([[[[0.0, 0.0]]], [[[1.0, 1.0]]]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    partner_targets = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    out, mixed = apply_balanced_mix(images, targets, partner, partner_targets, lam=0.25)
    torch.testing.assert_close(out, torch.tensor([[[[0.75, 0.0]]], [[[0.25, 1.0]]]]))
    torch.testing.assert_close(mixed, torch.tensor([[0.75, 0.25], [1.0, 0.0]]))
    assert images[0, 0, 0, 0] == 1.0  # inputs untouched


def test_class_members_draw_each_class_equally_often_and_only_its_members():
    labels = torch.tensor([0] * 97 + [1] * 3 + [2] * 20)
    members = ClassMembers(labels)
    drawn = members.draw(30_000, generator=_gen(4))
    frequencies = torch.bincount(labels[drawn], minlength=3).double() / 30_000
    assert float((frequencies - 1 / 3).abs().max()) < 5 * math.sqrt(2 / 9 / 30_000)
    rare = drawn[labels[drawn] == 1]
    assert set(rare.tolist()) == {97, 98, 99}  # every member of the rare class, nothing else
    torch.testing.assert_close(drawn[:50], ClassMembers(labels).draw(30_000, generator=_gen(4))[:50])


def test_balanced_lambda_is_beta_alpha_one():
    members = ClassMembers(torch.tensor([0, 0, 1]))
    g = _gen(6)
    lams = [
        sample_balanced_params(batch_size=2, members=members, alpha=0.4, prob=1.0, generator=g).lam for _ in range(4000)
    ]
    # Beta(α, 1): CDF x^α, mean α / (α + 1)
    lams_t = torch.tensor(lams, dtype=torch.float64)
    assert abs(float(lams_t.mean()) - 0.4 / 1.4) < 5 * math.sqrt(0.4 / (1.4**2 * 2.4) / 4000)
    assert abs(float((lams_t < 0.2).double().mean()) - 0.2**0.4) < 5 * math.sqrt(0.5 * 0.5 / 4000)


def test_balanced_mixer_mixes_with_the_fetched_class_balanced_batch():
    g = torch.Generator().manual_seed(0)
    pool = torch.rand(20, 1, 4, 4, generator=g)
    pool_labels = torch.tensor([0] * 17 + [1] * 3)
    mixer = BatchMixer(mode="balanced_mixup", num_classes=2, alpha=0.5, train_labels=pool_labels)
    fetched = []

    def fetch(indices):
        fetched.append(indices)
        return pool[indices], pool_labels[indices]

    images, labels = pool[:6], pool_labels[:6]
    out, targets = mixer(images, labels, generator=_gen(8), fetch=fetch)
    params = sample_balanced_params(
        batch_size=6, members=ClassMembers(pool_labels), alpha=0.5, prob=1.0, generator=_gen(8)
    )
    assert fetched[0].tolist() == params.perm.tolist()
    lam = params.lam
    torch.testing.assert_close(out, (1 - lam) * images + lam * pool[params.perm])
    expected = (1 - lam) * F.one_hot(labels, 2).float() + lam * F.one_hot(pool_labels[params.perm], 2).float()
    torch.testing.assert_close(targets, expected)
    with pytest.raises(ValueError, match="needs fetch="):
        mixer(images, labels, generator=_gen(8))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "remix"}, "needs the train labels"),
        ({"mode": "balanced_mixup"}, "needs the train labels"),
        ({"mode": "remix", "train_labels": torch.tensor([0, 1]), "kappa": 0.5}, "kappa must be"),
        ({"mode": "remix", "train_labels": torch.tensor([0, 1]), "tau": 1.5}, "tau must be"),
        ({"mode": "remix", "train_labels": torch.tensor([0, 5])}, "beyond 2 classes"),
    ],
)
def test_minority_mixer_arguments_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BatchMixer(num_classes=2, **kwargs)
