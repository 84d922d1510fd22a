"""``GET /metrics``: the API processes' own series plus what the database and the broker know.

Everything about jobs is read from the database at scrape time, so it is
right whichever host ran the job and however many API processes there are:
jobs by state, finished job and epoch durations, the age of each running
job's last heartbeat (by worker), webhook deliveries by state, and the
broker's queue depths.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from celery import Celery
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector
from sqlalchemy.orm import Session, sessionmaker

from service.db import aware
from service.queue import queue_depths
from service.repository import stats

logger = logging.getLogger(__name__)

EPOCH_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
JOB_BUCKETS = (10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 3 * 3600.0, 6 * 3600.0, 12 * 3600.0, 24 * 3600.0)


class DatabaseCollector(Collector):
    """The job-side series, read from the database (and the broker) when scraped."""

    def __init__(self, *, session_factory: sessionmaker[Session], celery_app: Celery, lease_seconds: float) -> None:
        self.session_factory, self.celery_app, self.lease_seconds = session_factory, celery_app, lease_seconds

    def collect(self) -> Iterator[Metric]:
        with self.session_factory() as session:
            yield _gauge("rarefit_jobs", "jobs by state", "state", stats.jobs_by_state(session))
            jobs = stats.job_seconds(session, bounds=JOB_BUCKETS)
            yield _histogram("rarefit_job_duration_seconds", "finished jobs, first start to finish", JOB_BUCKETS, jobs)
            epochs = stats.epoch_seconds(session, bounds=EPOCH_BUCKETS)
            yield _histogram("rarefit_epoch_duration_seconds", "recorded training epochs", EPOCH_BUCKETS, epochs)
            ages = self._heartbeat_ages(session)
            yield _gauge(
                "rarefit_worker_heartbeat_age_seconds", "seconds since each busy worker's heartbeat", "worker", ages
            )
            deliveries = stats.webhook_deliveries_by_state(session)
        yield _gauge("rarefit_webhook_deliveries", "webhook deliveries by state", "state", deliveries)
        yield _gauge("rarefit_queue_depth", "messages waiting in the broker", "queue", self._depths())

    def _heartbeat_ages(self, session: Session) -> dict[str, float]:
        # A heartbeat renews the lease to now + lease_seconds, so the last one was lease_seconds before it expires.
        now, ages = datetime.now(UTC), {}
        for worker, expires in stats.running_leases(session):
            beat = aware(expires) - timedelta(seconds=self.lease_seconds)
            ages[worker] = max(ages.get(worker, 0.0), (now - beat).total_seconds())
        return ages

    def _depths(self) -> dict[str, int]:
        try:
            return queue_depths(self.celery_app)
        except Exception as exc:  # a broker outage must not break the scrape; the series goes missing
            logger.warning("metrics: broker unreachable for queue depths: %s", type(exc).__name__)
            return {}


def _gauge(name: str, documentation: str, label: str, values: dict[str, float] | dict[str, int]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _histogram(name: str, documentation: str, bounds: tuple[float, ...], values: stats.Distribution) -> Metric:
    buckets = [(str(bound), count) for bound, count in zip(bounds, values.buckets, strict=True)]
    return HistogramMetricFamily(
        name, documentation, buckets=[*buckets, ("+Inf", values.count)], sum_value=values.total
    )


def render(collector: DatabaseCollector) -> bytes:
    """The text exposition of this process's (or all processes') own series plus the database's."""
    registry = CollectorRegistry()
    try:
        MultiProcessCollector(registry)  # every API process's samples, when a parent set the directory up
    except ValueError:
        registry = CollectorRegistry()
        registry.register(_Forward(REGISTRY))
    registry.register(collector)
    return generate_latest(registry)


class _Forward(Collector):
    """The default registry's series (this process only), inside a scrape's own registry."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        yield from self.source.collect()
