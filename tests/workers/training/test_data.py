"""Splits, channel statistics and batch sources (resident and streamed from a memmap)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workers.training.data import (
    BatchSource,
    ResidentBatchSource,
    Split,
    StreamingBatchSource,
    channel_stats,
)


def _images(n: int = 20, h: int = 5, w: int = 4, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


def _expected(images: np.ndarray, idx: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(images[idx.numpy()]).permute(0, 3, 1, 2).float() / 255.0


@pytest.fixture()
def memmap_split(tmp_path) -> tuple[Split, np.ndarray]:
    images = _images(n=37, h=6, w=6, c=2, seed=1)
    np.save(tmp_path / "images.npy", images)
    mapped = np.load(tmp_path / "images.npy", mmap_mode="r", allow_pickle=False)
    np.save(tmp_path / "labels.npy", np.arange(37) % 3)
    labels = np.load(tmp_path / "labels.npy", mmap_mode="r")  # read-only: must not make torch warn
    return Split(images=mapped, labels=labels), images


def test_split_normalises_labels_to_int64_tensor():
    split = Split(images=_images(n=4), labels=np.array([0, 1, 1, 2], dtype=np.int32))
    assert split.labels.dtype == torch.int64 and split.labels.tolist() == [0, 1, 1, 2]
    assert len(split) == 4 and split.image_shape == (5, 4, 3)
    assert split.class_counts(4) == [1, 2, 1, 0]


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((3, 4, 4), np.uint8), np.zeros(3), r"\(N, H, W, C\)"),
        (np.zeros((3, 4, 4, 1), np.float32), np.zeros(3, np.int64), "uint8 or uint16"),
        (np.zeros((3, 4, 4, 1), np.uint8), np.zeros(2, np.int64), "3 images but 2 labels"),
        (np.zeros((3, 4, 4, 1), np.uint8), np.array([0, -1, 0]), "non-negative"),
        (np.zeros((3, 4, 4, 1), np.uint8), np.array([0.5, 1.0, 0.0]), "integer"),
    ],
)
def test_split_rejects_bad_arrays(images, labels, message):
    with pytest.raises(ValueError, match=message):
        Split(images=images, labels=labels)


def test_split_rejects_non_arrays():
    with pytest.raises(TypeError, match="list"):
        Split(images=[[1]], labels=np.zeros(1))


def test_channel_stats_match_numpy_over_all_images():
    images = _images(n=50, c=3)
    mean, std = channel_stats(images, chunk_size=7)
    as01 = images.astype(np.float64) / 255.0
    np.testing.assert_allclose(mean, as01.mean(axis=(0, 1, 2)), rtol=1e-10)
    np.testing.assert_allclose(std, as01.std(axis=(0, 1, 2)), rtol=1e-8)


def test_channel_stats_subsample_evenly_and_read_memmaps(memmap_split):
    split, images = memmap_split
    mean, std = channel_stats(split.images, max_samples=10, chunk_size=3)
    picks = np.unique(np.linspace(0, 36, num=10).round().astype(int))
    as01 = images[picks].astype(np.float64) / 255.0
    np.testing.assert_allclose(mean, as01.mean(axis=(0, 1, 2)), rtol=1e-10)
    np.testing.assert_allclose(std, as01.std(axis=(0, 1, 2)), rtol=1e-8)


def test_channel_stats_constant_channel_gets_unit_std():
    images = np.full((4, 3, 3, 2), 128, np.uint8)
    images[..., 1] = np.arange(36, dtype=np.uint8).reshape(4, 3, 3)
    mean, std = channel_stats(images)
    assert mean[0] == pytest.approx(128 / 255) and std[0] == 1.0 and 0 < std[1] < 1


def test_resident_batch_is_channels_last_float01_and_shares_memory():
    images = _images(n=20)
    split = Split(images=images, labels=np.arange(20) % 2)
    source = BatchSource.create(split, device="cpu")
    assert isinstance(source, ResidentBatchSource) and source.resident
    assert source.images.data_ptr() == images.ctypes.data  # no copy of the dataset
    idx = torch.tensor([3, 0, 19, 3])
    batch, labels = source.batch(idx)
    assert batch.dtype == torch.float32 and batch.shape == (4, 3, 5, 4)
    assert batch.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(batch, _expected(images, idx), rtol=0, atol=0)
    assert labels.tolist() == [1, 0, 1, 1]


def test_resident_source_accepts_read_only_memmap_without_copy(memmap_split):
    split, images = memmap_split
    source = BatchSource.create(split, device="cpu")  # warnings are errors: no "not writable" warning
    assert isinstance(source, ResidentBatchSource)
    idx = torch.tensor([36, 1, 2])
    torch.testing.assert_close(source.batch(idx)[0], _expected(images, idx), rtol=0, atol=0)


def test_iter_batches_keeps_order_and_drops_partial_batch_on_request():
    split = Split(images=_images(n=10), labels=np.arange(10))
    source = BatchSource.create(split, device="cpu")
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    kept = [labels for _, labels in source.iter_batches(order, 4)]
    assert [len(b) for b in kept] == [4, 4, 2] and torch.cat(kept).tolist() == order.tolist()
    dropped = [labels for _, labels in source.iter_batches(order, 4, drop_last=True)]
    assert [len(b) for b in dropped] == [4, 4]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_streaming_source_matches_resident(memmap_split, num_workers):
    split, images = memmap_split
    streaming = BatchSource.create(split, device="cpu", max_device_bytes=0, num_workers=num_workers)
    resident = BatchSource.create(split, device="cpu")
    assert isinstance(streaming, StreamingBatchSource) and not streaming.resident
    order = torch.randperm(37, generator=torch.Generator().manual_seed(3))
    got = list(streaming.iter_batches(order, 8, drop_last=True))
    want = list(resident.iter_batches(order, 8, drop_last=True))
    assert len(got) == len(want) == 4
    for (g_images, g_labels), (w_images, w_labels) in zip(got, want, strict=True):
        torch.testing.assert_close(g_images, w_images, rtol=0, atol=0)
        assert g_labels.tolist() == w_labels.tolist()
        assert g_images.is_contiguous(memory_format=torch.channels_last)
    single, _ = streaming.batch(torch.tensor([5, 5, 0]))
    torch.testing.assert_close(single, _expected(images, torch.tensor([5, 5, 0])), rtol=0, atol=0)


def test_source_is_resident_when_budget_allows(memmap_split):
    split, _ = memmap_split
    assert BatchSource.create(split, device="cpu", max_device_bytes=37 * 6 * 6 * 2).resident
    assert not BatchSource.create(split, device="cpu", max_device_bytes=37 * 6 * 6 * 2 - 1).resident


def test_create_rejects_non_split():
    with pytest.raises(TypeError, match="Split"):
        BatchSource.create(np.zeros((2, 2, 2, 1), np.uint8), device="cpu")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_sixteen_bit_images_are_divided_by_65535_resident_and_streamed(tmp_path, num_workers):
    images = np.random.default_rng(4).integers(0, 65536, size=(9, 3, 4, 1), dtype=np.uint16)
    np.save(tmp_path / "images.npy", images)
    split = Split(images=np.load(tmp_path / "images.npy", mmap_mode="r"), labels=np.arange(9) % 2)
    assert split.pixel_bits == 16
    resident = BatchSource.create(split, device="cpu")
    streaming = BatchSource.create(split, device="cpu", max_device_bytes=9 * 3 * 4 * 2 - 1, num_workers=num_workers)
    assert resident.resident and not streaming.resident  # the budget counts 2 bytes a pixel
    idx = torch.tensor([8, 0, 3])
    want = torch.from_numpy(images[idx.numpy()].astype(np.float32) / np.float32(65535)).permute(0, 3, 1, 2)
    torch.testing.assert_close(resident.batch(idx)[0], want, rtol=0, atol=0)
    [(streamed, _)] = list(streaming.iter_batches(idx, 3))
    torch.testing.assert_close(streamed, want, rtol=0, atol=0)


def test_an_8_bit_image_widened_by_257_gives_the_same_batch():
    images = _images(n=6, c=1)
    as_8 = BatchSource.create(Split(images=images, labels=np.arange(6)), device="cpu")
    as_16 = BatchSource.create(Split(images=images.astype(np.uint16) * 257, labels=np.arange(6)), device="cpu")
    idx = torch.arange(6)
    torch.testing.assert_close(as_16.batch(idx)[0], as_8.batch(idx)[0], rtol=0, atol=0)
    np.testing.assert_allclose(channel_stats(images), channel_stats(images.astype(np.uint16) * 257), rtol=1e-12)


def test_other_integer_images_are_refused():
    with pytest.raises(ValueError, match="uint8 or uint16, got dtype int16"):
        Split(images=np.zeros((2, 2, 2, 1), np.int16), labels=np.zeros(2, np.int64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sixteen_bit_batches_on_cuda_equal_the_cpu_ones():
    images = np.random.default_rng(5).integers(0, 65536, size=(12, 4, 4, 3), dtype=np.uint16)
    split = Split(images=images, labels=np.arange(12) % 2)
    idx = torch.tensor([11, 2, 2, 0])
    want = BatchSource.create(split, device="cpu").batch(idx)[0]
    for budget in (None, 0):  # resident, then streamed through pinned memory
        source = BatchSource.create(split, device="cuda", max_device_bytes=budget, num_workers=0)
        torch.testing.assert_close(source.batch(idx)[0].cpu(), want, rtol=0, atol=0)
