"""Copy-paste from masks: pixel-exact on a hand-made case, batched, reproducible from the generator."""

from __future__ import annotations

import pytest
import torch

from workers.training.copy_paste import CopyPaste, PasteParams


def _pool():
    images = torch.zeros(1, 4, 6, 1, dtype=torch.uint8)
    images[0, :, :, 0] = torch.arange(24, dtype=torch.uint8).view(4, 6) * 10  # every pixel distinct
    masks = torch.zeros(1, 4, 6, dtype=torch.uint8)
    masks[0, 1:3, 1:3] = 1  # a 2×2 object at rows 1-2, columns 1-2
    return images, masks, torch.tensor([1])


def _params(*, flip: bool, shift=(2.0, 1.0)) -> PasteParams:
    return PasteParams(
        rows=torch.tensor([1]),
        sources=torch.tensor([0]),
        scale=torch.tensor([1.0]),
        flip=torch.tensor([flip]),
        shift=torch.tensor([shift]),
    )


def test_an_unscaled_paste_at_an_integer_offset_copies_the_masked_pixels_exactly():
    images, masks, labels = _pool()
    paste = CopyPaste(pool_images=images, pool_masks=masks, pool_labels=labels, prob=1.0, blend="none")
    batch = torch.full((2, 1, 4, 6), 0.5)
    out, new_labels = paste.apply(batch, torch.tensor([0, 0]), _params(flip=False))
    expected = batch.clone()
    source = images[0, :, :, 0].float() / 255
    expected[1, 0, 2:4, 3:5] = source[1:3, 1:3]  # shifted by dx=2, dy=1
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert new_labels.tolist() == [0, 1]
    assert batch.eq(0.5).all()  # the input is untouched


def test_a_flipped_paste_mirrors_the_object_about_the_vertical_axis_first():
    images, masks, labels = _pool()
    paste = CopyPaste(pool_images=images, pool_masks=masks, pool_labels=labels, prob=1.0, blend="none")
    batch = torch.zeros(2, 1, 4, 6)
    out, _ = paste.apply(batch, torch.tensor([0, 0]), _params(flip=True, shift=(-1.0, 0.0)))
    source = images[0, :, :, 0].float() / 255
    expected = torch.zeros(2, 1, 4, 6)
    # columns 1, 2 mirror to 4, 3 (x → 5 - x), then move one pixel left: 3, 2
    expected[1, 0, 1:3, 2] = source[1:3, 2]
    expected[1, 0, 1:3, 3] = source[1:3, 1]
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_gaussian_blend_softens_the_edge_and_keeps_the_inside_near_the_object():
    images, masks, labels = _pool()
    masks = torch.zeros(1, 12, 12, dtype=torch.uint8)
    masks[0, 3:9, 3:9] = 1
    images = torch.full((1, 12, 12, 1), 255, dtype=torch.uint8)
    paste = CopyPaste(pool_images=images, pool_masks=masks, pool_labels=labels, prob=1.0, blend="gaussian")
    out, _ = paste.apply(torch.zeros(2, 1, 12, 12), torch.tensor([0, 0]), _params(flip=False, shift=(0.0, 0.0)))
    assert out[1, 0, 6, 6] > 0.9 and 0.0 < out[1, 0, 3, 6] < 0.9 and out[1, 0, 0, 0] == 0.0


def test_sampling_is_a_function_of_the_generator_and_prob():
    images, masks, labels = _pool()
    paste = CopyPaste(pool_images=images, pool_masks=masks, pool_labels=labels, prob=0.5, scale=(0.8, 1.2))
    first = paste.sample(1000, generator=torch.Generator().manual_seed(3))
    again = paste.sample(1000, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first.rows, again.rows) and torch.equal(first.shift, again.shift)
    assert 400 < len(first.rows) < 600
    assert float(first.scale.min()) >= 0.8 and float(first.scale.max()) <= 1.2
    batch = torch.rand(16, 1, 4, 6, generator=torch.Generator().manual_seed(0))
    a = paste(batch, torch.zeros(16, dtype=torch.int64), generator=torch.Generator().manual_seed(5))
    b = paste(batch, torch.zeros(16, dtype=torch.int64), generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    assert torch.equal(a[1], b[1])


def test_every_paste_lands_its_object_in_frame_with_its_centre_spread_over_the_image():
    # A corner object: a shift drawn relative to where it sits would push many pastes out of frame,
    # and those rows would take the pasted class without showing its object.
    images = torch.full((1, 12, 12, 1), 200, dtype=torch.uint8)
    masks = torch.zeros(1, 12, 12, dtype=torch.uint8)
    masks[0, 0:2, 0:2] = 1
    paste = CopyPaste(pool_images=images, pool_masks=masks, pool_labels=torch.tensor([1]), prob=1.0, blend="none")
    params = paste.sample(2000, generator=torch.Generator().manual_seed(0))
    out, labels = paste.apply(torch.zeros(2000, 1, 12, 12), torch.zeros(2000, dtype=torch.int64), params)
    visible = out[:, 0] > 0
    assert bool(visible.flatten(1).any(dim=1).all()) and bool((labels == 1).all())
    xs = torch.arange(12, dtype=torch.float32) + 0.5
    centre_x = (visible.float().sum(dim=1) * xs).sum(dim=1) / visible.float().sum(dim=(1, 2))
    assert abs(float(centre_x.mean()) - 6.0) < 0.3 and float(centre_x.min()) < 2 and float(centre_x.max()) > 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prob": 1.5}, "prob must be"),
        ({"scale": (1.2, 0.8)}, "scale must be"),
        ({"blend": "poisson"}, "unknown blend"),
    ],
)
def test_bad_arguments(kwargs, message):
    images, masks, labels = _pool()
    with pytest.raises(ValueError, match=message):
        CopyPaste(pool_images=images, pool_masks=masks, pool_labels=labels, **kwargs)


def test_a_sixteen_bit_pool_pastes_its_pixels_over_65535():
    _, masks, labels = _pool()
    images = torch.zeros(1, 4, 6, 1, dtype=torch.uint16)
    images[0, :, :, 0] = (torch.arange(24, dtype=torch.int32).view(4, 6) * 2731 + 7).to(torch.uint16)
    paste = CopyPaste(pool_images=images, pool_masks=masks, pool_labels=labels, prob=1.0, blend="none")
    batch = torch.full((2, 1, 4, 6), 0.5)
    out, _ = paste.apply(batch, torch.tensor([0, 0]), _params(flip=False))
    expected = batch.clone()
    expected[1, 0, 2:4, 3:5] = images[0, 1:3, 1:3, 0].float() / 65535
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
