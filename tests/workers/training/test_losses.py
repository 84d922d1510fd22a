"""Losses against oracles: F.cross_entropy, torchvision's sigmoid focal loss, sklearn class weights."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight
from torchvision.ops import sigmoid_focal_loss as tv_sigmoid_focal_loss

from workers.training.losses import (
    Criterion,
    binary_logits_to_sigmoid,
    class_weights,
    focal_loss,
    resolve_alpha,
    sigmoid_focal_loss,
    soft_cross_entropy,
)


def _data(seed: int, *, b: int = 16, k: int = 5, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(b, k, generator=g) * 3).to(dtype)
    labels = torch.randint(k, (b,), generator=g)
    soft = torch.softmax(torch.randn(b, k, generator=g), dim=1).to(dtype)
    weight = (torch.rand(k, generator=g) + 0.2).to(dtype)
    return logits, labels, soft, weight


def _naive_focal(logits, y, gamma, alpha=None, weight=None):
    p = torch.softmax(logits.double(), dim=1)
    per = -y.double() * (1 - p) ** gamma * torch.log(p)
    if alpha is not None:
        per = per * alpha
    if weight is not None:
        per = per * weight.double()
    return per.sum(1)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.35])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_soft_cross_entropy_matches_torch_for_hard_labels(reduction, smoothing, weighted, seed):
    logits, labels, _, weight = _data(seed)
    weight = weight if weighted else None
    ours = soft_cross_entropy(logits, labels, weight=weight, label_smoothing=smoothing, reduction=reduction)
    ref = F.cross_entropy(logits, labels, weight=weight, label_smoothing=smoothing, reduction=reduction)
    torch.testing.assert_close(ours, ref)
    one_hot = F.one_hot(labels, 5).float()
    dense = soft_cross_entropy(logits, one_hot, weight=weight, label_smoothing=smoothing, reduction=reduction)
    torch.testing.assert_close(dense, ref)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_soft_cross_entropy_matches_torch_for_probabilities(reduction):
    logits, _, soft, _ = _data(3)
    ref = F.cross_entropy(logits, soft, reduction=reduction)
    torch.testing.assert_close(soft_cross_entropy(logits, soft, reduction=reduction), ref)


def test_weighted_mean_for_soft_targets_divides_by_target_weight():
    logits, _, soft, weight = _data(4)
    per_sample = soft_cross_entropy(logits, soft, weight=weight, reduction="none")
    expected = per_sample.sum() / (soft * weight).sum()
    torch.testing.assert_close(soft_cross_entropy(logits, soft, weight=weight), expected)


@pytest.mark.parametrize("alpha", [None, 1.0])
def test_focal_gamma_zero_is_cross_entropy_values_and_gradients(alpha):
    logits, labels, soft, weight = _data(5)
    for target in (labels, soft):
        a = logits.clone().requires_grad_()
        b = logits.clone().requires_grad_()
        fl = focal_loss(a, target, gamma=0.0, alpha=alpha, weight=weight, label_smoothing=0.1)
        ce = soft_cross_entropy(b, target, weight=weight, label_smoothing=0.1)
        fl.backward()
        ce.backward()
        torch.testing.assert_close(fl, ce, rtol=0, atol=0)
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
def test_focal_matches_naive_formula_with_alpha_and_weight(gamma):
    logits, labels, soft, weight = _data(6, dtype=torch.float64)
    alpha = torch.tensor([0.1, 0.2, 0.3, 0.25, 0.9], dtype=torch.float64)
    for a in (None, 0.25, alpha):
        ours = focal_loss(logits, soft, gamma=gamma, alpha=a, weight=weight, reduction="none")
        ref = _naive_focal(logits, soft, gamma, alpha=a, weight=weight)
        torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-6)
    mean = focal_loss(logits, labels, gamma=gamma, weight=weight)
    ref = _naive_focal(logits, F.one_hot(labels, 5), gamma, weight=weight).sum() / weight[labels].sum()
    torch.testing.assert_close(mean.double(), ref, rtol=1e-5, atol=1e-6)


def test_focal_is_linear_in_mixed_targets():
    logits, labels, _, _ = _data(7)
    other = labels.roll(1)
    lam = 0.3
    mixed = lam * F.one_hot(labels, 5).float() + (1 - lam) * F.one_hot(other, 5).float()
    ours = focal_loss(logits, mixed, gamma=2.0, reduction="none")
    expected = lam * focal_loss(logits, labels, reduction="none") + (1 - lam) * focal_loss(
        logits, other, reduction="none"
    )
    torch.testing.assert_close(ours, expected)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_focal_gradcheck_float64(gamma, reduction):
    logits, labels, soft, weight = _data(8, b=4, k=3, dtype=torch.float64)
    logits.requires_grad_()
    alpha = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    for target in (soft, labels):
        focal = functools.partial(
            focal_loss, target=target, gamma=gamma, alpha=alpha, weight=weight, reduction=reduction
        )
        assert torch.autograd.gradcheck(focal, (logits,))
    assert torch.autograd.gradcheck(lambda x: soft_cross_entropy(x, soft, label_smoothing=0.2), (logits,))
    assert torch.autograd.gradcheck(
        lambda x: sigmoid_focal_loss(x[:, 0], soft[:, 0], gamma=gamma, reduction=reduction), (logits,)
    )


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("autocast", [False, True])
def test_focal_is_finite_at_extreme_logits(gamma, autocast):
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, 0.0]], requires_grad=True)
    target = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        # under autocast a network hands over bfloat16 logits
        x = logits.to(torch.bfloat16) if autocast else logits
        loss = focal_loss(x, target, gamma=gamma, alpha=0.25, label_smoothing=0.1)
    loss.backward()
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_sigmoid_focal_is_finite_at_extreme_logits(gamma):
    x = torch.tensor([1e4, -1e4, 30.0, -30.0, 0.0], requires_grad=True)
    t = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
    loss = sigmoid_focal_loss(x, t, gamma=gamma, reduction="sum")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.0, 1.0, -1])
@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0, 3.5])
def test_sigmoid_focal_matches_torchvision(reduction, alpha, gamma):
    g = torch.Generator().manual_seed(int(gamma * 10) + 3)
    for _ in range(5):
        x = torch.randn(64, generator=g) * 4
        t = (torch.rand(64, generator=g) > 0.7).float()
        ours = sigmoid_focal_loss(x, t, gamma=gamma, alpha=alpha, reduction=reduction)
        ref = tv_sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma, reduction=reduction)
        torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_binary_logits_to_sigmoid_equals_softmax():
    logits, _, _, _ = _data(9, k=2)
    torch.testing.assert_close(torch.sigmoid(binary_logits_to_sigmoid(logits)), torch.softmax(logits, 1)[:, 1])
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        binary_logits_to_sigmoid(torch.zeros(4, 3))


def test_reduction_is_validated():
    logits, labels, _, _ = _data(10)
    for fn in (soft_cross_entropy, focal_loss):
        with pytest.raises(ValueError, match="'avg'.*none, mean, sum"):
            fn(logits, labels, reduction="avg")
    with pytest.raises(ValueError, match="'avg'"):
        sigmoid_focal_loss(logits[:, 0], labels.float(), reduction="avg")
    with pytest.raises(ValueError, match="alpha"):
        sigmoid_focal_loss(logits[:, 0], labels.float(), alpha=2.0)
    with pytest.raises(ValueError, match="shape"):
        soft_cross_entropy(logits, torch.rand(16, 4))


@pytest.mark.parametrize("counts", [[10, 90], [5, 1, 300, 17], [1000, 1000, 1]])
def test_class_weights_balanced_matches_sklearn(counts):
    y = np.repeat(np.arange(len(counts)), counts)
    ref = compute_class_weight("balanced", classes=np.arange(len(counts)), y=y)
    np.testing.assert_allclose(class_weights("balanced", counts=counts).numpy(), ref, rtol=1e-6)


def test_class_weights_effective_number():
    counts, beta = [10, 100, 1000], 0.99
    w = class_weights("effective_number", counts=counts, beta=beta).double()
    raw = np.array([(1 - beta) / (1 - beta**n) for n in counts])
    np.testing.assert_allclose(w.numpy(), raw / raw.sum() * 3, rtol=1e-6)
    assert w[0] > w[1] > w[2]
    assert float(w.sum()) == pytest.approx(3.0)


def test_class_weights_list_none_and_errors():
    assert class_weights("none", counts=[1, 2]) is None
    torch.testing.assert_close(class_weights([1.0, 3.0], counts=[4, 5]), torch.tensor([1.0, 3.0]))
    with pytest.raises(ValueError, match=r"one value per class \(2\), got 3"):
        class_weights([1.0, 2.0, 3.0], counts=[4, 5])
    with pytest.raises(ValueError, match="positive"):
        class_weights([1.0, 0.0], counts=[4, 5])
    with pytest.raises(ValueError, match="class 1 has 0"):
        class_weights("balanced", counts=[4, 0, 3])
    with pytest.raises(ValueError, match="'inverse'.*balanced, effective_number"):
        class_weights("inverse", counts=[4, 5])


def test_resolve_alpha():
    assert resolve_alpha(None, counts=[1, 2]) is None
    # A number is alpha-balanced (Lin et al.): alpha for the positive class, 1 - alpha for the other.
    torch.testing.assert_close(resolve_alpha(0.25, counts=[1, 2]), torch.tensor([0.75, 0.25]))
    torch.testing.assert_close(resolve_alpha(0.25, counts=[1, 2], positive_class=0), torch.tensor([0.25, 0.75]))
    with pytest.raises(ValueError, match="binary data only .3 classes here.; give one value per class or 'balanced'"):
        resolve_alpha(0.25, counts=[1, 2, 3])
    torch.testing.assert_close(resolve_alpha([0.2, 0.8], counts=[1, 2]), torch.tensor([0.2, 0.8]))
    torch.testing.assert_close(resolve_alpha("balanced", counts=[1, 3]), class_weights("balanced", counts=[1, 3]))
    with pytest.raises(ValueError, match=r"one value per class \(2\)"):
        resolve_alpha([0.1], counts=[1, 2])
    with pytest.raises(ValueError, match="'auto'"):
        resolve_alpha("auto", counts=[1, 2])
    with pytest.raises(TypeError):
        resolve_alpha(True, counts=[1, 2])


def test_criterion_cross_entropy_and_deferred_reweighting():
    logits, labels, _, weight = _data(11)
    targets = F.one_hot(labels, 5).float()
    crit = Criterion(kind="cross_entropy", weight=weight, reweight_from_epoch=3)
    for epoch, weighted in ((1, False), (2, False), (3, True), (7, True)):
        crit.set_epoch(epoch)
        ref = F.cross_entropy(logits, labels, weight=weight if weighted else None)
        torch.testing.assert_close(crit(logits, targets), ref)
    always = Criterion(kind="cross_entropy", weight=weight)
    torch.testing.assert_close(always(logits, targets), F.cross_entropy(logits, labels, weight=weight))
    assert "weight" in always.state_dict()
    assert always.to(torch.float64).weight.dtype == torch.float64


def test_criterion_focal_uses_gamma_alpha_smoothing():
    logits, _, soft, _ = _data(12)
    alpha = torch.tensor([0.1, 0.2, 0.3, 0.2, 0.2])
    crit = Criterion(kind="focal", gamma=1.5, alpha=alpha, label_smoothing=0.1)
    ref = focal_loss(logits, soft, gamma=1.5, alpha=alpha, label_smoothing=0.1)
    torch.testing.assert_close(crit(logits, soft), ref)


def test_criterion_sigmoid_focal_matches_torchvision():
    logits, labels, _, _ = _data(13, b=32, k=2)
    targets = F.one_hot(labels, 2).float()
    diff = logits[:, 1] - logits[:, 0]
    no_alpha = Criterion(kind="sigmoid_focal", gamma=2.0)
    ref = tv_sigmoid_focal_loss(diff, labels.float(), alpha=-1, gamma=2.0, reduction="mean")
    torch.testing.assert_close(no_alpha(logits, targets), ref)
    scalar = Criterion(kind="sigmoid_focal", gamma=2.0, alpha=0.25)
    ref = tv_sigmoid_focal_loss(diff, labels.float(), alpha=0.25, gamma=2.0, reduction="mean")
    torch.testing.assert_close(scalar(logits, targets), ref)
    per_class = Criterion(kind="sigmoid_focal", gamma=2.0, alpha=torch.tensor([0.75, 0.25]))
    torch.testing.assert_close(per_class(logits, targets), ref)


@pytest.mark.parametrize("positive", [0, 1])
@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_scalar_focal_alpha_on_binary_data_is_torchvisions_alpha_balanced_loss(positive, gamma):
    """The softmax focal loss with a scalar alpha equals sigmoid_focal_loss on l_pos - l_other (issue 12)."""
    logits, labels, _, _ = _data(14, b=64, k=2)
    crit = Criterion(kind="focal", gamma=gamma, alpha=resolve_alpha(0.25, counts=[5, 5], positive_class=positive))
    diff = logits[:, positive] - logits[:, 1 - positive]
    ref = tv_sigmoid_focal_loss(diff, (labels == positive).float(), alpha=0.25, gamma=gamma, reduction="mean")
    torch.testing.assert_close(crit(logits, F.one_hot(labels, 2).float()), ref)
    uniform = focal_loss(logits, labels, gamma=gamma, alpha=0.25)  # the old meaning: a constant factor
    assert not torch.allclose(crit(logits, F.one_hot(labels, 2).float()), uniform)


def test_sigmoid_focal_scores_the_positive_class():
    logits, labels, _, _ = _data(15, b=32, k=2)
    crit = Criterion(kind="sigmoid_focal", gamma=2.0, alpha=0.25, positive_class=0)
    ref = tv_sigmoid_focal_loss(logits[:, 0] - logits[:, 1], (labels == 0).float(), alpha=0.25, gamma=2.0)
    torch.testing.assert_close(crit(logits, F.one_hot(labels, 2).float()), ref.mean())


def test_criterion_validation():
    with pytest.raises(ValueError, match="'dice'.*cross_entropy, focal, sigmoid_focal"):
        Criterion(kind="dice")
    crit = Criterion(kind="cross_entropy")
    with pytest.raises(ValueError, match="must equal logits shape"):
        crit(torch.zeros(4, 3), torch.zeros(4, 2))
