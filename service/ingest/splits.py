"""Carving missing val/test splits out of train, stratified and seeded.

The rule: each split the upload does not give takes 10% of every class's
train images (rounded, at least 1), drawn with ``numpy.random.default_rng(seed)``;
so with neither given the result is 80/10/10, and with one given only the
other is carved. Every class therefore appears in every carved split, and a
class needs one train image per carved split plus one to keep
(else 422 "too few images in class X to make a val split"). Carved and kept
images stay in their original order.
"""

from __future__ import annotations

import numpy as np

from service.ingest.dataset import SPLITS, DecodedDataset
from service.ingest.errors import DatasetRejected, safe_name

CARVE_FRACTION = {"val": 0.1, "test": 0.1}


def _carve_class(indices: np.ndarray, *, missing: list[str], class_name: str) -> dict[str, np.ndarray]:
    remaining, start, taken = len(indices), 0, {}
    for split in missing:
        count = max(1, int(np.floor(CARVE_FRACTION[split] * len(indices) + 0.5)))
        if remaining - count < 1:
            raise DatasetRejected(
                422,
                f"too few images in class {safe_name(class_name)} ({len(indices)} in train) to make a {split} split",
            )
        taken[split] = indices[start : start + count]
        start, remaining = start + count, remaining - count
    taken["train"] = indices[start:]
    return taken


def carve_missing_splits(decoded: DecodedDataset, *, seed: int) -> DecodedDataset:
    """Return ``decoded`` with ``val`` and ``test`` present, carving what is missing from train."""
    missing = [split for split in ("val", "test") if split not in decoded.splits]
    if not missing:
        return decoded
    images, labels = decoded.splits["train"]
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {split: [] for split in ["train", *missing]}
    for class_index, class_name in enumerate(decoded.class_names):
        shuffled = rng.permutation(np.flatnonzero(labels == class_index))
        for split, chosen in _carve_class(shuffled, missing=missing, class_name=class_name).items():
            parts[split].append(chosen)
    splits, masks = dict(decoded.splits), dict(decoded.masks)
    train_masks = decoded.masks.get("train")
    for split, chunks in parts.items():
        chosen = np.sort(np.concatenate(chunks))
        splits[split] = (np.ascontiguousarray(images[chosen]), labels[chosen])
        if train_masks is not None:  # masks follow their images into the carved splits
            masks[split] = np.ascontiguousarray(train_masks[chosen])
    carved = ", ".join(f"{split} ({len(splits[split][1])} images)" for split in missing)
    note = f"carved {carved} from train: 10% of each class per split, stratified, seed {seed}"
    return DecodedDataset(
        format=decoded.format,
        class_names=decoded.class_names,
        image_shape=decoded.image_shape,
        splits={split: splits[split] for split in SPLITS},
        notes=[*decoded.notes, note],
        masks=masks,
    )
