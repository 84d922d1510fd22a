"""Job overhead on a warm embedded worker: POST /v1/jobs → first training step, last epoch → succeeded.

Clocks: the client's UTC time just before the POST, and the server's
timestamps (same machine, same clock). Methods, all recorded per job:

- *POST → claimed*: the job's ``started_at`` (set by the worker's claim) minus the POST time.
- *POST → first step (runner log)*: the worker logs ``job <id>: first training step
  X s after created`` just before its first optimiser step; X is measured
  from the job row's ``created_at``, to which the POST's own latency (client send → row
  insert) is added.
- *POST → first step (epoch row)*: the epoch-1 metrics row's ``created_at``
  minus that epoch's ``seconds`` (the start of epoch 1, i.e. its first step)
  minus the POST time; used when the log line is missing, and a cross-check.
- *last epoch → succeeded*: ``finished_at`` minus the last metrics row's
  ``created_at`` (final evaluation, export, artefact upload, model registration).
"""

from __future__ import annotations

import re
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from benchmarks import api_client


def logged_first_step(log_text: str, job_id: str) -> float | None:
    """Seconds from the job row's creation to its first step, from the runner's log line."""
    match = re.search(rf"job {re.escape(job_id)}: first training step .*?([0-9.]+) s after created", log_text)
    return float(match.group(1)) if match else None


def epoch_rows(database_url: str, job_id: str) -> list[tuple[int, datetime, float]]:
    """``(epoch, created_at UTC, seconds)`` of the job's metrics rows, read straight from the database."""
    from sqlalchemy import select

    from service.db import make_engine
    from service.models import EpochMetrics

    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(EpochMetrics.epoch, EpochMetrics.created_at, EpochMetrics.seconds)
                .where(EpochMetrics.job_id == job_id)
                .order_by(EpochMetrics.epoch)
            ).all()
    finally:
        engine.dispose()
    return [(int(e), c if c.tzinfo else c.replace(tzinfo=timezone.utc), float(s)) for e, c, s in rows]


def measure_once(
    http: httpx.Client, spec: dict[str, Any], *, log_path: Path, database_url: str, timeout: float
) -> dict[str, float | None]:
    """Submit one job, wait for it, and return its overhead numbers in seconds."""
    job, sent_at = api_client.submit_job(http, spec)
    done = api_client.wait_job(http, job["id"], timeout=timeout)
    created = api_client.parse_time(done["created_at"])
    started = api_client.parse_time(done["started_at"])
    finished = api_client.parse_time(done["finished_at"])
    rows = epoch_rows(database_url, job["id"])
    if not rows or created is None or started is None or finished is None:
        raise RuntimeError(f"job {job['id']} has no epoch rows or timestamps: {done}")
    logged = logged_first_step(log_path.read_text(encoding="utf-8", errors="replace"), job["id"])
    first_epoch, last_epoch = rows[0], rows[-1]
    post_latency = (created - sent_at).total_seconds()
    return {
        "post_to_claimed": (started - sent_at).total_seconds(),
        "post_to_first_step_log": None if logged is None else post_latency + logged,
        "post_to_first_step_rows": (first_epoch[1] - sent_at).total_seconds() - first_epoch[2],
        "last_epoch_to_succeeded": (finished - last_epoch[1]).total_seconds(),
    }


def summarise(runs: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Median of each quantity over the runs (``None`` where no run has it)."""
    out: dict[str, float | None] = {}
    for key in runs[0]:
        values = [r[key] for r in runs if r[key] is not None]
        out[key] = float(statistics.median(values)) if values else None
    return out
