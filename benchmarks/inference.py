"""Hosted inference and API overhead over real HTTP on loopback.

1. ``rarefit serve`` (embedded default: SQLite database and broker, one
   worker) on a temporary data directory. A PneumoniaMNIST subset is uploaded
   and tiny models are trained through the API (one epoch each).
2. Predict: one 28×28 PNG per request, multipart and base64 JSON, closed-loop
   clients at concurrency 1, 16, 64 (``benchmarks.http_load``): p50/p99
   latency and requests/s, served with ONNX Runtime (``rarefit serve``) and
   eagerly (a ``rarefit api`` process on the same data with
   ``RAREFIT_INFERENCE_RUNTIME=torch``), side by side; beside them
   ``GET /healthz`` and ``GET /v1/jobs/{id}`` at concurrency 1 and each
   model's own forward time (``benchmarks.forward``). The floor is
   ``benchmarks.floor_app`` serving the same downloaded ``model.pt2`` in a
   uvicorn subprocess, measured the same way.
3. Job overhead (``benchmarks.job_overhead``) with the worker warm.
4. Job-status polling: ``GET /v1/jobs/{id}`` against ``rarefit api`` (one
   uvicorn worker per core) on a fresh PostgreSQL database, and for
   reference the embedded SQLite server: capacity with 16 closed-loop
   clients, then latency with requests started at the target rate of 500/s
   (open loop).

The load generator (``benchmarks.http_load``, raw asyncio keep-alive connections)
runs on the same machine as the servers, so on a small machine client and
server share the cores (both rarefit and the floor pay it).

    python -m benchmarks.inference
    python -m benchmarks.inference --predict-only   # step 2 alone (minutes)
    python -m benchmarks.inference --quick --results /tmp/r.md
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import api_client, common, forward, http_load, inference_report, job_overhead, servers

logger = logging.getLogger(__name__)

# `rarefit api` as deployed: one uvicorn worker process per core (docs/operations.md).
API_WORKERS = len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Plan:
    archs: tuple[str, ...]
    concurrencies: tuple[int, ...]
    encodings: tuple[str, ...]
    seconds: float  # per predict measurement
    poll_seconds: float
    poll_repeats: int
    overhead_runs: int
    overhead_epochs: int
    sizes: dict[str, int]


FULL = Plan(
    ("simple_cnn", "resnet18"),
    (1, 16, 64),
    ("multipart", "json"),
    5.0,
    10.0,
    3,
    3,
    2,
    {"train": 512, "val": 128, "test": 128},
)
# --predict-only: the setup (one 28×28 PNG as base64 JSON per request) at the concurrencies the
# targets name, so the ONNX Runtime / eager comparison fits in a few minutes on the 2-core machine.
PREDICT = Plan(("simple_cnn", "resnet18"), (1, 16), ("json",), 5.0, 0.0, 0, 0, 1, FULL.sizes)
QUICK = Plan(("simple_cnn",), (1, 16), ("multipart", "json"), 0.5, 1.0, 1, 1, 1, {"train": 128, "val": 32, "test": 32})


def train_spec(dataset_id: str, arch: str, *, epochs: int) -> dict[str, Any]:
    return {
        "dataset_id": dataset_id,
        "model": {"arch": arch},
        "epochs": epochs,
        "batch_size": 32,
        "sampler": {"type": "weighted"},
        "threshold": {"strategy": "max_f1"},
    }


def trained_models(http: Any, dataset_id: str, plan: Plan, workdir: Path) -> dict[str, dict[str, Any]]:
    """Train one tiny model per arch through the API; download its programs (``model.onnx`` where
    the card names one) and its card."""
    models = {}
    for arch in plan.archs:
        job, _ = api_client.submit_job(http, train_spec(dataset_id, arch, epochs=1))
        done = api_client.wait_job(http, job["id"], timeout=1800)
        card = json.loads(api_client.download_artifact(http, job["id"], "model_card.json"))
        paths = {"torch": workdir / f"{arch}.pt2"}
        paths["torch"].write_bytes(api_client.download_artifact(http, job["id"], "model.pt2"))
        if card["onnx"]["file"]:
            paths["onnxruntime"] = workdir / f"{arch}.onnx"
            paths["onnxruntime"].write_bytes(api_client.download_artifact(http, job["id"], card["onnx"]["file"]))
        models[arch] = {**api_client.model(http, done["model_id"]), "path": paths["torch"], "programs": paths}
        models[arch].update(job_id=job["id"], card=card)
    return models


def _predict_path(info: dict[str, Any]) -> str:
    return f"/v1/models/{info['id']}/predict"


def forward_times(models: dict[str, dict[str, Any]]) -> dict[tuple[str, str], float]:
    """Each model's forward time on one image per runtime it has a program for (servers idle)."""
    times = {}
    for arch, info in models.items():
        shape = (info["card"]["input"]["channels"], info["card"]["input"]["height"], info["card"]["input"]["width"])
        for runtime, path in info["programs"].items():
            times[arch, runtime] = forward.forward_ms(forward.load(path, runtime=runtime), shape=shape, calls=200)
    return times


