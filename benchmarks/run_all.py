"""Every benchmark in sequence, each in its own process (``make bench``).

    python -m benchmarks.run_all                      # CPU, full sizes, writes benchmarks/RESULTS.md
    python -m benchmarks.run_all --device cuda        # GPU sections (…-gpu)
    python -m benchmarks.run_all --quick --results /tmp/r.md
    python -m benchmarks.run_all --merge gpu-RESULTS.md   # sections written on another machine

Order: throughput (+ scale), MedMNIST recipes, the 1:10 imbalance study,
inference, the 100-epoch job wall time. The GPU steps (hundreds of ResNet-18 epochs)
run by default only with ``--device cuda`` or ``--quick``; on a CPU they
would take hours, so name them with ``--only`` to force them. ``--only``
picks a subset; ``--skip-inference`` leaves out the HTTP part (e.g. on a GPU
box without PostgreSQL). A failing step is reported and the rest still run;
the exit status is non-zero if any failed.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks import common

logger = logging.getLogger(__name__)

STEPS: dict[str, list[str]] = {
    "throughput": ["benchmarks.throughput"],
    "medmnist": ["benchmarks.medmnist", "--recipe", "medmnist_resnet18_28"],
    "rarefit_default": ["benchmarks.medmnist", "--recipe", "rarefit_default"],
    "imbalanced": ["benchmarks.medmnist", "--imbalanced"],
    "inference": ["benchmarks.inference"],
    "api_memory": ["benchmarks.api_memory"],
    "job_wall": ["benchmarks.job_wall"],
}
GPU_STEPS = ("medmnist", "rarefit_default", "imbalanced", "job_wall")


def step_commands(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    shared = ["--device", args.device, "--data", str(args.data)]
    if args.quick:
        shared.append("--quick")
    if args.results is not None:
        shared += ["--results", str(args.results)]
    if args.only:
        chosen = list(args.only)
    elif args.device == "cuda" or args.quick:
        chosen = list(STEPS)
    else:
        chosen = [name for name in STEPS if name not in GPU_STEPS]
    if args.skip_inference:  # the HTTP steps
        chosen = [name for name in chosen if name not in ("inference", "api_memory")]
    commands = []
    for name in chosen:
        module, *extra = STEPS[name]
        if module == "benchmarks.medmnist" and args.seeds:
            extra = [*extra, "--seeds", *map(str, args.seeds)]
        commands.append((name, [sys.executable, "-m", module, *extra, *shared]))
    return commands


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--only", nargs="+", choices=sorted(STEPS), default=None)
    parser.add_argument("--skip-inference", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds for the MedMNIST steps")
    parser.add_argument(
        "--merge",
        type=Path,
        default=None,
        metavar="FILE",
        help="only copy FILE's sections (e.g. from a GPU machine) into the results file",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.merge is not None:
        names = common.merge_results(args.merge, path=args.results or common.RESULTS_PATH)
        logger.info("merged sections %s", ", ".join(names) or "(none)")
        return 0
    failed = []
    for name, command in step_commands(args):
        logger.info("running %s: %s", name, " ".join(command))
        started = time.perf_counter()
        done = subprocess.run(command, cwd=common.REPO_ROOT, check=False)
        logger.info("%s finished with %d after %.0f s", name, done.returncode, time.perf_counter() - started)
        if done.returncode != 0:
            failed.append(name)
    if failed:
        logger.error("failed steps: %s", ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
