"""``strategy: auto``: rarefit's own search space over the imbalance menu, scaled to the dataset.

The rules, each with its reason (docs/experiments.md lists them for users):

- **Network by training-set size.** Fewer than 2,000 training images: only
  ``simple_cnn`` (a ResNet over-fits them and costs many times as long); up to
  20,000: ``simple_cnn`` or ``resnet18``; more: ``resnet18`` or
  ``mobilenet_v3_small``. Images of 64 px or more drop ``simple_cnn`` (its
  fixed receptive field is sized for small images).
- **Epochs by size**: 30 below 2,000 images, 20 up to 20,000, 12 above, so
  small sets see enough steps and large ones fit the budget.
- **Regularisation for small sets**: weight decay searched over a wider,
  higher range and label smoothing offered.
- **Imbalance tools only when there is imbalance** (train ratio >= 1.5):
  class weights (none / balanced / effective number), deferred re-weighting
  (Cao et al. 2019), samplers (random / class-balanced / square-root),
  focal α (none / balanced), minority-only augmentation. A balanced set
  searches loss type and γ, mixing and the learning rate only.
- Always: loss type (cross-entropy or focal) with γ in [0.5, 4], mixing
  (none / MixUp / CutMix), learning rate log-uniform in [3e-4, 3e-3].
- **What won the techniques study** (RESULTS ``techniques-pneumonia-cpu``),
  only when there is imbalance: the LDAM and balanced-softmax losses and
  Balanced-MixUp, each of which beat plain cross-entropy beyond the seed
  spread at 1:50.
- Search by TPE (``auto`` uses Optuna's TPE sampler) over 12 trials unless
  ``search.trials`` says otherwise.
"""

from __future__ import annotations

from typing import Any

from service.experiments.space import sets
from service.experiments.spec import ExperimentRequest, Range
from service.models import Dataset

SMALL, MEDIUM = 2_000, 20_000
IMBALANCED = 1.5
LARGE_IMAGE = 64
LOSSES = ("cross_entropy", "focal")
MIXERS = ("none", "mixup", "cutmix")
IMBALANCE_LOSSES = ("ldam", "balanced_softmax")  # the techniques study's winners at 1:50
IMBALANCE_MIXERS = ("balanced_mixup",)


def auto_space(request: ExperimentRequest, *, dataset: Dataset) -> tuple[dict, dict, list[str]]:
    """``(base, space, reasons)`` for this dataset; ``request.base`` fields win over the auto base."""
    train = int(dataset.splits["train"]["count"])
    height, width = int(dataset.image_shape[0]), int(dataset.image_shape[1])
    imbalanced = float(dataset.imbalance_ratio) >= IMBALANCED
    reasons: list[str] = []
    arch, epochs = _network(train, max(height, width), reasons)
    base: dict[str, Any] = {"epochs": epochs, "batch_size": 64 if train < SMALL else 128}
    space: dict[str, Any] = {
        "model.arch": arch,
        "loss.type": list(LOSSES),
        "loss.gamma": Range(low=0.5, high=4.0),
        "mixing.mode": list(MIXERS),
        "optim.lr": Range(low=3e-4, high=3e-3, log=True),
    }
    if train < SMALL:
        space["optim.weight_decay"] = Range(low=1e-4, high=5e-2, log=True)
        space["loss.label_smoothing"] = [0.0, 0.1]
        reasons.append(f"{train} training images: stronger weight decay and label smoothing are searched")
    if imbalanced:
        space.update(_imbalance_menu(epochs))
        reasons.append(f"imbalance ratio {dataset.imbalance_ratio:.1f}: class weights, samplers, α, DRW searched")
    else:
        base["sampler"] = {"type": "random"}
        reasons.append("balanced training set: no re-weighting or re-sampling")
    objective = request.objective
    if objective.class_ is None and "selection_metric" not in request.base:
        base["selection_metric"] = objective.metric
    given = request.base
    return {**base, **given}, {k: v for k, v in space.items() if not sets(given, k)}, reasons


def _network(train: int, size: int, reasons: list[str]) -> tuple[list[str], int]:
    if train < SMALL:
        arch, epochs = ["simple_cnn"], 30
    elif train < MEDIUM:
        arch, epochs = ["simple_cnn", "resnet18"], 20
    else:
        arch, epochs = ["resnet18", "mobilenet_v3_small"], 12
    if size >= LARGE_IMAGE:
        arch = [name for name in arch if name != "simple_cnn"] or ["resnet18"]
    reasons.append(f"{train} training images of {size} px: networks {arch}, {epochs} epochs")
    return arch, epochs


def _imbalance_menu(epochs: int) -> dict[str, Any]:
    return {
        "loss.type": [*LOSSES, *IMBALANCE_LOSSES],
        "mixing.mode": [*MIXERS, *IMBALANCE_MIXERS],
        "loss.class_weights": ["none", "balanced", "effective_number"],
        "loss.reweight_from_epoch": [None, max(1, int(epochs * 0.6))],
        "loss.alpha": [None, "balanced"],
        "sampler.type": ["random", "weighted", "sqrt"],
        "augment.minority_only": [False, True],
    }
