"""Markdown for ``benchmarks.inference``: predict latency/throughput, targets, polling and job overhead."""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks import common, job_overhead
from benchmarks.http_load import LoadResult

P50_TARGET_MS, P99_TARGET_MS, SCALE_TARGET = 10.0, 30.0, 3.0
P50_TARGET_BY_MODEL_MS = {"simple_cnn": 3.0, "resnet18": 10.0}  # the per-model p50 at c=1
AROUND_MODEL_MS = 1.0  # predict p50 may cost GET /v1/jobs/{id} p50 + forward + this much
POLL_RPS_TARGET, POLL_P99_TARGET_MS, OVERHEAD_TARGET_S = 500.0, 50.0, 2.0


def _key(row: dict[str, Any]) -> tuple[str, str, int]:
    return row["model"], row["encoding"], row["result"].concurrency


def predict_table(rows: list[dict[str, Any]]) -> str:
    floor = {_key(r): r["result"] for r in rows if r["server"] == "floor"}
    headers = [
        "server",
        "model",
        "encoding",
        "concurrency",
        "requests",
        "p50 ms",
        "p99 ms",
        "req/s",
        "errors",
        "req/s vs floor",
    ]
    lines = []
    for row in rows:
        result: LoadResult = row["result"]
        reference = floor.get(_key(row)) if row["server"] != "floor" else None
        ratio = common.fmt(result.throughput / reference.throughput, 2) if reference else "–"
        lines.append(
            [
                row["server"],
                row["model"],
                row["encoding"],
                result.concurrency,
                result.requests,
                common.fmt(result.percentile(50), 2),
                common.fmt(result.percentile(99), 2),
                common.fmt(result.throughput, 1),
                result.errors,
                ratio,
            ]
        )
    return common.markdown_table(headers, lines)


def _check(name: str, measured: float | None, target: str, met: bool | None, unit: str = "") -> list[str]:
    value = "–" if measured is None else f"{measured:.2f}{unit}"
    return [name, value, target, "–" if met is None else ("yes" if met else "no")]


def _runtime(server: str) -> str:
    return server.split(" ", 1)[1] if server.startswith("rarefit ") else server


def predict_target_rows(results: dict[str, Any]) -> list[list[str]]:
    """Latency and scaling per served runtime, and the predict-vs-poll budget."""
    polls = {_runtime(r["server"]): r["result"] for r in results["baselines"] if r["request"] == "GET /v1/jobs/{id}"}
    lines = []
    for server in dict.fromkeys(r["server"] for r in results["predict"] if r["server"] != "floor"):
        ours = {_key(r): r["result"] for r in results["predict"] if r["server"] == server}
        runtime = _runtime(server)
        for model, encoding in sorted({(m, e) for m, e, _ in ours}):
            single = ours.get((model, encoding, 1))
            if single is None:
                continue
            name = f"{runtime} {model} {encoding}"
            p50, p99 = single.percentile(50), single.percentile(99)
            p50_target = P50_TARGET_BY_MODEL_MS.get(model, P50_TARGET_MS)
            lines.append(_check(f"{name} p50 at c=1", p50, f"≤ {p50_target:g} ms", p50 <= p50_target, " ms"))
            lines.append(_check(f"{name} p99 at c=1", p99, f"≤ {P99_TARGET_MS:g} ms", p99 <= P99_TARGET_MS, " ms"))
            sixteen = ours.get((model, encoding, 16))
            if sixteen is not None:
                scale = sixteen.throughput / single.throughput
                lines.append(
                    _check(f"{name} req/s c=16 ÷ c=1", scale, f"≥ {SCALE_TARGET:g}×", scale >= SCALE_TARGET, "×")
                )
            forward = results["forward"].get((model, runtime))
            poll = polls.get(runtime)
            if forward is not None and poll is not None:
                budget = poll.percentile(50) + forward + AROUND_MODEL_MS
                lines.append(
                    _check(
                        f"{name} p50 at c=1 vs GET job p50 + forward + {AROUND_MODEL_MS:g} ms",
                        p50,
                        f"≤ {budget:.2f} ms",
                        p50 <= budget,
                        " ms",
                    )
                )
    return lines


