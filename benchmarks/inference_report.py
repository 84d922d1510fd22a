"""Markdown for ``benchmarks.inference``: predict latency/throughput, targets, polling and job overhead."""

from __future__ import annotations

from typing import Any

from benchmarks import common, job_overhead
from benchmarks.http_load import LoadResult

P50_TARGET_MS, P99_TARGET_MS, SCALE_TARGET = 10.0, 30.0, 3.0
POLL_RPS_TARGET, POLL_P99_TARGET_MS, OVERHEAD_TARGET_S = 500.0, 50.0, 2.0


def _key(row: dict[str, Any]) -> tuple[str, str, int]:
    return row["model"], row["encoding"], row["result"].concurrency


def predict_table(rows: list[dict[str, Any]]) -> str:
    floor = {_key(r): r["result"] for r in rows if r["server"] == "floor"}
    headers = ["server", "model", "encoding", "concurrency", "requests", "p50 ms", "p99 ms", "req/s", "errors",
               "req/s vs floor"]
    lines = []
    for row in rows:
        result: LoadResult = row["result"]
        reference = floor.get(_key(row)) if row["server"] != "floor" else None
        ratio = common.fmt(result.throughput / reference.throughput, 2) if reference else "–"
        lines.append([row["server"], row["model"], row["encoding"], result.concurrency, result.requests,
                      common.fmt(result.percentile(50), 2), common.fmt(result.percentile(99), 2),
                      common.fmt(result.throughput, 1), result.errors, ratio])
    return common.markdown_table(headers, lines)


def _check(name: str, measured: float | None, target: str, met: bool | None, unit: str = "") -> list[str]:
    value = "–" if measured is None else f"{measured:.2f}{unit}"
    return [name, value, target, "–" if met is None else ("yes" if met else "no")]


def target_rows(results: dict[str, Any]) -> list[list[str]]:
    ours = {_key(r): r["result"] for r in results["predict"] if r["server"] == "rarefit"}
    lines = []
    for model, encoding in sorted({(m, e) for m, e, _ in ours}):
        single = ours.get((model, encoding, 1))
        if single is None:
            continue
        p50, p99 = single.percentile(50), single.percentile(99)
        lines.append(_check(f"{model} {encoding} p50 at c=1", p50, f"≤ {P50_TARGET_MS:g} ms", p50 <= P50_TARGET_MS, " ms"))
        lines.append(_check(f"{model} {encoding} p99 at c=1", p99, f"≤ {P99_TARGET_MS:g} ms", p99 <= P99_TARGET_MS, " ms"))
        sixteen = ours.get((model, encoding, 16))
        if sixteen is not None:
            scale = sixteen.throughput / single.throughput
            lines.append(_check(f"{model} {encoding} req/s c=16 ÷ c=1", scale, f"≥ {SCALE_TARGET:g}×",
                                scale >= SCALE_TARGET, "×"))
    for name, result in results["polling"].items():
        lines.append(_check(f"polling {name} req/s (c=16)", result.throughput, f"≥ {POLL_RPS_TARGET:g}",
                            result.throughput >= POLL_RPS_TARGET))
        p99 = result.percentile(99)
        lines.append(_check(f"polling {name} p99 (c=16)", p99, f"≤ {POLL_P99_TARGET_MS:g} ms",
                            p99 <= POLL_P99_TARGET_MS, " ms"))
    overhead = job_overhead.summarise(results["overhead"])
    first = overhead["post_to_first_step_log"]
    first = overhead["post_to_first_step_rows"] if first is None else first
    last = overhead["last_epoch_to_succeeded"]
    lines.append(_check("POST /v1/jobs → first training step", first, f"< {OVERHEAD_TARGET_S:g} s",
                        None if first is None else first < OVERHEAD_TARGET_S, " s"))
    lines.append(_check("last epoch → succeeded", last, f"< {OVERHEAD_TARGET_S:g} s",
                        None if last is None else last < OVERHEAD_TARGET_S, " s"))
    return lines


def polling_table(polling: dict[str, LoadResult]) -> str:
    headers = ["database", "concurrency", "requests", "req/s", "p50 ms", "p99 ms", "errors"]
    rows = [[name, r.concurrency, r.requests, common.fmt(r.throughput, 1), common.fmt(r.percentile(50), 2),
             common.fmt(r.percentile(99), 2), r.errors] for name, r in polling.items()]
    return common.markdown_table(headers, rows)


def overhead_table(runs: list[dict[str, float | None]]) -> str:
    keys = ("post_to_claimed", "post_to_first_step_log", "post_to_first_step_rows", "last_epoch_to_succeeded")
    headers = ["run", "POST → claimed s", "POST → first step s (runner log)", "POST → first step s (epoch row)",
               "last epoch → succeeded s"]
    rows = [[str(i + 1), *[common.fmt(run[k], 3) for k in keys]] for i, run in enumerate(runs)]
    median = job_overhead.summarise(runs)
    rows.append(["median", *[common.fmt(median[k], 3) for k in keys]])
    return common.markdown_table(headers, rows)


def report(results: dict[str, Any], *, plan_seconds: float, poll_seconds: float) -> str:
    return "\n\n".join([
        "### Targets\n\n" + common.markdown_table(["check", "measured", "target", "met"], target_rows(results)),
        f"### Predict (one 28×28 PNG per request, {plan_seconds:g} s per row after a 0.5 s warm-up)\n\n"
        + predict_table(results["predict"])
        + "\n\nfloor = `benchmarks/floor_app.py`: the same `model.pt2` in a bare FastAPI endpoint "
        "(no auth, database, cache or batching). Client and servers share this machine's cores.",
        f"### Job-status polling (`GET /v1/jobs/{{id}}`, {poll_seconds:g} s)\n\n" + polling_table(results["polling"]),
        "### Job overhead (simple_cnn, warm embedded worker)\n\n" + overhead_table(results["overhead"])
        + "\n\n" + (job_overhead.__doc__ or "").split("\n\n", 1)[1].strip(),
    ])
