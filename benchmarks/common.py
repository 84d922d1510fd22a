"""Shared pieces of the benchmark scripts: data, hardware, the job path, and RESULTS.md sections.

Every section of ``benchmarks/RESULTS.md`` is written by :func:`write_results`
together with the command that produced it, the date and the machine, so a
number is never separated from how it was measured. Sections are delimited by
``<!-- BEGIN name -->`` / ``<!-- END name -->`` and each script rewrites only
its own (CPU and GPU runs use different names, e.g. ``throughput-cpu``).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the checkout; a clone elsewhere (CI, a GPU box) finds it at /work/shared (as tests/conftest.py).
_NPZ_CANDIDATES = (
    REPO_ROOT.parent / "shared" / "data" / "pneumoniamnist.npz",
    Path("/work/shared/data/pneumoniamnist.npz"),
)
DEFAULT_NPZ = next((p for p in _NPZ_CANDIDATES if p.is_file()), _NPZ_CANDIDATES[0])
RESULTS_PATH = REPO_ROOT / "benchmarks" / "RESULTS.md"
BENCH_DATASET_ID = "benchmark"
SPLITS = ("train", "val", "test")
_HEADER = (
    "# rarefit benchmark results\n\n"
    "Written by the scripts in `benchmarks/` (`python -m benchmarks.run_all`); each section\n"
    "names the command, date and machine that produced it. Do not edit by hand: re-run the command.\n"
)

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]


# --- command line -------------------------------------------------------------


def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--device``, ``--quick``, ``--data`` and ``--results``, the same in every script."""
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run (CI); no RESULTS write")
    parser.add_argument("--data", type=Path, default=DEFAULT_NPZ, help="PneumoniaMNIST .npz (MedMNIST layout)")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help=f"results file to update (default {RESULTS_PATH.relative_to(REPO_ROOT)}; --quick writes only here)",
    )
    return parser


def results_target(args: argparse.Namespace) -> Path | None:
    """Where to write: ``--results`` if given, else RESULTS.md for full runs and nowhere for ``--quick``."""
    if args.results is not None:
        return args.results
    return None if args.quick else RESULTS_PATH


def command_line(module: str, argv: Sequence[str]) -> str:
    return shlex.join(["python", "-m", module, *argv])


def publish(section: str, markdown: str, *, args: argparse.Namespace, module: str, argv: Sequence[str]) -> None:
    """Print ``markdown`` and, where :func:`results_target` says, write it as ``section`` with its command."""
    print(markdown)
    target = results_target(args)
    if target is not None:
        write_results(section, markdown, command_line(module, argv), path=target)


def start(
    parse_args: Callable[[list[str]], argparse.Namespace], argv: Sequence[str] | None
) -> tuple[argparse.Namespace, torch.device, list[str]]:
    """A script's first steps: INFO logging, its command line parsed, the device checked; the argv it ran with."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(arguments)
    return args, check_device(args.device), arguments


def check_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} asked for, but torch.cuda.is_available() is False")
    return device


def machine_tag(device: torch.device | str) -> str:
    """``gpu`` or ``cpu``: the suffix of section names, so CPU and GPU runs keep separate sections."""
    return "gpu" if torch.device(device).type == "cuda" else "cpu"


# --- data ---------------------------------------------------------------------


def load_npz(path: Path = DEFAULT_NPZ) -> tuple[Arrays, list[str]]:
    """A MedMNIST-layout archive as ``{split: (uint8 (N, H, W, C), int64 (N,))}`` and class names."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file {path} not found (pass --data)")
    arrays: Arrays = {}
    with np.load(path, allow_pickle=False) as archive:
        for split in SPLITS:
            images = np.asarray(archive[f"{split}_images"], dtype=np.uint8)
            if images.ndim == 3:
                images = images[..., None]
            labels = np.asarray(archive[f"{split}_labels"]).reshape(-1).astype(np.int64)
            arrays[split] = (np.ascontiguousarray(images), labels)
        if "class_names" in archive.files:
            names = [str(n) for n in archive["class_names"].tolist()]
        else:
            names = [str(i) for i in range(int(arrays["train"][1].max()) + 1)]
    return arrays, names


def subset(arrays: Arrays, *, sizes: Mapping[str, int], seed: int = 0) -> Arrays:
    """The first ``sizes[split]`` images of a seeded permutation of each split (stratification is not needed)."""
    rng = np.random.default_rng(seed)
    out: Arrays = {}
    for split, (images, labels) in arrays.items():
        n = min(int(sizes.get(split, len(labels))), len(labels))
        keep = np.sort(rng.permutation(len(labels))[:n])
        out[split] = (images[keep], labels[keep])
    return out