def target_rows(results: dict[str, Any]) -> list[list[str]]:
    lines = predict_target_rows(results)
    for name, runs in results["polling"].items():
        closed = [r for r in runs if r.offered_rate is None]
        opened = [r for r in runs if r.offered_rate is not None]
        capacity = statistics.median(r.throughput for r in closed)
        lines.append(
            _check(
                f"polling {name} capacity req/s (c=16, median of {len(closed)})",
                capacity,
                f"≥ {POLL_RPS_TARGET:g}",
                capacity >= POLL_RPS_TARGET,
            )
        )
        rate = opened[0].offered_rate
        answered = statistics.median(r.throughput for r in opened)
        # Sustained: the server answered (almost) everything offered, in time.
        lines.append(
            _check(
                f"polling {name} answered req/s at {rate:g}/s offered (median of {len(opened)})",
                answered,
                f"≥ {0.98 * rate:g}",
                all(r.errors == 0 for r in opened) and answered >= 0.98 * rate,
            )
        )
        p99 = statistics.median(r.percentile(99) for r in opened)
        lines.append(
            _check(
                f"polling {name} p99 at {rate:g}/s offered (median of {len(opened)})",
                p99,
                f"≤ {POLL_P99_TARGET_MS:g} ms",
                p99 <= POLL_P99_TARGET_MS,
                " ms",
            )
        )
    if not results["overhead"]:
        return lines
    overhead = job_overhead.summarise(results["overhead"])
    first = overhead["post_to_first_step_log"]
    first = overhead["post_to_first_step_rows"] if first is None else first
    last = overhead["last_epoch_to_succeeded"]
    lines.append(
        _check(
            "POST /v1/jobs → first training step",
            first,
            f"< {OVERHEAD_TARGET_S:g} s",
            None if first is None else first < OVERHEAD_TARGET_S,
            " s",
        )
    )
    lines.append(
        _check(
            "last epoch → succeeded",
            last,
            f"< {OVERHEAD_TARGET_S:g} s",
            None if last is None else last < OVERHEAD_TARGET_S,
            " s",
        )
    )
    return lines


def polling_table(polling: dict[str, list[LoadResult]]) -> str:
    headers = ["database", "load", "requests", "answered req/s", "p50 ms", "p99 ms", "errors"]
    rows = [
        [
            name,
            _load_label(r),
            r.requests,
            common.fmt(r.throughput, 1),
            common.fmt(r.percentile(50), 2),
            common.fmt(r.percentile(99), 2),
            r.errors,
        ]
        for name, runs in polling.items()
        for r in runs
    ]
    return common.markdown_table(headers, rows)


def baseline_table(results: dict[str, Any]) -> str:
    """The requests around the model, and the model alone."""
    headers = ["server", "request", "requests", "p50 ms", "p99 ms"]
    rows = [
        [
            r["server"],
            r["request"],
            r["result"].requests,
            common.fmt(r["result"].percentile(50), 2),
            common.fmt(r["result"].percentile(99), 2),
        ]
        for r in results["baselines"]
    ]
    rows += [
        [runtime, f"{model} forward, one image, in process (median of 200)", 200, common.fmt(ms, 2), "–"]
        for (model, runtime), ms in sorted(results["forward"].items())
    ]
    return common.markdown_table(headers, rows)


def _load_label(result: LoadResult) -> str:
    if result.offered_rate is None:
        return f"closed loop, {result.concurrency} clients"
    return f"open loop, {result.offered_rate:g} req/s offered ({result.concurrency} connections)"


def overhead_table(runs: list[dict[str, float | None]]) -> str:
    keys = ("post_to_claimed", "post_to_first_step_log", "post_to_first_step_rows", "last_epoch_to_succeeded")
    headers = [
        "run",
        "POST → claimed s",
        "POST → first step s (runner log)",
        "POST → first step s (epoch row)",
        "last epoch → succeeded s",
    ]
    rows = [[str(i + 1), *[common.fmt(run[k], 3) for k in keys]] for i, run in enumerate(runs)]
    median = job_overhead.summarise(runs)
    rows.append(["median", *[common.fmt(median[k], 3) for k in keys]])
    return common.markdown_table(headers, rows)


def report(results: dict[str, Any], *, plan_seconds: float, poll_seconds: float, api_workers: int) -> str:
    parts = [
        "### Targets\n\n" + common.markdown_table(["check", "measured", "target", "met"], target_rows(results)),
        f"### Predict (one 28×28 PNG per request, {plan_seconds:g} s per row after a 0.5 s warm-up)\n\n"
        + predict_table(results["predict"])
        + "\n\nrarefit onnxruntime = `rarefit serve` serving `model.onnx` on ONNX Runtime; rarefit torch = "
        "`rarefit api` on the same data with `RAREFIT_INFERENCE_RUNTIME=torch` (the `model.pt2` program, eager). "
        "floor = `benchmarks/floor_app.py`: the same `model.pt2` in a bare FastAPI endpoint "
        "(no auth, database, cache or batching). Client and servers share this machine's cores.",
        f"### Around the model (concurrency 1, {plan_seconds:g} s per row)\n\n" + baseline_table(results),
    ]
    if results["polling"]:
        parts.append(
            f"### Job-status polling (`GET /v1/jobs/{{id}}`, {poll_seconds:g} s per row)\n\n"
            + polling_table(results["polling"])
            + "\n\nClosed loop: each client sends its next request when the last is answered (capacity). "
            "Open loop: requests start on a fixed schedule whatever the answers, and latency runs from each "
            "request's scheduled start (wrk2's method), so the target reads \"sustains 500 req/s at p99 ≤ 50 ms\". "
            "The two alternate, repeated as listed; the target checks take the median over the repeats. "
            f"PostgreSQL: `rarefit api --workers {api_workers}` (one uvicorn worker per core); "
            "SQLite: `rarefit serve` (one API process beside its worker)."
        )
    if results["overhead"]:
        parts.append(
            "### Job overhead (simple_cnn, warm embedded worker)\n\n"
            + overhead_table(results["overhead"])
            + "\n\n"
            + (job_overhead.__doc__ or "").split("\n\n", 1)[1].strip()
        )
    return "\n\n".join(parts)
