"""Image splits and batch sources: uint8 or uint16 arrays in, normalised-ready float batches out.

A dataset that fits lives on the device as uint8 (or uint16) ``(N, H, W, C)``
and a batch is one ``index_select`` by an index tensor on the device, then a
permute (an NHWC buffer seen as NCHW *is* channels_last memory) and a division
by the dtype's full scale, ``2**bits - 1`` (255, or 65535 for 16-bit images:
``pixel_scale``): no per-sample Python and no host round trip. A dataset that does not fit is
streamed from its memory-mapped array by a ``DataLoader`` whose workers
gather whole batches (sorted reads) into pinned memory.
"""

from __future__ import annotations

import logging
import multiprocessing
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch.utils.data import DataLoader

logger = logging.getLogger(__name__)

ImageArray = torch.Tensor | np.ndarray
_CUDA_FREE_FRACTION = 0.5  # leave the other half of free memory to activations and optimiser
_COPY_CHUNK_BYTES = 256 * 1024 * 1024
# The pixel dtypes; a model sees x / (2**bits - 1), in [0, 1].
_PIXEL_BITS = {torch.uint8: 8, torch.uint16: 16}
_TORCH_DTYPES = {np.dtype(np.uint8): torch.uint8, np.dtype(np.uint16): torch.uint16}


@dataclass(frozen=True)
class Split:
    """One split: ``images`` uint8 or uint16 ``(N, H, W, C)`` (tensor, array or memmap), ``labels`` int64 ``(N,)``.

    Labels are normalised to a CPU ``torch.int64`` tensor; images are kept as
    given so a memmap is never read whole.
    """

    images: ImageArray
    labels: torch.Tensor | np.ndarray

    def __post_init__(self) -> None:
        _check_images(self.images)
        labels = self.labels if torch.is_tensor(self.labels) else _labels_tensor(self.labels)
        if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(
                f"labels must be a 1-D integer array, got dtype {labels.dtype} shape {tuple(labels.shape)}"
            )
        if labels.shape[0] != self.images.shape[0]:
            raise ValueError(f"{self.images.shape[0]} images but {labels.shape[0]} labels")
        labels = labels.to(device="cpu", dtype=torch.int64)
        if labels.numel() and int(labels.min()) < 0:
            raise ValueError(f"labels must be non-negative, got minimum {int(labels.min())}")
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def label_tensor(self) -> torch.Tensor:
        """``labels`` as ``__post_init__`` normalised them: a CPU int64 tensor."""
        return cast(torch.Tensor, self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)``."""
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    @property
    def pixel_bits(self) -> int:
        """8 for uint8 images, 16 for uint16."""
        return pixel_bits(self.images.dtype)

    def class_counts(self, num_classes: int) -> list[int]:
        return torch.bincount(self.label_tensor, minlength=num_classes).tolist()


def minority_class(counts: Sequence[int]) -> int:
    """The rarest class of ``counts``; ties go to the higher index (class 1 in a balanced binary task)."""
    values = np.asarray(counts)
    return int(len(values) - 1 - np.argmin(values[::-1]))


def _labels_tensor(labels: object) -> torch.Tensor:
    # Labels are small: copy them (a read-only memmap would make torch warn, and a copy never aliases).
    array = np.array(labels, copy=True)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got dtype {array.dtype} shape {array.shape}")
    return torch.from_numpy(array)


def pixel_bits(dtype: torch.dtype | np.dtype) -> int:
    """8 for uint8 images, 16 for uint16 (torch or numpy dtype); ``ValueError`` for any other."""
    key = dtype if isinstance(dtype, torch.dtype) else _TORCH_DTYPES.get(np.dtype(dtype))
    if key not in _PIXEL_BITS:
        raise ValueError(f"images must be uint8 or uint16, got dtype {dtype}")
    return _PIXEL_BITS[key]


def pixel_scale(dtype: torch.dtype | np.dtype) -> float:
    """``2**bits - 1`` of an image dtype (255.0 for uint8, 65535.0 for uint16): images01 = x / it."""
    return float(2 ** pixel_bits(dtype) - 1)


def _check_images(images: object) -> None:
    if not (torch.is_tensor(images) or isinstance(images, np.ndarray)):
        raise TypeError(f"images must be a torch.Tensor or numpy array, got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {tuple(images.shape)}")
    pixel_scale(images.dtype)


def channel_stats(
    images: ImageArray, *, max_samples: int = 20_000, chunk_size: int = 2048
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in ``[0, 1]`` units from up to ``max_samples`` evenly spaced images.

    Reads in chunks, so a memmap is never loaded whole. A constant channel
    gets std 1 (normalising it to zero either way, without dividing by zero).
    """
    _check_images(images)
    if max_samples < 1 or chunk_size < 1:
        raise ValueError(f"max_samples and chunk_size must be >= 1, got {max_samples}, {chunk_size}")
    n = int(images.shape[0])
    if n == 0:
        raise ValueError("channel_stats needs at least one image")
    picks = np.unique(np.linspace(0, n - 1, num=min(n, max_samples)).round().astype(np.int64))
    channels = int(images.shape[3])
    total = np.zeros(channels, dtype=np.float64)
    total_sq = np.zeros(channels, dtype=np.float64)
    for start in range(0, len(picks), chunk_size):
        rows = picks[start : start + chunk_size]
        block = images[torch.from_numpy(rows)] if torch.is_tensor(images) else images[rows]
        block = np.asarray(block.cpu() if torch.is_tensor(block) else block, dtype=np.float64)
        total += block.sum(axis=(0, 1, 2))
        total_sq += np.square(block).sum(axis=(0, 1, 2))
    count = len(picks) * int(images.shape[1]) * int(images.shape[2])
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    scale = pixel_scale(images.dtype)
    std = np.where(std < 1e-3 * scale, scale, std)
    return (mean / scale).tolist(), (std / scale).tolist()