def baseline_rows(server: str, url: str, headers: dict[str, str], job_id: str, plan: Plan) -> list[dict[str, Any]]:
    """``GET /healthz`` and ``GET /v1/jobs/{id}`` at concurrency 1: the framework and one database read."""
    rows = []
    for name, path in (("GET /healthz", "/healthz"), ("GET /v1/jobs/{id}", f"/v1/jobs/{job_id}")):
        result = http_load.measure(
            base_url=url, headers=headers, request=http_load.get_request(path), concurrency=1, seconds=plan.seconds
        )
        rows.append({"server": server, "request": name, "result": result})
    return rows


def predict_rows(
    server: str, url: str, headers: dict[str, str], path_for: Any, models: dict[str, Any], png: bytes, plan: Plan
) -> list[dict[str, Any]]:
    rows = []
    for arch, info in models.items():
        for encoding in plan.encodings:
            request = http_load.predict_request(path_for(info), png=png, encoding=encoding)
            for concurrency in plan.concurrencies:
                result = http_load.measure(
                    base_url=url, headers=headers, request=request, concurrency=concurrency, seconds=plan.seconds
                )
                rows.append({"server": server, "model": arch, "encoding": encoding, "result": result})
                logger.info(
                    "%s %s %s c=%d: %.1f req/s p50 %.1f ms",
                    server,
                    arch,
                    encoding,
                    concurrency,
                    result.throughput,
                    result.percentile(50),
                )
    return rows


def floor_rows(models: dict[str, Any], png: bytes, plan: Plan, workdir: Path) -> list[dict[str, Any]]:
    rows = []
    for arch, info in models.items():
        with servers.floor_server(
            model_path=info["path"],
            class_names=info["class_names"],
            threshold=info.get("threshold"),
            positive_class=info.get("positive_class"),
            log_path=workdir / f"floor-{arch}.log",
        ) as floor:
            rows += predict_rows("floor", floor.url, {}, lambda _info: "/predict", {arch: info}, png, plan)
    return rows


def poll(url: str, headers: dict[str, str], job_id: str, plan: Plan) -> list[http_load.LoadResult]:
    """Capacity (closed loop, 16 clients), then latency at the target rate (open loop), ``plan.poll_repeats``
    times each: on this shared VM one 10 s window can catch a slow spell."""
    request = http_load.get_request(f"/v1/jobs/{job_id}")
    runs = []
    for _ in range(plan.poll_repeats):
        runs.append(
            http_load.measure(base_url=url, headers=headers, request=request, concurrency=16, seconds=plan.poll_seconds)
        )
        runs.append(
            http_load.measure_rate(
                base_url=url,
                headers=headers,
                request=request,
                rate=inference_report.POLL_RPS_TARGET,
                seconds=plan.poll_seconds,
            )
        )
    return runs


