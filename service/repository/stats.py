"""Aggregates for ``GET /metrics``, computed in the database (the truth, whichever host did the work).

Histograms come back as cumulative bucket counts (``count <= bound`` for each
bound), their total count and their sum: what a Prometheus histogram holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.elements import ColumnElement

from service.models import EpochMetrics, Job, JobStatus, WebhookDelivery


@dataclass(frozen=True)
class Distribution:
    buckets: list[int]  # cumulative: how many values are <= each bound
    count: int
    total: float


def jobs_by_state(session: Session) -> dict[str, int]:
    """Every job state with its number of jobs (0 for a state with none)."""
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    counts = {JobStatus(status).value: int(n) for status, n in rows}
    return {state.value: counts.get(state.value, 0) for state in JobStatus}


def webhook_deliveries_by_state(session: Session) -> dict[str, int]:
    rows = session.execute(select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)).all()
    return {str(status): int(n) for status, n in rows}


def running_leases(session: Session) -> list[tuple[str, datetime]]:
    """``(worker_id, lease_expires_at)`` of every running job."""
    query = select(Job.worker_id, Job.lease_expires_at).where(
        Job.status == JobStatus.running, Job.worker_id.is_not(None), Job.lease_expires_at.is_not(None)
    )
    return [(str(worker), expires) for worker, expires in session.execute(query).all() if expires is not None]


def epoch_seconds(session: Session, *, bounds: Sequence[float]) -> Distribution:
    """The distribution of recorded epoch durations."""
    return _distribution(session, EpochMetrics.seconds, bounds=bounds, where=EpochMetrics.seconds.is_not(None))


def job_seconds(session: Session, *, bounds: Sequence[float]) -> Distribution:
    """The distribution of finished jobs' wall-clock time, from first start to finish."""
    seconds: ColumnElement[Any]
    if session.get_bind().dialect.name == "postgresql":
        seconds = func.extract("epoch", Job.finished_at - Job.started_at)
    else:  # SQLite keeps datetimes as text; julianday counts days
        seconds = (func.julianday(Job.finished_at) - func.julianday(Job.started_at)) * 86400.0
    return _distribution(
        session, seconds, bounds=bounds, where=Job.finished_at.is_not(None) & Job.started_at.is_not(None)
    )


def _distribution(
    session: Session,
    value: ColumnElement[Any] | InstrumentedAttribute[float],
    *,
    bounds: Sequence[float],
    where: ColumnElement[bool],
) -> Distribution:
    columns = [func.coalesce(func.sum(case((value <= bound, 1), else_=0)), 0) for bound in bounds]
    row = session.execute(select(*columns, func.count(), func.coalesce(func.sum(value), 0.0)).where(where)).one()
    return Distribution(buckets=[int(n) for n in row[:-2]], count=int(row[-2]), total=float(row[-1]))
