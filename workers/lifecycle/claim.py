"""Claim a job and see it through: heartbeat, shutdown flag, and every exception turned into an ``Outcome``.

``run_job`` owns the transitions of a job it claimed (docs/architecture.md,
"Job lifecycle"); ``workers.lifecycle.outcome`` says what each outcome leaves
in the database.
"""

from __future__ import annotations

import logging

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from service import logs
from service.config import Settings
from service.db import make_engine, make_session_factory, transaction
from service.models import Job, utcnow
from service.repository import leases
from service.storage import BlobStore, make_blob_store
from workers.lifecycle.dbretry import InfrastructureError, retry_db
from workers.lifecycle.failures import classify_error
from workers.lifecycle.heartbeat import Heartbeat
from workers.lifecycle.outcome import Outcome
from workers.lifecycle.run import JobRun, LeaseLost
from workers.lifecycle.shutdown import shutdown_flag
from workers.staging import job_staging

logger = logging.getLogger(__name__)


def run_job(
    job_id: str,
    *,
    settings: Settings,
    worker_id: str,
    session_factory: sessionmaker[Session] | None = None,
    store: BlobStore | None = None,
    celery_app: Celery | None = None,
) -> Outcome:
    """Run job ``job_id`` to an ``Outcome``; never raises for job errors."""
    engine = None if session_factory is not None else make_engine(settings.sqlalchemy_url)
    factory = session_factory or make_session_factory(engine)
    named = logs.job_id.set(job_id)  # every log line of this job names it (RAREFIT_LOG_FORMAT=json: "job_id")
    try:
        return _claim_and_run(
            job_id,
            settings=settings,
            worker_id=worker_id,
            factory=factory,
            store=store or make_blob_store(settings),
            celery_app=celery_app,
        )
    finally:
        logs.job_id.reset(named)
        if engine is not None:
            engine.dispose()


def _claim_and_run(
    job_id: str,
    *,
    settings: Settings,
    worker_id: str,
    factory: sessionmaker[Session],
    store: BlobStore,
    celery_app: Celery | None,
) -> Outcome:
    try:
        job = retry_db(
            lambda: _claim(factory, job_id, worker_id, settings),
            budget_seconds=settings.lease_seconds,
            what=f"claim job {job_id}",
        )
    except InfrastructureError:
        logger.exception("job %s: could not reach the database to claim it", job_id)
        return Outcome.abandoned
    if job is None:
        logger.info("job %s: not claimable (duplicate delivery, or no longer queued); skipping", job_id)
        return Outcome.skipped
    logger.info("job %s: claimed by %s (attempt %d)", job_id, worker_id, job.attempts)
    run = JobRun(
        job=job, settings=settings, worker_id=worker_id, session_factory=factory, store=store, celery_app=celery_app
    )
    return _supervise(run)


def _claim(factory: sessionmaker[Session], job_id: str, worker_id: str, settings: Settings) -> Job | None:
    with transaction(factory) as session:
        return leases.claim_job(
            session, job_id=job_id, worker_id=worker_id, lease_seconds=settings.lease_seconds, now=utcnow()
        )


def _supervise(run: JobRun) -> Outcome:
    settings = run.settings
    heartbeat = Heartbeat(
        session_factory=run.session_factory,
        job_id=run.job_id,
        worker_id=run.worker_id,
        lease_seconds=settings.lease_seconds,
        interval_seconds=min(settings.heartbeat_seconds, settings.lease_seconds / 3),
    )
    heartbeat.start()
    try:
        # The run's own folder under this host's scratch dir (never another host's disk); always removed.
        with shutdown_flag() as shutdown, job_staging(settings.scratch_path, job_id=run.job_id) as staging:
            return run.execute(heartbeat=heartbeat, shutdown=shutdown, staging=staging)
    except LeaseLost:
        logger.warning("job %s: lease lost; another worker owns it now", run.job_id)
        return Outcome.lease_lost
    except Exception as exc:
        return _handle_error(run, exc)
    finally:
        heartbeat.stop()


def _handle_error(run: JobRun, exc: Exception) -> Outcome:
    failure = classify_error(exc, device=run.device_type)
    if failure is None:
        logger.error("job %s: infrastructure unavailable; leaving it to the reaper", run.job_id, exc_info=exc)
        return Outcome.abandoned
    error_type, message = failure
    logger.warning("job %s failed: %s: %s", run.job_id, error_type, message, exc_info=exc)
    try:
        return run.fail(error_type=error_type, message=message)
    except LeaseLost:
        return Outcome.lease_lost
    except Exception:
        logger.exception("job %s: could not record the failure; leaving it to the reaper", run.job_id)
        return Outcome.abandoned
