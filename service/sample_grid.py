"""A grid of a dataset split's images, one row per class labelled with its name, as PNG (Pillow).

The samples are the first ``per_class`` images of each class in stored
order, so the same request always draws the same grid and an index in the
diagnostics (a duplicate, a blank image) is easy to find. Every image of a
dataset has one shape, so every tile has one size: images smaller than the
tile box are enlarged by a whole factor with nearest-neighbour (pixels stay
sharp, as a radiologist expects of a 28 x 28 scan), larger ones are shrunk by
area averaging. Integer pixels wider than 8 bits are scaled by their dtype's
maximum, so a 16-bit scan renders with its full range.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from service.imaging.depth import full_scale

TILE = 64
PAD = 4
LABEL_WIDTH = 140
MAX_PER_CLASS = 32
MAX_ROWS = 100
_FONT_SIZE = 13
_LABEL_LINES = 2 * _FONT_SIZE + 6  # a row is at least as tall as its two label lines
_EMPTY = (238, 240, 243)
_TEXT = (29, 35, 48)
_MUTED = (96, 104, 118)


def first_per_class(labels: np.ndarray, *, num_classes: int, per_class: int) -> list[np.ndarray]:
    """For each class, the indices of its first ``per_class`` images (fewer when the split has fewer)."""
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], np.arange(num_classes + 1))
    return [order[starts[c] : min(starts[c] + per_class, starts[c + 1])] for c in range(num_classes)]


def render_grid(*, images: np.ndarray, labels: np.ndarray, class_names: list[str], per_class: int, split: str) -> bytes:
    """PNG bytes: a row per class (at most ``MAX_ROWS``, then a line saying how many more), ``per_class`` tiles.

    ``images`` is ``(N, H, W, C)`` with ``C`` 1 (grey) or 3 (RGB) and an
    unsigned integer dtype; ``labels`` ``(N,)`` class indices.
    """
    if not 1 <= per_class <= MAX_PER_CLASS:
        raise ValueError(f"per_class must be 1..{MAX_PER_CLASS}, got {per_class}")
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (N, H, W, 1 or 3), got {images.shape}")
    if not np.issubdtype(images.dtype, np.unsignedinteger):
        raise ValueError(f"images must have an unsigned integer dtype, got {images.dtype}")
    labels = np.asarray(labels)
    picks = first_per_class(labels, num_classes=len(class_names), per_class=per_class)
    counts = np.bincount(labels, minlength=len(class_names))
    shown = picks[:MAX_ROWS]
    height, width = _tile_shape(images.shape[1], images.shape[2])
    step_x, step_y = width + PAD, max(height, _LABEL_LINES) + PAD
    hidden = len(picks) - len(shown)
    font = ImageFont.load_default(size=_FONT_SIZE)
    footer = _FONT_SIZE + 2 * PAD if hidden else 0
    canvas = Image.new("RGB", (LABEL_WIDTH + per_class * step_x + PAD, len(shown) * step_y + PAD + footer), "white")
    draw = ImageDraw.Draw(canvas)
    for row, indices in enumerate(shown):
        top = PAD + row * step_y
        draw.text((PAD, top), _fit(class_names[row], font), fill=_TEXT, font=font)
        draw.text((PAD, top + _FONT_SIZE + 4), _fit(f"{counts[row]} in {split}", font), fill=_MUTED, font=font)
        for column in range(per_class):
            corner = (LABEL_WIDTH + column * step_x, top)
            if column < len(indices):
                canvas.paste(_tile(images[int(indices[column])], height=height, width=width), corner)
            else:
                draw.rectangle([corner, (corner[0] + width - 1, corner[1] + height - 1)], fill=_EMPTY)
    if hidden:
        more = f"... and {hidden} more classes (the grid shows the first {MAX_ROWS})"
        draw.text((PAD, len(shown) * step_y + PAD), more, fill=_MUTED, font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def _tile_shape(height: int, width: int) -> tuple[int, int]:
    longest = max(height, width)
    if longest <= TILE:
        factor = TILE // longest
        return height * factor, width * factor
    return max(1, round(height * TILE / longest)), max(1, round(width * TILE / longest))


def _tile(image: np.ndarray, *, height: int, width: int) -> Image.Image:
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8:
        pixels = np.round(pixels.astype(np.float64) * (255.0 / full_scale(pixels.dtype))).astype(np.uint8)
    tile = Image.fromarray(pixels[:, :, 0] if pixels.shape[-1] == 1 else pixels)
    enlarging = height >= pixels.shape[0]
    resample = Image.Resampling.NEAREST if enlarging else Image.Resampling.BOX
    return tile.resize((width, height), resample=resample).convert("RGB")


def _fit(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> str:
    """``text`` cut to the label column, ending in "..." when cut."""
    limit = LABEL_WIDTH - 2 * PAD
    if font.getlength(text) <= limit:
        return text
    while text and font.getlength(text + "...") > limit:
        text = text[:-1]
    return text + "..."
