"""Scale: job epoch time and peak memory for 1×, 4×, 16× the PneumoniaMNIST train set (simple_cnn).

``--quick`` runs 1× and 4× of a 64-image subset. Each size runs in a fresh subprocess (``python -m benchmarks.throughput
--scale-child K``), so the peak resident set size (``VmHWM``) and the peak
CUDA allocation belong to that size alone. The train split is tiled K times;
val and test stay as they are. Every size trains on the same number of
images after its warm-up epoch (32 epochs at 1×, 8 at 4×, 2 at 16×), so the
sizes are compared over equally long stretches of sustained load: a CPU (or
a shared VM's share of one) may run a 3 s burst faster than a minute of
work, which comparing two short epochs with two long ones would count as
non-linear growth. Time per image is the timed epochs' total (between ``on_epoch_end`` calls)
over their images. Growth is called linear when seconds per training image
at the largest size are within ±25 % of the smallest's.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch

from benchmarks import common
from benchmarks.workload import Case, job_overrides

logger = logging.getLogger(__name__)

MULTIPLIERS = (1, 4, 16)
QUICK_MULTIPLIERS = (1, 4)
LINEAR_TOLERANCE = 0.25
QUICK_BASE = 64  # train images of the 1× size under --quick
MIN_TIMED_EPOCHS = 2
_MB = 1024 * 1024


def run(args: argparse.Namespace, *, device: torch.device) -> str:
    """Run every size in its own process; the scale section's markdown."""
    rows = []
    for multiplier in QUICK_MULTIPLIERS if args.quick else MULTIPLIERS:
        command = [
            sys.executable,
            "-m",
            "benchmarks.throughput",
            "--scale-child",
            str(multiplier),
            "--device",
            device.type,
            "--data",
            str(args.data),
        ]
        if args.quick:
            command.append("--quick")
        logger.info("scale %d×", multiplier)
        done = subprocess.run(command, cwd=common.REPO_ROOT, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"scale child {multiplier}× failed:\n{done.stderr[-4000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return table(rows)


def table(rows: list[dict[str, Any]]) -> str:
    headers = [
        "train set",
        "train images",
        "data MB",
        "median epoch s",
        "timed epochs",
        "ms per 1k images",
        "peak RSS MB",
        "RSS at start MB",
        "peak GPU MB",
    ]
    lines = []
    for row in rows:
        epoch = common.median_after_warmup(row["epoch_seconds"])
        lines.append(
            [
                f"{row['multiplier']}×",
                row["train_images"],
                common.fmt(row["data_bytes"] / _MB, 1),
                common.fmt(epoch, 2),
                len(row["epoch_seconds"]) - 1,
                common.fmt(1e6 * seconds_per_image(row), 1),
                common.fmt(row["peak_rss"] / _MB, 0),
                common.fmt(row["start_rss"] / _MB, 0),
                "–" if row["peak_gpu"] is None else common.fmt(row["peak_gpu"] / _MB, 0),
            ]
        )
    return common.markdown_table(headers, lines) + "\n\n" + verdict(rows)


def verdict(rows: list[dict[str, Any]]) -> str:
    """One sentence each on time and memory growth from the smallest to the largest size."""
    first, last = rows[0], rows[-1]
    per_image = [seconds_per_image(r) for r in (first, last)]
    ratio = per_image[1] / per_image[0]
    linear = abs(ratio - 1.0) <= LINEAR_TOLERANCE
    data_growth = (last["data_bytes"] - first["data_bytes"]) / _MB
    rss_growth = (last["peak_rss"] - first["peak_rss"]) / _MB
    text = (
        f"Time: seconds per training image at {last['multiplier']}× are {ratio:.2f}× those at "
        f"{first['multiplier']}× — growth is {'linear' if linear else 'NOT linear'} "
        f"(tolerance ±{LINEAR_TOLERANCE:.0%}). Memory: {data_growth:.1f} MB more images raised peak RSS by "
        f"{rss_growth:.1f} MB ({rss_growth / max(data_growth, 1e-9):.2f} MB per MB of data)"
    )
    if first["peak_gpu"] is not None:
        gpu_growth = (last["peak_gpu"] - first["peak_gpu"]) / _MB
        text += f" and peak GPU memory by {gpu_growth:.1f} MB ({gpu_growth / max(data_growth, 1e-9):.2f} MB per MB)"
    return text + "."


def seconds_per_image(row: dict[str, Any]) -> float:
    """Total seconds of the epochs after the warm-up over the images they trained on."""
    timed = row["epoch_seconds"][1:]
    return sum(timed) / (len(timed) * row["train_images"])


def timed_epochs(multiplier: int, largest: int) -> int:
    """Epochs after the warm-up so that every size trains on as many images as the largest in its timed ones."""
    return max(MIN_TIMED_EPOCHS, MIN_TIMED_EPOCHS * largest // multiplier)


def child_main(args: argparse.Namespace, *, multiplier: int, device: torch.device) -> int:
    """One size: print a JSON line with epoch seconds and memory peaks."""
    from workers.training.engine import fit

    if multiplier < 1:
        raise ValueError(f"--scale-child must be >= 1, got {multiplier}")
    start_rss = _current_rss()
    arrays, class_names = common.load_npz(args.data)
    if args.quick:
        arrays = common.subset(arrays, sizes={"train": QUICK_BASE, "val": 32, "test": 32})
    images, labels = arrays["train"]
    arrays["train"] = (np.tile(images, (multiplier, 1, 1, 1)), np.tile(labels, multiplier))
    sizes = QUICK_MULTIPLIERS if args.quick else MULTIPLIERS
    epochs = 1 + timed_epochs(multiplier, max(sizes))
    case = Case("scale", "simple_cnn", 28, len(arrays["train"][1]), len(arrays["val"][1]), 128, epochs)
    kwargs = common.job_fit_kwargs(
        job_overrides(case, compile=False), arrays=arrays, class_names=class_names, device=device
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds: list[float] = []
    clock = {"resumed": time.perf_counter()}

    def on_epoch_end(_record: Any, _state: Any) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        seconds.append(now - clock["resumed"])
        clock["resumed"] = now

    kwargs["on_epoch_end"] = on_epoch_end
    fit(**kwargs)
    print(
        json.dumps(
            {
                "multiplier": multiplier,
                "train_images": int(len(arrays["train"][1])),
                "data_bytes": int(arrays["train"][0].nbytes),
                "epoch_seconds": seconds,
                "peak_rss": common.peak_rss_bytes(),
                "start_rss": start_rss,
                "peak_gpu": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
            }
        )
    )
    return 0


def _current_rss() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0
