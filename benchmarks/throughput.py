"""Training throughput: the real job path against the hand-written bare loop, in one process.

The job side is exactly what a worker runs: a ``JobSpec`` → ``workers.lifecycle.plan.
build_training`` → ``workers.training.fit``. The reference is
``benchmarks.bare_loop.BareTrainer`` doing the same work (model, batch size,
focal loss, CutMix, class-balanced sampling, flips/rotation/zoom, a validation
pass per epoch). The two alternate epoch by epoch: the bare epoch runs inside
the job's ``on_epoch_end`` callback and is subtracted from the job's clock, so
both see the same machine state. A job epoch is timed from the end of one
callback to the start of the next (training, validation, metrics, threshold,
best-weights copy: everything a job does per epoch); a bare epoch is training
plus one validation forward pass. Images/s = training images of the epoch /
seconds; the first epoch of each (allocation, cudnn autotuning, compile) is
excluded and the median of the rest reported.

Also writes the scale section (``benchmarks.scale``): epoch time and memory
for 1×, 4×, 16× the PneumoniaMNIST train set.

    python -m benchmarks.throughput --device cpu
    python -m benchmarks.throughput --device cuda
    python -m benchmarks.throughput --quick --results /tmp/r.md
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from benchmarks import common, scale
from benchmarks.bare_loop import BareTrainer
from benchmarks.workload import CUTMIX_ALPHA, GAMMA, LR, ROTATION, SCALE, WEIGHT_DECAY, Case, job_overrides

logger = logging.getLogger(__name__)

TARGET_RATIO = 0.95


def cases(*, device: str, quick: bool) -> list[Case]:
    """The benchmark cases for this device; ``quick`` shrinks every one to seconds."""
    if quick:
        return [
            Case("simple_cnn 28px", "simple_cnn", 28, 128, 32, 32, 2),
            Case("resnet18 28px", "resnet18", 28, 32, 16, 16, 2),
            # resnet18 stands in for resnet50 here: the same large-stem code path at a fraction of the cost.
            Case("resnet18 64px synthetic (quick)", "resnet18", 64, 8, 4, 4, 2),
        ]
    gpu = device == "cuda"
    # A 28 px epoch on a GPU is short and the GPU box's host has slow spells (benchmarks/RESULTS.md,
    # "Job ÷ bare on the H100"): twenty alternations keep a spell from deciding the median.
    return [
        Case("simple_cnn 28px", "simple_cnn", 28, 4708, 524, 128, 21 if gpu else 6),
        Case("resnet18 28px", "resnet18", 28, 4708, 524, 128, 21 if gpu else 4),
        # On the CPU an epoch is a few steps, so that five epochs (four timed, alternating with the
        # bare loop) fit in minutes on a small VM.
        Case(
            "resnet50 224px synthetic",
            "resnet50",
            224,
            8192 if gpu else 128,
            512 if gpu else 32,
            128 if gpu else 32,
            6 if gpu else 5,
        ),
    ]


def case_arrays(case: Case, pneumonia: common.Arrays) -> common.Arrays:
    """PneumoniaMNIST (subset to the case's sizes) or seeded synthetic RGB images with a 1:3 imbalance."""
    sizes = {"train": case.train, "val": case.val, "test": case.val}
    if case.side == 28:
        return common.subset(pneumonia, sizes=sizes, seed=0)
    rng = np.random.default_rng(0)
    arrays: common.Arrays = {}
    for split, n in sizes.items():
        images = rng.integers(0, 256, size=(n, case.side, case.side, 3), dtype=np.uint8)
        labels = (rng.random(n) < 0.75).astype(np.int64)
        labels[:2] = (0, 1)  # both classes present, however small the split
        arrays[split] = (images, labels)
    return arrays


def measure_case(
    case: Case, *, arrays: common.Arrays, class_names: Sequence[str], device: torch.device, compile: bool
) -> dict[str, Any]:
    """Alternate job and bare epochs; per-epoch images/s of both."""
    from workers.training.engine import fit

    kwargs = common.job_fit_kwargs(
        job_overrides(case, compile=compile), arrays=arrays, class_names=class_names, device=device
    )
    bare = BareTrainer(
        arch=case.arch,
        train=arrays["train"],
        val_images=arrays["val"][0],
        num_classes=len(class_names),
        device=device,
        batch_size=case.batch_size,
        gamma=GAMMA,
        cutmix_alpha=CUTMIX_ALPHA,
        balanced=True,
        hflip=True,
        rotation=ROTATION,
        scale=SCALE,
        lr=LR,
        weight_decay=WEIGHT_DECAY,
        compile=compile,
        drop_last=True,
    )
    n_train = len(arrays["train"][1])
    images_per_epoch = (n_train // case.batch_size) * case.batch_size if n_train >= case.batch_size else n_train
    job_ips: list[float] = []
    job_train_ips: list[float] = []
    bare_ips: list[float] = []
    clock = {"resumed": 0.0}

    def on_epoch_end(record: Any, _state: Any) -> None:
        _sync(device)
        job_ips.append(images_per_epoch / (time.perf_counter() - clock["resumed"]))
        job_train_ips.append(float(record.images_per_second))
        bare_ips.append(bare.run_epoch())
        _sync(device)
        clock["resumed"] = time.perf_counter()

    kwargs["on_epoch_end"] = on_epoch_end
    clock["resumed"] = time.perf_counter()
    fit(**kwargs)
    return {"job": job_ips, "job_train": job_train_ips, "bare": bare_ips}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def table(results: list[tuple[Case, dict[str, Any]]]) -> str:
    headers = [
        "case",
        "train images",
        "batch",
        "epochs timed",
        "job img/s",
        "bare img/s",
        "ratio",
        f"target ≥{TARGET_RATIO}",
        "job train-only img/s",
    ]
    rows = []
    for case, result in results:
        job, bare = common.median_after_warmup(result["job"]), common.median_after_warmup(result["bare"])
        ratio = job / bare
        rows.append(
            [
                case.name,
                case.train,
                case.batch_size,
                max(1, len(result["job"]) - 1),
                common.fmt(job, 1),
                common.fmt(bare, 1),
                common.fmt(ratio, 3),
                "yes" if ratio >= TARGET_RATIO else "no",
                common.fmt(common.median_after_warmup(result["job_train"]), 1),
            ]
        )
    note = (
        "\n\nMedian over the epochs after the first (warm-up). Job img/s: training images per epoch / wall time "
        "of the whole job epoch (train + validation + metrics + threshold + best-weights copy), measured between "
        "`on_epoch_end` calls of `fit` built by `build_training` from a JobSpec. Bare img/s: "
        "`benchmarks/bare_loop.py` (train + validation forward pass), run alternately in the same process. "
        "Job train-only: `EpochRecord.images_per_second` (training loop alone)."
    )
    return common.markdown_table(headers, rows) + note


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--compile", action="store_true", help="torch.compile both sides (spec.compile)")
    parser.add_argument("--cases", nargs="*", default=None, help="only these archs (simple_cnn resnet18 resnet50)")
    parser.add_argument("--no-scale", action="store_true", help="skip the scale section")
    parser.add_argument("--scale-child", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    device = common.check_device(args.device)
    if args.scale_child is not None:
        return scale.child_main(args, multiplier=args.scale_child, device=device)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    pneumonia, class_names = common.load_npz(args.data)
    results = []
    for case in cases(device=device.type, quick=args.quick):
        if args.cases and case.arch not in args.cases:
            continue
        logger.info("case %s", case.name)
        result = measure_case(
            case, arrays=case_arrays(case, pneumonia), class_names=class_names, device=device, compile=args.compile
        )
        results.append((case, result))
    markdown = table(results)
    tag = common.machine_tag(device)
    common.publish(f"throughput-{tag}", markdown, args=args, module="benchmarks.throughput", argv=argv)
    if not args.no_scale:
        common.publish(
            f"scale-{tag}", scale.run(args, device=device), args=args, module="benchmarks.throughput", argv=argv
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
