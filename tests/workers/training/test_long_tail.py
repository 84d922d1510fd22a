"""Long-tail losses against the papers' formulas and the authors' reference code, transcribed here.

Reference code: kaidic/LDAM-DRW ``losses.py`` (``LDAMLoss``) and ``cifar_train.py``
(DRW weights); jiawei-ren/BalancedMetaSoftmax ``loss/BalancedSoftmaxLoss.py``;
google-research/logit_adjustment (``logits + log(base_probs**tau + 1e-12)``).
Their CUDA-only casts are replaced by CPU ones; the arithmetic is theirs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workers.training.long_tail import (
    LongTailCriterion,
    balanced_softmax_loss,
    ldam_loss,
    ldam_margins,
    log_prior,
    logit_adjusted_loss,
    posthoc_adjustment,
)
from workers.training.losses import class_weights, soft_cross_entropy

COUNTS = [500, 120, 30, 5]


class ReferenceLDAMLoss(torch.nn.Module):
    """kaidic/LDAM-DRW losses.py ``LDAMLoss`` with ``torch.cuda.FloatTensor`` → ``torch.FloatTensor``."""

    def __init__(self, cls_num_list, max_m=0.5, weight=None, s=30):
        super().__init__()
        m_list = 1.0 / np.sqrt(np.sqrt(cls_num_list))
        m_list = m_list * (max_m / np.max(m_list))
        self.m_list = torch.FloatTensor(m_list)
        self.s = s
        self.weight = weight

    def forward(self, x, target):
        index = torch.zeros_like(x, dtype=torch.uint8)
        index.scatter_(1, target.data.view(-1, 1), 1)
        index_float = index.type(torch.FloatTensor)
        batch_m = torch.matmul(self.m_list[None, :], index_float.transpose(0, 1))
        batch_m = batch_m.view((-1, 1))
        x_m = x - batch_m
        output = torch.where(index.bool(), x_m, x)
        return F.cross_entropy(self.s * output, target, weight=self.weight)


def reference_drw_weights(cls_num_list, beta=0.9999):
    """kaidic/LDAM-DRW cifar_train.py, the DRW branch."""
    effective_num = 1.0 - np.power(beta, cls_num_list)
    per_cls_weights = (1.0 - beta) / np.array(effective_num)
    per_cls_weights = per_cls_weights / np.sum(per_cls_weights) * len(cls_num_list)
    return torch.FloatTensor(per_cls_weights)


def reference_balanced_softmax(labels, logits, sample_per_class, reduction="mean"):
    """jiawei-ren/BalancedMetaSoftmax ``balanced_softmax_loss``."""
    spc = sample_per_class.type_as(logits)
    spc = spc.unsqueeze(0).expand(logits.shape[0], -1)
    logits = logits + spc.log()
    return F.cross_entropy(input=logits, target=labels, reduction=reduction)


def _fixed(seed=0, b=12, k=4, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, k, generator=g) * scale
    labels = torch.randint(k, (b,), generator=g)
    return logits, labels


def _paper_ldam(logits, labels, margins, s):
    """Cao et al. eq. (13) per sample, in float64: -log(e^{s(z_y-Δ_y)} / (e^{s(z_y-Δ_y)} + Σ_{j≠y} e^{s z_j}))."""
    out = []
    for z, y in zip(logits.double(), labels, strict=True):
        top = torch.exp(s * (z[y] - margins[y].double()))
        rest = sum(torch.exp(s * z[j]) for j in range(len(z)) if j != y)
        out.append(-torch.log(top / (top + rest)))
    return torch.stack(out)


def test_margins_follow_the_quarter_power_and_the_largest_is_max_margin():
    m = ldam_margins(COUNTS, max_margin=0.5)
    torch.testing.assert_close(m.max(), torch.tensor(0.5))
    ratios = m / m[0]
    expected = torch.tensor([(COUNTS[0] / n) ** 0.25 for n in COUNTS])
    torch.testing.assert_close(ratios, expected)
    torch.testing.assert_close(m, ReferenceLDAMLoss(COUNTS).m_list)


def test_ldam_equals_the_reference_code_on_a_fixed_input():
    logits, labels = _fixed(b=64, scale=0.3)  # cosine-classifier-sized logits, as LDAM-DRW trains
    ours = ldam_loss(logits, labels, margins=ldam_margins(COUNTS), scale=30.0)
    ref = ReferenceLDAMLoss(COUNTS, s=30)(logits, labels)
    torch.testing.assert_close(ours, ref)
    # The same pinned number the transcription gives (guards both against drifting together).
    assert float(ours) == pytest.approx(float(ref), rel=1e-6)


def test_ldam_drw_equals_the_reference_code_with_its_weights():
    logits, labels = _fixed(seed=1, b=64, scale=0.3)
    drw = class_weights("effective_number", counts=COUNTS, beta=0.9999)
    torch.testing.assert_close(drw, reference_drw_weights(COUNTS))
    ours = ldam_loss(logits, labels, margins=ldam_margins(COUNTS), weight=drw)
    ref = ReferenceLDAMLoss(COUNTS, weight=reference_drw_weights(COUNTS))(logits, labels)
    torch.testing.assert_close(ours, ref)


def test_ldam_equals_the_paper_formula_per_sample():
    logits, labels = _fixed(seed=2, scale=0.5)
    margins = ldam_margins(COUNTS, max_margin=0.7)
    ours = ldam_loss(logits.double(), labels, margins=margins, scale=8.0, reduction="none")
    torch.testing.assert_close(ours, _paper_ldam(logits, labels, margins, 8.0))


def test_ldam_soft_targets_are_the_mixture_of_the_hard_losses():
    logits, labels = _fixed(seed=3)
    other = labels.roll(1)
    lam = 0.3
    soft = lam * F.one_hot(labels, 4).float() + (1 - lam) * F.one_hot(other, 4).float()
    margins = ldam_margins(COUNTS)
    mixed = ldam_loss(logits, soft, margins=margins, reduction="none")
    parts = lam * ldam_loss(logits, labels, margins=margins, reduction="none") + (1 - lam) * ldam_loss(
        logits, other, margins=margins, reduction="none"
    )
    torch.testing.assert_close(mixed, parts)


def test_ldam_is_finite_with_gradients_at_extreme_logits():
    logits = torch.tensor([[40.0, -40.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [-5.0, 90.0, 3.0, 3.0]], requires_grad=True)
    labels = torch.tensor([0, 2, 1])
    loss = ldam_loss(logits, labels, margins=ldam_margins(COUNTS))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    ref = ReferenceLDAMLoss(COUNTS)(logits.detach(), labels)
    torch.testing.assert_close(loss.detach(), ref)


def test_ldam_gradients_pass_gradcheck():
    logits, _ = _fixed(seed=4, b=5)
    soft = torch.softmax(torch.randn(5, 4, generator=torch.Generator().manual_seed(9), dtype=torch.float64), 1)
    logits = (logits.double() * 0.2).requires_grad_(True)
    margins = ldam_margins(COUNTS)
    assert torch.autograd.gradcheck(lambda z: ldam_loss(z, soft, margins=margins, scale=10.0), (logits,))


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
def test_logit_adjusted_equals_the_reference_formula(tau):
    logits, labels = _fixed(seed=5)
    base_probs = torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS)
    ref = F.cross_entropy(logits.double() + torch.log(base_probs**tau + 1e-12), labels)
    ours = logit_adjusted_loss(logits, labels, log_prior=log_prior(COUNTS), tau=tau)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-5)


def test_balanced_softmax_equals_the_reference_code_and_logit_adjustment_at_tau_1():
    logits, labels = _fixed(seed=6)
    counts = torch.tensor(COUNTS)
    ours = balanced_softmax_loss(logits, labels, counts=counts)
    torch.testing.assert_close(ours, reference_balanced_softmax(labels, logits, counts))
    adjusted = logit_adjusted_loss(logits, labels, log_prior=log_prior(COUNTS), tau=1.0)
    torch.testing.assert_close(ours, adjusted)


def test_offset_losses_are_linear_in_soft_targets():
    logits, labels = _fixed(seed=7)
    soft = torch.softmax(torch.randn(12, 4, generator=torch.Generator().manual_seed(1)), 1)
    counts = torch.tensor(COUNTS)
    ours = balanced_softmax_loss(logits, soft, counts=counts, reduction="none")
    ref = -(soft * torch.log_softmax(logits + counts.float().log(), 1)).sum(1)
    torch.testing.assert_close(ours, ref)


@pytest.mark.parametrize("kind", ["ldam", "logit_adjusted", "balanced_softmax"])
def test_bf16_autocast_logits_give_the_float32_loss_of_the_same_values(kind):
    logits, labels = _fixed(seed=8, b=32, scale=0.4)
    logits_bf16 = logits.bfloat16()
    criterion = LongTailCriterion(kind=kind, counts=COUNTS)
    targets = F.one_hot(labels, 4).float()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        under_amp = criterion(logits_bf16, targets)
    assert under_amp.dtype == torch.float32
    torch.testing.assert_close(under_amp, criterion(logits_bf16.float(), targets))


def test_criterion_drw_switches_weights_on_at_the_epoch():
    weight = class_weights("effective_number", counts=COUNTS, beta=0.9999)
    criterion = LongTailCriterion(kind="ldam", counts=COUNTS, weight=weight, reweight_from_epoch=3)
    logits, labels = _fixed(seed=9)
    targets = F.one_hot(labels, 4).float()
    criterion.set_epoch(2)
    torch.testing.assert_close(criterion(logits, targets), ReferenceLDAMLoss(COUNTS)(logits, labels))
    criterion.set_epoch(3)
    torch.testing.assert_close(criterion(logits, targets), ReferenceLDAMLoss(COUNTS, weight=weight)(logits, labels))


def test_posthoc_adjustment_is_tau_log_prior_and_none_at_zero():
    assert posthoc_adjustment(COUNTS, tau=0.0) is None
    torch.testing.assert_close(posthoc_adjustment(COUNTS, tau=1.5), 1.5 * log_prior(COUNTS))
    torch.testing.assert_close(log_prior(COUNTS).exp().sum(), torch.tensor(1.0))


def test_zero_tau_logit_adjustment_is_cross_entropy():
    logits, labels = _fixed(seed=10)
    torch.testing.assert_close(
        logit_adjusted_loss(logits, labels, log_prior=log_prior(COUNTS), tau=0.0), soft_cross_entropy(logits, labels)
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ldam_margins([3, 0]), "class 1 has 0 training samples"),
        (lambda: ldam_margins([3, 4], max_margin=0.0), "max_margin must be"),
        (lambda: ldam_loss(torch.zeros(2, 2), torch.tensor([0, 1]), margins=torch.ones(3)), "margins must have"),
        (lambda: ldam_loss(torch.zeros(2, 2), torch.tensor([0, 1]), margins=torch.ones(2), scale=0), "scale must"),
        (lambda: posthoc_adjustment([1, 2], tau=-1.0), "tau must be"),
        (lambda: LongTailCriterion(kind="lda", counts=[1, 2]), "unknown long-tail loss 'lda'"),
        (lambda: ldam_loss(torch.zeros(2, 2), torch.tensor([0, 1]), margins=torch.ones(2), reduction="avg"), "avg"),
    ],
)
def test_bad_arguments_raise_with_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()
