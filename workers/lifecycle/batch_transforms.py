"""A job spec's batch transforms for the training core: augmentation, mixing and copy-paste.

Class statistics (the minority classes of minority-only augmentation and of
copy-paste's default pool) come from the train split's class counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from service.spec import JobSpec
from workers.training.augment import BatchAugment, minority_class_mask
from workers.training.copy_paste import CopyPaste
from workers.training.data import Split
from workers.training.mixing import BatchMixer


def make_mixer(spec: JobSpec, *, num_classes: int, train_labels: torch.Tensor) -> BatchMixer | None:
    mixing = spec.mixing
    if mixing.mode == "none":
        return None
    return BatchMixer(
        mode=mixing.mode,
        num_classes=num_classes,
        alpha=mixing.alpha,
        cutmix_alpha=mixing.cutmix_alpha,
        prob=mixing.prob,
        switch_prob=mixing.switch_prob,
        label_smoothing=0.0,
        train_labels=train_labels if mixing.mode in ("balanced_mixup", "remix") else None,
        kappa=mixing.kappa,
        tau=mixing.tau,
    )


def make_copy_paste(
    spec: JobSpec,
    *,
    train: Split,
    names: Sequence[str],
    counts: Sequence[int],
    masks: Mapping[str, np.ndarray] | None,
    device: torch.device,
) -> CopyPaste | None:
    """The pool: train images of the chosen classes whose mask is not empty."""
    paste = spec.augment.copy_paste
    if paste is None:
        return None
    if masks is None or "train" not in masks:
        raise ValueError("augment.copy_paste needs segmentation masks, and this dataset has none")
    if paste.classes == "minority":
        chosen = minority_class_mask(counts, threshold=spec.augment.minority_threshold)
    else:
        chosen = torch.tensor([name in paste.classes for name in names])
    labels = train.label_tensor
    train_masks = masks["train"]  # memory-mapped: only the pool's rows are read into memory
    has_object = torch.from_numpy(np.asarray(train_masks).reshape(len(labels), -1).any(axis=1))
    keep = chosen[labels] & has_object
    if not bool(keep.any()):
        raise ValueError(f"augment.copy_paste: no masked train image of the chosen classes {paste.classes!r}")
    rows = torch.nonzero(keep).flatten().numpy()
    return CopyPaste(
        pool_images=torch.from_numpy(np.array(train.images[rows])),
        pool_masks=torch.from_numpy(np.array(train_masks[rows], dtype=np.uint8)),
        pool_labels=labels[rows],
        prob=paste.prob,
        scale=(float(paste.scale[0]), float(paste.scale[1])),
        blend=paste.blend,
        device=device,
    )


def make_augment(spec: JobSpec, *, counts: Sequence[int]) -> BatchAugment:
    aug = spec.augment
    mask = minority_class_mask(counts, threshold=aug.minority_threshold) if aug.minority_only else None
    return BatchAugment(
        hflip=aug.hflip,
        vflip=aug.vflip,
        rotation=aug.rotation,
        scale=None if aug.scale is None else tuple(aug.scale),
        translate=aug.translate,
        brightness=aug.brightness,
        contrast=aug.contrast,
        augment_classes=mask,
    )
