"""The decoded form every upload is turned into, whatever archive it came in."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "val", "test")
FORMATS = ("npz", "imagefolder", "labels_csv")


@dataclass
class DecodedDataset:
    """Images and labels per split, decoded once.

    ``splits[name] = (images uint8 or uint16 (N, H, W, C) C-contiguous, labels int64 (N,))``,
    every split of one dtype (uint16 when any image is 16-bit: ``service.imaging.depth``).
    After ``ingest_file`` it always holds ``train``, ``val`` and ``test``.
    ``notes`` records what ingestion changed (resizing, carved splits, ignored files).
    ``masks[name]``: optional segmentation masks of a split, uint8 ``(N, H, W)`` of 0/1.
    """

    format: str
    class_names: list[str]
    image_shape: tuple[int, int, int]
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    notes: list[str] = field(default_factory=list)
    masks: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self, split: str) -> list[int]:
        """Images per class in ``split`` (length ``num_classes``)."""
        labels = self.splits[split][1]
        return np.bincount(labels, minlength=self.num_classes).astype(int).tolist()

    def masked_class_counts(self, split: str) -> list[int] | None:
        """Images per class in ``split`` whose mask is not empty; ``None`` when the split has no masks."""
        if split not in self.masks:
            return None
        labels = self.splits[split][1]
        masked = self.masks[split].reshape(len(labels), -1).any(axis=1)
        return np.bincount(labels[masked], minlength=self.num_classes).astype(int).tolist()