# --- the job path -------------------------------------------------------------


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied recursively (nested dicts merge, everything else replaces)."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def job_plan(
    overrides: Mapping[str, Any],
    *,
    arrays: Arrays,
    class_names: Sequence[str],
    device: torch.device | str,
    masks: Mapping[str, np.ndarray] | None = None,
) -> Any:
    """The training plan a job would build: JobSpec → ``workers.lifecycle.plan.build_training``."""
    from service.spec import JobSpec
    from workers.lifecycle.plan import build_training

    spec = JobSpec.model_validate(deep_merge({"dataset_id": BENCH_DATASET_ID}, overrides))
    return build_training(
        spec, dataset_arrays=arrays, class_names=list(class_names), device=str(device), init_state=None, masks=masks
    )


def job_fit_kwargs(
    overrides: Mapping[str, Any], *, arrays: Arrays, class_names: Sequence[str], device: torch.device | str
) -> dict[str, Any]:
    """The keyword arguments a job would pass to ``fit`` (its plan's ``fit_arguments``)."""
    return job_plan(overrides, arrays=arrays, class_names=class_names, device=device).fit_arguments()


# --- measurements -------------------------------------------------------------


def peak_rss_bytes() -> int:
    """This process's peak resident set size (``VmHWM`` from ``/proc/self/status``)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found in /proc/self/status (Linux only)")


def median_after_warmup(values: Sequence[float], *, warmup: int = 1) -> float:
    """Median of ``values`` without the first ``warmup`` (compilation, allocator, caches)."""
    kept = list(values)[warmup:] or list(values)
    if not kept:
        raise ValueError("no measurements")
    return float(statistics.median(kept))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    values = [float(v) for v in values]
    if not values:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


# --- hardware and results -----------------------------------------------------


def hardware() -> dict[str, str]:
    """CPU model, cores, GPU, torch and Python versions of this machine."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "cpu": cpu,
        "cores": str(cores),
        "torch_threads": str(torch.get_num_threads()),
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def commit() -> str:
    """The checkout's short commit id (``unknown`` outside a git checkout)."""
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


def machine_line() -> str:
    hw = hardware()
    return (
        f"{hw['cpu']}, {hw['cores']} cores (torch threads {hw['torch_threads']}), GPU {hw['gpu']}, "
        f"torch {hw['torch']}, Python {hw['python']}"
    )


def fmt(value: float | int | str | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return "nan"
    return f"{value:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def parse_markdown_table(text: str) -> list[dict[str, str]]:
    """The first table in ``text`` as a list of ``{header: cell}`` (the smoke tests read tables back)."""
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    if len(lines) < 2:
        return []
    headers = [h.strip() for h in lines[0].strip("|").split("|")]
    return [dict(zip(headers, (c.strip() for c in line.strip("|").split("|")), strict=False)) for line in lines[2:]]


def read_section(name: str, *, path: Path = RESULTS_PATH) -> str | None:
    """The body of section ``name`` in ``path``, or ``None``."""
    if not Path(path).is_file():
        return None
    match = _section_pattern(name).search(Path(path).read_text(encoding="utf-8"))
    return match.group(0) if match else None


def write_results(section: str, markdown: str, command: str, *, path: Path = RESULTS_PATH) -> Path:
    """Rewrite section ``section`` of ``path`` (other sections kept; a new one is appended)."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", section):
        raise ValueError(f"section name must be lower-case letters, digits, '-', '_' or '.', got {section!r}")
    path = Path(path)
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = (
        f"<!-- BEGIN {section} -->\n## {section}\n\n"
        f"- command: `{command}`\n- date: {date}\n- machine: {machine_line()}\n\n"
        f"{markdown.strip()}\n<!-- END {section} -->"
    )
    text = path.read_text(encoding="utf-8") if path.is_file() else _HEADER
    pattern = _section_pattern(section)
    if pattern.search(text):
        text = pattern.sub(lambda _match: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    logger.info("wrote section %s of %s", section, path)
    return path


def merge_results(source: Path, *, path: Path = RESULTS_PATH) -> list[str]:
    """Copy every section of ``source`` (e.g. a GPU machine's file) into ``path`` verbatim; their names."""
    text = Path(source).read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- BEGIN ([a-z0-9][a-z0-9_.-]*) -->.*?<!-- END \1 -->", text, flags=re.DOTALL)
    target = Path(path).read_text(encoding="utf-8") if Path(path).is_file() else _HEADER
    for name in blocks:
        block = _section_pattern(name).search(text).group(0)  # type: ignore[union-attr]
        pattern = _section_pattern(name)
        if pattern.search(target):
            target = pattern.sub(lambda _match, block=block: block, target, count=1)
        else:
            target = target.rstrip("\n") + "\n\n" + block + "\n"
    Path(path).write_text(target, encoding="utf-8")
    return blocks


def _section_pattern(section: str) -> re.Pattern[str]:
    name = re.escape(section)
    return re.compile(rf"<!-- BEGIN {name} -->.*?<!-- END {name} -->", re.DOTALL)
