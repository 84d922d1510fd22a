"""Experiments against single jobs, through the real service: does ``auto`` find a better recipe?

On PneumoniaMNIST (``--variant full``), its 1:10 imbalanced variant (the
normal class cut to a tenth in train, ``benchmarks.imbalance``) and a
small-data case (train subsampled to 550 images, val/test untouched), it runs
on one ``rarefit serve``:

- an ``auto`` experiment (``--trials`` trials × ``--seeds``), reporting its
  best trial's test metrics over the seeds (chosen on val);
- the single-job defaults (a spec with only ``dataset_id``), once per seed;
- plain cross-entropy (random sampler, no mixing), once per seed;

each as test AUROC, accuracy, balanced accuracy, minority recall and average
precision, mean ± std over the seeds, and wall time. ``--packing N`` instead
times 24 simple_cnn jobs of 20 epochs with ``RAREFIT_JOBS_PER_GPU=N`` against
the same jobs one at a time; ``--overhead`` measures a small experiment's wall
time against the sum of its jobs' epoch seconds.

    python -m benchmarks.experiments --device cuda --variant full --trials 24
    python -m benchmarks.experiments --device cuda --packing 8
    python -m benchmarks.experiments --device cpu --overhead --epochs 30
    python -m benchmarks.experiments --device cpu --variant full --trials 10 --recipes auto \\
        --objective accuracy --base '{"model": {"arch": "simple_cnn"}}'
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from benchmarks import api_client, common, servers
from benchmarks.imbalance import subsample_minority

METRICS = ("auroc", "accuracy", "balanced_accuracy", "minority_recall", "average_precision")
SMALL_TRAIN = 550
KEY = "bench-key"


QUICK_SIZES = {"train": 300, "val": 100, "test": 100}


def variant_arrays(arrays: common.Arrays, variant: str, *, quick: bool = False) -> common.Arrays:
    if quick:
        arrays = common.subset(arrays, sizes=QUICK_SIZES)
    if variant == "imbalanced":
        return subsample_minority(arrays)
    if variant == "small":
        return common.subset(arrays, sizes={"train": SMALL_TRAIN})
    return arrays


@contextmanager
def service(*, device: str, jobs_per_gpu: int = 1) -> Iterator[httpx.Client]:
    with tempfile.TemporaryDirectory(prefix="rarefit-experiments-") as tmp:
        env = servers.rarefit_env(data_dir=Path(tmp) / "data", api_key=KEY, device=device)
        env.update(RAREFIT_JOBS_PER_GPU=str(jobs_per_gpu), RAREFIT_REAPER_INTERVAL_SECONDS="2")
        env["RAREFIT_MAX_CONCURRENT_JOBS_PER_TENANT"] = "64"
        with (
            servers.rarefit_server("serve", env=env, log_path=Path(tmp) / "serve.log") as server,
            api_client.client(server.url, KEY) as http,
        ):
            yield http


def wait_experiment(http: httpx.Client, experiment_id: str, *, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = http.get(f"/v1/experiments/{experiment_id}").json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            if body["status"] != "succeeded":
                raise RuntimeError(f"experiment {experiment_id} ended {body['status']}: {body['error']}")
            return body
        time.sleep(1.0)
    raise TimeoutError(f"experiment {experiment_id} not finished after {timeout:.0f} s")


def single_jobs(http: httpx.Client, spec: dict[str, Any], seeds: list[int]) -> dict[str, Any]:
    started = time.perf_counter()
    jobs = [api_client.submit_job(http, {**spec, "seed": seed})[0] for seed in seeds]
    tests = [
        http.get(f"/v1/jobs/{api_client.wait_job(http, j['id'], timeout=7200)['id']}/metrics").json() for j in jobs
    ]
    blocks = [metrics["test"] for metrics in tests]
    return {"wall": time.perf_counter() - started, **{m: [b.get(m) for b in blocks] for m in METRICS}}


def auto_experiment(
    http: httpx.Client, dataset_id: str, *, trials: int, seeds: list[int], base: dict, objective: str
) -> dict:
    started = time.perf_counter()
    body = {
        "dataset_id": dataset_id,
        "search": {"strategy": "auto", "trials": trials},
        "seeds": seeds,
        "base": base,
        "objective": {"metric": objective},
    }
    response = http.post("/v1/experiments", json={**body, "budget": {"max_parallel": 4}})
    response.raise_for_status()
    done = wait_experiment(http, response.json()["id"], timeout=6 * 3600)
    best = done["leaderboard"][0]
    return {
        "wall": time.perf_counter() - started,
        "params": best["params"],
        **{m: best["test"].get(m, {}).get("per_seed", []) for m in METRICS},
    }


def compare(args: argparse.Namespace) -> str:
    arrays, _ = common.load_npz(args.data)
    arrays = variant_arrays(arrays, args.variant, quick=args.quick)
    seeds = list(range(args.seeds))
    quick = {"epochs": 1, "optim": {"warmup_epochs": 0}} if args.quick else {}
    given = common.deep_merge(json.loads(args.base), quick)
    rows = []
    with service(device=args.device) as http:
        dataset = api_client.upload_dataset(http, arrays, name=f"pneumonia-{args.variant}")
        plain = {"loss": {"type": "cross_entropy"}, "sampler": {"type": "random"}, "mixing": {"mode": "none"}}
        cases = {
            "defaults": (
                "single-job defaults (only dataset_id)",
                lambda: single_jobs(http, {"dataset_id": dataset["id"], **given}, seeds),
            ),
            "plain": (
                "plain cross-entropy",
                lambda: single_jobs(http, common.deep_merge({"dataset_id": dataset["id"], **plain}, given), seeds),
            ),
            "auto": (
                f"auto, {args.trials} trials (best on val {args.objective})",
                lambda: auto_experiment(
                    http, dataset["id"], trials=args.trials, seeds=seeds, base=given, objective=args.objective
                ),
            ),
        }
        for key in args.recipes:
            name, run = cases[key]
            result = run()
            cells = [_mean_std(result[m]) for m in METRICS]
            rows.append([name, *cells, common.fmt(result["wall"], 0)])
    headers = ["recipe", "test AUC", "test ACC", "balanced acc", "minority recall", "AP", "wall s"]
    note = f"\n\nPneumoniaMNIST variant `{args.variant}`, seeds {seeds}, mean ± sample std over the seeds."
    if given and not args.quick:
        note += f" Every recipe's spec (auto: its base) also sets `{json.dumps(given)}`."
    return common.markdown_table(headers, rows) + note


def packing(args: argparse.Namespace) -> str:
    arrays = variant_arrays(common.load_npz(args.data)[0], "full", quick=args.quick)
    count, epochs = (4, 1) if args.quick else (24, 20)
    spec = {"model": {"arch": "simple_cnn"}, "epochs": epochs, "sampler": {"type": "random"}}
    rows = []
    for per_gpu in sorted({1, args.packing}):
        with service(device=args.device, jobs_per_gpu=per_gpu) as http:
            dataset = api_client.upload_dataset(http, arrays, name="pneumoniamnist")
            result = single_jobs(http, {**spec, "dataset_id": dataset["id"]}, list(range(count)))
        rows.append([f"{count} jobs, RAREFIT_JOBS_PER_GPU={per_gpu}", common.fmt(result["wall"], 1)])
    speedup = float(rows[0][1]) / max(1e-9, float(rows[-1][1]))
    note = f"\n\nsimple_cnn, {epochs} epochs each, PneumoniaMNIST; speed-up {speedup:.2f}× (target ≥ 4× on an H100)."
    return common.markdown_table(["run", "wall s (submit → all succeeded)"], rows) + note


def overhead(args: argparse.Namespace) -> str:
    arrays = variant_arrays(common.load_npz(args.data)[0], "small", quick=args.quick)
    epochs = 1 if args.quick else args.epochs
    base = {"model": {"arch": "simple_cnn"}, "epochs": epochs, "augment": {"rotation": 0, "scale": None}}
    search = {"strategy": "grid", "space": {"loss.type": ["cross_entropy", "focal"]}}
    with service(device=args.device) as http:
        dataset = api_client.upload_dataset(http, arrays, name="pneumonia-small")
        started = time.perf_counter()
        body = {"dataset_id": dataset["id"], "base": base, "search": search, "seeds": [0, 1]}
        response = http.post("/v1/experiments", json=body)
        response.raise_for_status()
        done = wait_experiment(http, response.json()["id"], timeout=3600)
        wall = time.perf_counter() - started
        jobs = [job["job_id"] for row in done["leaderboard"] for job in row["jobs"]]
        training = sum(sum(e["seconds"] for e in http.get(f"/v1/jobs/{j}/metrics").json()["history"]) for j in jobs)
        job_walls = sum(sum(row["seconds"]["per_seed"]) for row in done["leaderboard"])
    rows = [
        [
            f"2 trials × 2 seeds, simple_cnn, {epochs} epochs, {SMALL_TRAIN} train images",
            common.fmt(wall, 1),
            common.fmt(job_walls, 1),
            common.fmt(training, 1),
            f"{100 * (wall - training) / wall:.0f} %",
            f"{100 * (wall - job_walls) / wall:.0f} %",
        ]
    ]
    headers = [
        "experiment",
        "wall s",
        "sum of job wall s",
        "sum of epoch s",
        "overhead vs epochs",
        "overhead vs job walls",
    ]
    return common.markdown_table(headers, rows)


def _mean_std(values: list[float | None]) -> str:
    numbers = [float(v) for v in values if v is not None]
    if not numbers:
        return "–"
    mean, std = common.mean_std(numbers)
    return f"{mean:.3f} ± {std:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--variant", choices=("full", "imbalanced", "small"), default="full")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument(
        "--recipes", nargs="+", choices=("defaults", "plain", "auto"), default=["defaults", "plain", "auto"]
    )
    parser.add_argument("--base", default="{}", help="job-spec fields (JSON) every recipe sets, auto's base too")
    parser.add_argument("--objective", default="balanced_accuracy", help="the auto experiment's objective metric")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--packing", type=int, default=0, help="time packed jobs (this many per GPU) instead")
    parser.add_argument("--overhead", action="store_true", help="time a small experiment against its jobs instead")
    # Per-job costs (process start, data load, final evaluation, export) weigh less in longer jobs:
    # auto gives small datasets 30-epoch jobs.
    parser.add_argument("--epochs", type=int, default=5, help="epochs per job of the --overhead experiment")
    args = parser.parse_args(argv)
    device = common.check_device(args.device)
    if args.quick:
        args.trials, args.seeds = 2, 1
    if args.packing:
        section, markdown = f"experiments-packing-{common.machine_tag(device)}", packing(args)
    elif args.overhead:
        section, markdown = f"experiments-overhead-{common.machine_tag(device)}", overhead(args)
    else:
        section, markdown = f"experiments-{args.variant}-{common.machine_tag(device)}", compare(args)
    common.publish(
        section, markdown, args=args, module="benchmarks.experiments", argv=sys.argv[1:] if argv is None else argv
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
