"""Copy-paste oversampling (issue 13) on a synthetic set whose rare class is a small shape at 1:50.

Every image is 32×32 grayscale: a smooth random background (blurred noise)
with clutter on it (one to three thin bright line segments and hollow
squares); the rare class ``defect`` also carries one small filled disc
(radius 2 or 3 px, a random brightness and place), and its mask is that disc.
Train 2,500 ``ok`` : 50 ``defect`` (1:50), val 500 : 50, test 1,000 : 100,
all drawn once with seed 0, so the spread over training seeds is training
randomness alone. Every row is the same job spec (``benchmarks.imbalance``'s
base: plain cross-entropy, random sampler, no mixing, argmax decisions,
selection by val balanced accuracy; simple_cnn) changed only where named,
run through the job path with the set's masks. Copy-paste *helps* when its
mean minority recall beats the plain row by more than the summed seed
standard deviations (the techniques study's rule).

    python -m benchmarks.copy_paste --device cpu --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from benchmarks import common, imbalance
from benchmarks.metrics import predict_probs, summary

logger = logging.getLogger(__name__)

SIZE = 32
CLASS_NAMES = ["ok", "defect"]
SPLIT_COUNTS = {"train": (2500, 50), "val": (500, 50), "test": (1000, 100)}
QUICK_COUNTS = {"train": (200, 4), "val": (40, 8), "test": (40, 8)}
BASE: dict[str, Any] = {
    **imbalance.BASE_CHANGES,
    "model": {"arch": "simple_cnn"},
    "augment": {"hflip": True, "rotation": 0.0, "scale": None, "translate": 0.0},
    "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 5e-4, "scheduler": "cosine", "warmup_epochs": 1},
    "epochs": 20,
    "batch_size": 64,
}
ROWS: dict[str, dict[str, Any]] = {
    "plain CE": {},
    "class-balanced sampler": {"sampler": {"type": "weighted"}},
    "copy-paste (p=0.5)": {"augment": {"copy_paste": {"prob": 0.5, "classes": "minority"}}},
}


def synthetic_split(*, counts: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``counts = (ok, defect)`` images ``uint8 (N, 32, 32, 1)``, labels, and the discs' masks ``(N, 32, 32)``."""
    n = sum(counts)
    labels = np.repeat([0, 1], counts).astype(np.int64)
    noise = rng.normal(0.0, 1.0, size=(n, SIZE, SIZE))
    # A 5-tap box blur twice: low-frequency background, so the disc is not the only structure.
    for axis in (1, 2):
        for _ in range(2):
            noise = sum(np.roll(noise, k, axis=axis) for k in range(-2, 3)) / 5.0
    images = 90.0 + 60.0 * noise / noise.std()
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    masks = np.zeros((n, SIZE, SIZE), dtype=np.uint8)
    for i in range(n):
        for _ in range(int(rng.integers(1, 4))):
            _clutter(images[i], rng=rng, yy=yy, xx=xx)
        if labels[i] == 1:
            radius = int(rng.integers(2, 4))
            cy, cx = rng.integers(radius + 1, SIZE - radius - 1, size=2)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
            images[i][disc] = rng.uniform(190.0, 250.0)
            masks[i] = disc
    order = rng.permutation(n)
    pixels = np.clip(images, 0, 255).astype(np.uint8)[..., None]
    return pixels[order], labels[order], masks[order]


def _clutter(image: np.ndarray, *, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> None:
    """A thin bright line segment or a hollow square, as bright as a disc: brightness alone does not tell."""
    value = rng.uniform(190.0, 250.0)
    if rng.random() < 0.5:
        y0, x0, y1, x1 = rng.integers(0, SIZE, size=4)
        steps = max(abs(int(y1) - int(y0)), abs(int(x1) - int(x0)), 1)
        t = np.linspace(0.0, 1.0, steps + 1)
        image[np.round(y0 + t * (y1 - y0)).astype(int), np.round(x0 + t * (x1 - x0)).astype(int)] = value
    else:
        half = int(rng.integers(3, 6))
        cy, cx = rng.integers(half, SIZE - half, size=2)
        box = (np.abs(yy - cy) <= half) & (np.abs(xx - cx) <= half)
        inner = (np.abs(yy - cy) <= half - 1) & (np.abs(xx - cx) <= half - 1)
        image[box & ~inner] = value


def synthetic_set(
    *, counts: Mapping[str, tuple[int, int]] = SPLIT_COUNTS, seed: int = 0
) -> tuple[common.Arrays, dict[str, np.ndarray]]:
    """The splits and their masks, one generator for all (so a seed gives the same set)."""
    rng = np.random.default_rng(seed)
    arrays: common.Arrays = {}
    masks: dict[str, np.ndarray] = {}
    for split, split_counts in counts.items():
        images, labels, split_masks = synthetic_split(counts=split_counts, rng=rng)
        arrays[split], masks[split] = (images, labels), split_masks
    return arrays, masks


def run_row(
    spec: Mapping[str, Any], *, arrays: common.Arrays, masks: Mapping[str, np.ndarray], device: torch.device
) -> dict[str, float]:
    from workers.training.engine import fit

    plan = common.job_plan(spec, arrays=arrays, class_names=CLASS_NAMES, device=device, masks=masks)
    result = fit(**plan.fit_arguments())
    probs = predict_probs(result.model, arrays["test"][0], device=device)
    return summary(
        probs, arrays["test"][1], threshold=result.threshold, positive_class=result.positive_class, minority=1
    )


def study(args: argparse.Namespace, device: torch.device) -> str:
    arrays, masks = synthetic_set(counts=QUICK_COUNTS if args.quick else SPLIT_COUNTS)
    base = common.deep_merge(BASE, {"epochs": args.epochs} if args.epochs else {})
    results: dict[str, list[dict[str, float]]] = {}
    for name, changes in ROWS.items():
        for seed in args.seeds:
            logger.info("copy-paste study: %s seed %d", name, seed)
            spec = common.deep_merge(base, {**changes, "seed": seed})
            results.setdefault(name, []).append(run_row(spec, arrays=arrays, masks=masks, device=device))
    counts, val, test = (np.bincount(arrays[split][1], minlength=2).tolist() for split in common.SPLITS)
    stats = {name: common.mean_std([r["minority_recall"] for r in runs]) for name, runs in results.items()}
    (m_paste, _), (m_plain, _) = pair = stats["copy-paste (p=0.5)"], stats["plain CE"]
    margin, spread = imbalance.margin_and_spread(*pair)
    verdict = "beyond the seed spread" if margin > spread else "NOT beyond the seed spread"
    data = (
        f"Synthetic 32×32 set, train counts {counts} (`ok` : `defect` ≈ 1:{round(counts[0] / counts[1])}), "
        f"val {val}, test {test}."
    )
    table = imbalance.report(results, data=data, base_spec=base, seeds=args.seeds)
    return (
        f"{table}\n\n"
        f"Copy-paste vs plain CE, minority recall: {m_paste:.3f} vs {m_plain:.3f}, margin {margin:+.3f} vs "
        f"spread (std sum) {spread:.3f} → {verdict}."
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="override the base spec's epochs")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.seeds = 1, args.seeds[:1]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args, device, argv = common.start(parse_args, argv)
    common.publish(
        f"copy-paste-{device.type}", study(args, device), args=args, module="benchmarks.copy_paste", argv=argv
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