def embedded_part(
    arrays: common.Arrays, plan: Plan, workdir: Path, device: str, *, predict_only: bool
) -> dict[str, Any]:
    key = "rf_bench_" + secrets.token_urlsafe(24)
    data_dir = workdir / "serve-data"
    env = {
        **servers.rarefit_env(data_dir=data_dir, api_key=key, device=device),
        "RAREFIT_INFERENCE_RUNTIME": "onnxruntime",
    }
    log_path = workdir / "serve.log"
    headers = {"Authorization": f"Bearer {key}"}
    overhead: list[dict[str, float | None]] = []
    polling = {}
    with (
        servers.rarefit_server("serve", env=env, log_path=log_path) as server,
        api_client.client(server.url, key) as http,
    ):
        dataset = api_client.upload_dataset(http, arrays, name="bench")
        models = trained_models(http, dataset["id"], plan, workdir)
        if not predict_only:
            overhead = [
                job_overhead.measure_once(
                    http,
                    train_spec(dataset["id"], "simple_cnn", epochs=plan.overhead_epochs),
                    log_path=log_path,
                    database_url=f"sqlite:///{data_dir / 'rarefit.db'}",
                    timeout=1800,
                )
                for _ in range(plan.overhead_runs)
            ]
        png = http_load.png_bytes(arrays["test"][0][0])
        job_id = next(iter(models.values()))["job_id"]
        rows = predict_rows("rarefit onnxruntime", server.url, headers, _predict_path, models, png, plan)
        baselines = baseline_rows("rarefit onnxruntime", server.url, headers, job_id, plan)
        eager_env = {**env, "RAREFIT_INFERENCE_RUNTIME": "torch"}
        with servers.rarefit_server("api", env=eager_env, log_path=workdir / "api-torch.log") as eager:
            rows += predict_rows("rarefit torch", eager.url, headers, _predict_path, models, png, plan)
            baselines += baseline_rows("rarefit torch", eager.url, headers, job_id, plan)
        if not predict_only:
            polling["SQLite (embedded serve)"] = poll(server.url, headers, job_id, plan)
    rows += floor_rows(models, png, plan, workdir)
    return {
        "predict": rows,
        "baselines": baselines,
        "forward": forward_times(models),
        "overhead": overhead,
        "polling": polling,
    }


def postgres_polling(arrays: common.Arrays, plan: Plan, workdir: Path) -> list[http_load.LoadResult]:
    """``rarefit api`` (one uvicorn worker per core) on a fresh PostgreSQL database; a queued job polled."""
    key = "rf_bench_" + secrets.token_urlsafe(24)
    with servers.temp_postgres_database() as url:
        env = servers.rarefit_env(data_dir=workdir / "pg-data", api_key=key, device="cpu", database_url=url)
        with (
            servers.rarefit_server("api", env=env, log_path=workdir / "api-pg.log", api_workers=API_WORKERS) as server,
            api_client.client(server.url, key) as http,
        ):
            dataset = api_client.upload_dataset(http, arrays, name="bench-pg")
            job, _ = api_client.submit_job(http, train_spec(dataset["id"], "simple_cnn", epochs=1))
            return poll(server.url, {"Authorization": f"Bearer {key}"}, job["id"], plan)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = common.add_common_args(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL polling measurement")
    parser.add_argument(
        "--predict-only", action="store_true", help="predict, baselines and forward times only (no polling, overhead)"
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep servers' logs and data in this folder")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the set-up client logs every request at INFO
    device = common.check_device(args.device)
    plan = QUICK if args.quick else PREDICT if args.predict_only else FULL
    arrays, _names = common.load_npz(args.data)
    arrays = common.subset(arrays, sizes=plan.sizes, seed=0)
    with tempfile.TemporaryDirectory(prefix="rarefit-bench-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results = embedded_part(arrays, plan, workdir, device.type, predict_only=args.predict_only)
        if args.no_postgres or args.predict_only:
            logger.info("PostgreSQL polling skipped (--no-postgres)")
        elif servers.postgres_available():
            results["polling"]["PostgreSQL (rarefit api)"] = postgres_polling(arrays, plan, workdir)
        else:
            logger.warning(
                "PostgreSQL not reachable at %s; polling measured on SQLite only", servers.POSTGRES_ADMIN_URL
            )
    markdown = inference_report.report(
        results, plan_seconds=plan.seconds, poll_seconds=plan.poll_seconds, api_workers=API_WORKERS
    )
    section = "inference-predict" if args.predict_only else "inference"
    common.publish(
        f"{section}-{common.machine_tag(device)}", markdown, args=args, module="benchmarks.inference", argv=argv
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
