"""Decoupled classifier re-training: stage 2 of Kang et al. 2020, "Decoupling Representation and
Classifier for Long-Tailed Recognition" (cRT).

Stage 1 is an ordinary :func:`~workers.training.engine.fit`. Stage 2 embeds
the train split with the frozen backbone (:func:`embed`: penultimate
features, eval mode, no augmentation), lets the caller rebalance those
embeddings (the worker uses imbalanced-learn; this core stays torch/numpy
only), trains a freshly initialised linear head on the result
(:func:`train_head`) and re-scores val and test with the backbone + new head
(:func:`refit_head`). The returned model is that pair, so it exports like any
other. Post-hoc logit adjustment, when the job asks for it, is applied to the
new head as stage 1 applies it to its own (folded into the bias), with the
prior of the set the head was trained on: the resampled embeddings.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workers.training.data import BatchSource, Split
from workers.training.engine import fold_logit_adjustment
from workers.training.evaluation import Scored, Scoring, evaluate
from workers.training.networks import Classifier
from workers.training.seeding import derive_seed
from workers.training.state import FitResult

logger = logging.getLogger(__name__)


@torch.no_grad()
def embed(model: Classifier, split: Split, *, batch_size: int, device: torch.device | str) -> np.ndarray:
    """Float32 ``(N, F)`` penultimate features of ``split`` in its order (eval mode; bf16 autocast on CUDA)."""
    device = torch.device(device)
    model.to(device).eval()
    source = BatchSource.create(split, device=device)
    order = torch.arange(len(source), device=source.device)
    parts: list[torch.Tensor] = []
    for images, _ in source.iter_batches(order, batch_size):
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            parts.append(model.features(images).float())
    return torch.cat(parts).cpu().numpy()


def train_head(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    device: torch.device | str,
) -> nn.Linear:
    """A new linear head trained with cross-entropy and AdamW on ``(features, labels)``.

    Initialisation (PyTorch's ``nn.Linear`` rule) and the per-epoch shuffles
    come from generators seeded by ``derive_seed(seed, "head", …)``.
    """
    x, y = _checked(features, labels, num_classes)
    if epochs < 1 or batch_size < 1 or not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"epochs, batch_size and lr must be positive, got {epochs!r}, {batch_size!r}, {lr!r}")
    head = _fresh_linear(x.shape[1], num_classes, generator=torch.Generator().manual_seed(derive_seed(seed, "head")))
    device = torch.device(device)
    head, x, y = head.to(device), x.to(device), y.to(device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(derive_seed(seed, "head", epoch)))
        for chunk in order.to(device).split(batch_size):
            loss = F.cross_entropy(head(x[chunk]), y[chunk])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return head.cpu().eval()


def _checked(features: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    if features.ndim != 2 or labels.shape != (features.shape[0],) or features.shape[0] == 0:
        raise ValueError(f"need features (N, F) and labels (N,), got {features.shape} and {labels.shape}")
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(f"labels must be class indices below {num_classes}, got {int(y.min())}..{int(y.max())}")
    return torch.as_tensor(np.asarray(features, dtype=np.float32)), y


def _fresh_linear(in_features: int, out_features: int, *, generator: torch.Generator) -> nn.Linear:
    head = nn.Linear(in_features, out_features)
    with torch.no_grad():  # nn.Linear.reset_parameters, driven by the generator instead of the global RNG
        nn.init.kaiming_uniform_(head.weight, a=math.sqrt(5), generator=generator)
        bound = 1 / math.sqrt(in_features)
        nn.init.uniform_(head.bias, -bound, bound, generator=generator)
    return head


def refit_head(
    result: FitResult,
    *,
    head: nn.Linear,
    train: Split,
    val: Split | None,
    test: Split | None,
    class_names: Sequence[str],
    selection_metric: str,
    threshold_strategy: str,
    target_recall: float | None,
    batch_size: int,
    device: torch.device | str,
    logit_adjustment: torch.Tensor | None = None,
) -> FitResult:
    """``result`` with ``head`` in place of the model's head and val/test re-scored (threshold re-tuned on val).

    ``logit_adjustment`` ``(K,)`` is folded into the new head's bias first (post-hoc logit adjustment),
    so val, test and the exported model all use the adjusted logits.
    """
    model = result.model
    if not isinstance(model, Classifier) or head.in_features != model.head.in_features:
        raise ValueError("refit_head needs a Classifier whose head takes the new head's input features")
    model.head = head
    if logit_adjustment is not None:
        fold_logit_adjustment(model, logit_adjustment)
    scoring = Scoring.create(
        train,
        class_names,
        selection_metric=selection_metric,
        threshold_strategy=threshold_strategy,
        target_recall=target_recall,
        positive_class=result.positive_class,
    )
    device = torch.device(device)
    scored_val = _score(model, val, scoring, tune=True, threshold=None, batch_size=batch_size, device=device)
    threshold = None if scored_val is None else scored_val.threshold
    scored_test = _score(model, test, scoring, tune=False, threshold=threshold, batch_size=batch_size, device=device)
    return dataclasses.replace(
        result,
        model=model.cpu().eval(),
        threshold=threshold,
        val=None if scored_val is None else scored_val.block,
        test=None if scored_test is None else scored_test.block,
        val_probs=None if scored_val is None else scored_val.probs,
        test_probs=None if scored_test is None else scored_test.probs,
    )


def _score(
    model: nn.Module,
    split: Split | None,
    scoring: Scoring,
    *,
    tune: bool,
    threshold: float | None,
    batch_size: int,
    device: torch.device,
) -> Scored | None:
    if split is None:
        return None
    source = BatchSource.create(split, device=device)
    probs, loss = evaluate(model.to(device), source, batch_size=batch_size, device=device, amp=device.type == "cuda")
    return scoring.score(probs, loss, split.label_tensor.numpy(), threshold=threshold, tune=tune)
