"""Claim a job and see it through: heartbeat, shutdown flag, and every exception turned into an outcome.

``run_job`` owns the transitions of a job it claimed (docs/architecture.md,
"Job lifecycle"). Outcomes, and what the database says afterwards:

- ``skipped``: nothing to claim (a duplicate delivery, or already finished).
- ``succeeded``: artefacts stored, model registered, job ``succeeded``.
- ``failed``: the job cannot succeed (bad data, impossible spec, missing init
  weights, out of memory, time limit, a full disk or object store, an object
  store unreachable past its retry budget): ``failed`` with the error class
  (``storage_full``, ``storage_unavailable`` for the storage faults) and a
  readable message (no server paths, no tracebacks).
- ``cancelled``: the cancel flag stopped it within one batch.
- ``released``: SIGTERM (graceful shutdown): back to ``queued`` with its
  checkpoint, attempt not counted, message re-sent for another worker.
- ``lease_lost``: another worker owns the job now; stop without writing.
- ``abandoned``: the database or broker stayed unreachable; the job is left
  ``running`` so its lease expires and the reaper retries it (``max_attempts``).
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from celery import Celery
from kombu.exceptions import OperationalError as BrokerOperationalError
from sqlalchemy.orm import Session, sessionmaker

from service import logs
from service.config import Settings
from service.db import make_engine, make_session_factory, transaction
from service.models import Job, utcnow
from service.repository import leases
from service.storage import BlobStore, StorageUnavailable, full_cause, make_blob_store
from workers.lifecycle.dbretry import InfrastructureError, is_connection_error, retry_db
from workers.lifecycle.heartbeat import Heartbeat
from workers.lifecycle.run import JobRun, LeaseLost
from workers.lifecycle.shutdown import shutdown_flag

logger = logging.getLogger(__name__)

_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.-]+/)+[\w.-]*")
STORAGE_FULL = "storage_full"
STORAGE_UNAVAILABLE = "storage_unavailable"
OUTCOMES = ("skipped", "succeeded", "failed", "cancelled", "released", "lease_lost", "abandoned")
OOM_ADVICE = (
    "the job ran out of memory on the worker's {device}; try a smaller batch_size, a smaller "
    "model.image_size or a smaller model.arch"
)


def run_job(
    job_id: str,
    *,
    settings: Settings,
    worker_id: str,
    session_factory: sessionmaker[Session] | None = None,
    store: BlobStore | None = None,
    celery_app: Celery | None = None,
) -> str:
    """Run job ``job_id`` to one of ``OUTCOMES`` (see the module docstring); never raises for job errors."""
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
) -> str:
    try:
        job = retry_db(
            lambda: _claim(factory, job_id, worker_id, settings),
            budget_seconds=settings.lease_seconds,
            what=f"claim job {job_id}",
        )
    except InfrastructureError:
        logger.exception("job %s: could not reach the database to claim it", job_id)
        return "abandoned"
    if job is None:
        logger.info("job %s: not claimable (duplicate delivery, or no longer queued); skipping", job_id)
        return "skipped"
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


def _supervise(run: JobRun) -> str:
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
        with shutdown_flag() as shutdown, _staging(settings, run.job_id) as staging:
            return run.execute(heartbeat=heartbeat, shutdown=shutdown, staging=staging)
    except LeaseLost:
        logger.warning("job %s: lease lost; another worker owns it now", run.job_id)
        return "lease_lost"
    except Exception as exc:
        return _handle_error(run, exc)
    finally:
        heartbeat.stop()


@contextmanager
def _staging(settings: Settings, job_id: str) -> Iterator[Path]:
    """This run's own folder under the host's scratch dir (never another host's disk); always removed."""
    settings.scratch_path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"job-{job_id}-", dir=settings.scratch_path) as folder:
        yield Path(folder)


def _handle_error(run: JobRun, exc: Exception) -> str:
    failure = classify_error(exc, device=run.device_type)
    if failure is None:
        logger.error("job %s: infrastructure unavailable; leaving it to the reaper", run.job_id, exc_info=exc)
        return "abandoned"
    error_type, message = failure
    logger.warning("job %s failed: %s: %s", run.job_id, error_type, message, exc_info=exc)
    try:
        return run.fail(error_type=error_type, message=message)
    except LeaseLost:
        return "lease_lost"
    except Exception:
        logger.exception("job %s: could not record the failure; leaving it to the reaper", run.job_id)
        return "abandoned"


def classify_error(exc: BaseException, *, device: str = "device") -> tuple[str, str] | None:
    """``(error_type, readable message)`` for a job failure; None for lost infrastructure (retry later)."""
    if isinstance(exc, InfrastructureError) or is_connection_error(exc) or _is_broker_error(exc):
        return None
    if isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc)):
        return "OutOfMemory", OOM_ADVICE.format(device=device)
    if (cause := full_cause(exc)) is not None:
        return STORAGE_FULL, readable(f"{cause}; the operator must free space or raise the quota, then resubmit")
    if isinstance(exc, StorageUnavailable):
        return STORAGE_UNAVAILABLE, readable(f"{exc}; resubmit the job when it is reachable again")
    if isinstance(exc, (ValueError, TypeError)):
        return type(exc).__name__, readable(str(exc))
    if isinstance(exc, OSError):
        return type(exc).__name__, readable(f"a file the job needs could not be read: {exc.strerror or exc}")
    return type(exc).__name__, "internal error in the training worker; the operator can find details in its log"


def _is_broker_error(exc: BaseException) -> bool:
    return isinstance(exc, BrokerOperationalError)


def readable(message: str, *, limit: int = 2000) -> str:
    """``message`` without absolute file system paths, on one line, at most ``limit`` characters."""
    text = _PATH.sub("<path>", message)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