def _to_tensor(images: ImageArray) -> torch.Tensor:
    """A CPU tensor sharing memory with ``images`` where possible (memmaps included)."""
    if torch.is_tensor(images):
        return images
    if not images.flags.writeable:
        # The core never writes into a split, so sharing a read-only memmap is safe.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(images)
    return torch.from_numpy(np.ascontiguousarray(images))


def _to_device(images: ImageArray, device: torch.device) -> torch.Tensor:
    tensor = _to_tensor(images)
    if tensor.device == device:
        return tensor
    out = torch.empty(tensor.shape, dtype=tensor.dtype, device=device)
    rows = max(1, _COPY_CHUNK_BYTES // max(1, tensor[0].numel()))
    for start in range(0, tensor.shape[0], rows):  # chunked: a memmap is paged in piece by piece
        out[start : start + rows].copy_(tensor[start : start + rows].contiguous())
    return out


def _fits(split: Split, device: torch.device, max_device_bytes: int | None) -> bool:
    nbytes = int(np.prod(split.images.shape)) * split.images.dtype.itemsize
    if max_device_bytes is not None:
        return nbytes <= max_device_bytes
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return nbytes <= _CUDA_FREE_FRACTION * free
    return True  # CPU: the tensor shares the (possibly memory-mapped) array; the OS pages it


def _to_float01(images: torch.Tensor) -> torch.Tensor:
    # NHWC seen as NCHW is channels_last; float() keeps those strides (preserve_format).
    return images.permute(0, 3, 1, 2).float().div_(pixel_scale(images.dtype))


class BatchSource:
    """Gathers training batches by index tensor. Build with ``BatchSource.create``."""

    resident: bool = True

    def __init__(self, *, labels: torch.Tensor, image_shape: Sequence[int], device: torch.device) -> None:
        self.device = device
        self.labels = labels.to(device)
        self.image_shape = tuple(int(s) for s in image_shape)

    @staticmethod
    def create(
        split: Split, *, device: torch.device | str, max_device_bytes: int | None = None, num_workers: int = 2
    ) -> BatchSource:
        """Resident on ``device`` when the image array fits, otherwise streamed from host memory."""
        if not isinstance(split, Split):
            raise TypeError(f"split must be a Split, got {type(split).__name__}")
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if _fits(split, device, max_device_bytes):
            return ResidentBatchSource(split, device=device)
        logger.info("streaming %s images from host memory (does not fit on %s)", len(split), device)
        return StreamingBatchSource(split, device=device, num_workers=num_workers)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images01 float (B, C, H, W) channels_last on the device, labels (B,))`` for ``idx``."""
        raise NotImplementedError

    def iter_batches(
        self, indices: torch.Tensor, batch_size: int, *, drop_last: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of ``indices`` in order; ``drop_last`` drops a final batch smaller than ``batch_size``."""
        for chunk in _chunks(indices, batch_size, drop_last=drop_last):
            yield self.batch(chunk)


