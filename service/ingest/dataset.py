"""The decoded form every upload is turned into, whatever archive it came in."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "val", "test")
FORMATS = ("npz", "imagefolder", "labels_csv")


@dataclass
class DecodedDataset:
    """Images and labels per split, decoded once.

    ``splits[name] = (images uint8 (N, H, W, C) C-contiguous, labels int64 (N,))``.
    After ``ingest_file`` it always holds ``train``, ``val`` and ``test``.
    ``notes`` records what ingestion changed (resizing, carved splits, ignored files).
    """

    format: str
    class_names: list[str]
    image_shape: tuple[int, int, int]
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self, split: str) -> list[int]:
        """Images per class in ``split`` (length ``num_classes``)."""
        labels = self.splits[split][1]
        return np.bincount(labels, minlength=self.num_classes).astype(int).tolist()
