"""The reaper: recovers jobs whose worker died and messages the broker lost.

The database is the truth, so recovery is a pure function of job rows:

- a ``running`` job whose lease expired (its worker crashed, was killed or
  lost the database) goes back to ``queued`` and gets a new message while
  ``attempts < max_attempts``; after that it fails with ``WorkerLost``;
- a ``queued`` job whose message was sent (or, never stamped, created) more
  than ``requeue_after_seconds`` ago gets its message again, because Redis
  keeps nothing on disk and a broker restart loses it;
- a running job past its maximum run time is the worker's to stop (it checks
  the deadline every step); only if its lease also expired does it land here;
- every queued or running experiment gets an ``advance_experiment`` message
  (it settles finished trials, prunes, and starts trials a lost message or a
  full tenant cap held back); stale ones expire instead of piling up.

Duplicate messages are harmless (the claim is an atomic conditional UPDATE)
and several reapers may run at once (each transition is conditional too).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from service.background import BackgroundLoop
from service.config import Settings
from service.db import make_engine, make_session_factory, transaction
from service.models import utcnow
from service.queue import enqueue_advance, enqueue_job, make_celery
from service.repository import experiments, jobs, leases

logger = logging.getLogger(__name__)


@dataclass
class ReapReport:
    """Job ids by what the reaper did with them."""

    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    send_errors: list[str] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not (self.requeued or self.failed or self.cancelled or self.resent or self.send_errors)


def reap_once(
    settings: Settings,
    *,
    session_factory: sessionmaker[Session] | None = None,
    celery_app: Celery | None = None,
    now: datetime | None = None,
) -> ReapReport:
    """One pass over expired leases and stale queued jobs. Database errors propagate."""
    now = now or utcnow()
    engine = None if session_factory is not None else make_engine(settings.sqlalchemy_url)
    session_factory = session_factory or make_session_factory(engine)
    own_celery = celery_app is None
    celery_app = celery_app or make_celery(settings)
    report = ReapReport()
    try:
        _recover_expired(settings, session_factory, celery_app, now, report)
        _resend_stale(settings, session_factory, celery_app, now, report)
        _advance_experiments(settings, session_factory, celery_app)
    finally:  # release what this call created (the API passes its own, long-lived ones)
        if engine is not None:
            engine.dispose()
        if own_celery:
            celery_app.close()
    if not report.is_empty:
        logger.info(
            "reaper: requeued %s, failed %s, cancelled %s, re-sent %s, send errors %s",
            report.requeued,
            report.failed,
            report.cancelled,
            report.resent,
            report.send_errors,
        )
    return report


def _recover_expired(settings, session_factory, celery_app, now: datetime, report: ReapReport) -> None:
    with session_factory() as session:
        expired = leases.expired_running_jobs(session, now=now)
    for job_id in expired:
        with transaction(session_factory) as session:
            outcome = leases.requeue_expired(session, job_id=job_id, now=now, max_attempts=settings.max_attempts)
        if outcome == "requeued":
            report.requeued.append(job_id)
            logger.warning("job %s: worker lease expired, re-queued", job_id)
            # The row is queued and stamped; if this send fails, the stale pass re-sends later.
            _send(celery_app, job_id, report)
        elif outcome == "failed":
            report.failed.append(job_id)
            logger.error("job %s: worker lost %d times, job failed", job_id, settings.max_attempts)
        elif outcome == "cancelled":
            report.cancelled.append(job_id)


def _resend_stale(settings, session_factory, celery_app, now: datetime, report: ReapReport) -> None:
    with session_factory() as session:
        stale = leases.stale_queued_jobs(session, now=now, older_than_seconds=settings.requeue_after_seconds)
    for job_id in stale:
        if job_id in report.requeued:
            continue
        if _send(celery_app, job_id, report):
            report.resent.append(job_id)
            with transaction(session_factory) as session:
                jobs.mark_enqueued(session, job_id=job_id, now=now)


def _advance_experiments(settings, session_factory, celery_app) -> None:
    with session_factory() as session:
        active = experiments.active_experiment_ids(session)
    expires = max(5.0, 2 * float(settings.reaper_interval_seconds))
    for experiment_id in active:
        try:
            enqueue_advance(celery_app, experiment_id, expires_seconds=expires)
        except Exception:  # broker down: the next pass sends again
            logger.warning("reaper: could not send an advance for experiment %s", experiment_id, exc_info=True)
            return


def _send(celery_app: Celery, job_id: str, report: ReapReport) -> bool:
    try:
        enqueue_job(celery_app, job_id)
    except Exception:  # broker down: the job stays queued in the database, retried next pass
        logger.warning("reaper: could not send job %s to the broker", job_id, exc_info=True)
        report.send_errors.append(job_id)
        return False
    return True


class ReaperThread(BackgroundLoop):
    """Runs ``reap_once`` every ``settings.reaper_interval_seconds`` in a daemon thread."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session], celery_app: Celery) -> None:
        self._settings = settings
        self._session_factory = session_factory
        self._celery_app = celery_app
        super().__init__(name="rarefit-reaper")

    def _run(self) -> None:
        self._repeat(
            lambda: reap_once(self._settings, session_factory=self._session_factory, celery_app=self._celery_app),
            interval=max(0.05, float(self._settings.reaper_interval_seconds)),
            what="reaper pass",
            log=logger,
        )