def _chunks(indices: torch.Tensor, batch_size: int, *, drop_last: bool) -> list[torch.Tensor]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if indices.ndim != 1:
        raise ValueError(f"indices must be 1-D, got shape {tuple(indices.shape)}")
    chunks = list(torch.split(indices, batch_size))
    if drop_last and chunks and chunks[-1].shape[0] < batch_size:
        chunks.pop()
    return chunks


class ResidentBatchSource(BatchSource):
    """The whole image array on the device; a batch is one gather."""

    resident = True

    def __init__(self, split: Split, *, device: torch.device) -> None:
        super().__init__(labels=split.label_tensor, image_shape=split.image_shape, device=device)
        self.images = _to_device(split.images, device)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = idx.to(self.device, non_blocking=True)
        return _to_float01(self.images.index_select(0, idx)), self.labels.index_select(0, idx)


class _BatchGather(torch.utils.data.Dataset):
    """Map-style dataset whose key is a whole batch of indices: one sorted read per batch."""

    def __init__(self, images: ImageArray) -> None:
        self.images = images

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _gather_host(self.images, idx), idx


def _gather_host(images: ImageArray, idx: torch.Tensor) -> torch.Tensor:
    rows = idx.numpy()
    order = np.argsort(rows, kind="stable")  # sorted reads are sequential on a memmap
    source = images.numpy() if torch.is_tensor(images) else images
    out = np.empty((len(rows),) + tuple(images.shape[1:]), dtype=source.dtype)
    out[order] = source[rows[order]]
    return torch.from_numpy(out)


class StreamingBatchSource(BatchSource):
    """Gathers from the host array (typically a memmap) with DataLoader workers and pinned memory."""

    resident = False

    def __init__(self, split: Split, *, device: torch.device, num_workers: int = 2) -> None:
        super().__init__(labels=split.label_tensor, image_shape=split.image_shape, device=device)
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.images = split.images.cpu() if torch.is_tensor(split.images) else split.images
        self.num_workers = num_workers

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = _gather_host(self.images, idx.cpu())
        return self._finish(images, idx)

    def _finish(self, images: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)
        return _to_float01(images), self.labels.index_select(0, idx.to(self.device, non_blocking=True))

    def iter_batches(
        self, indices: torch.Tensor, batch_size: int, *, drop_last: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        chunks = _chunks(indices.cpu(), batch_size, drop_last=drop_last)  # one host copy per epoch
        loader = DataLoader(
            _BatchGather(self.images),
            batch_size=None,  # each key is already a whole batch
            sampler=chunks,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if self.num_workers else None,
            multiprocessing_context=_fork_context() if self.num_workers else None,
        )
        for images, idx in loader:
            yield self._finish(images, idx)


def _fork_context() -> multiprocessing.context.BaseContext | None:
    # fork shares the memmap with the workers instead of pickling the array into each one.
    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return None
