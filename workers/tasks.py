"""The Celery tasks: thin, idempotent shims from a message to the code that does the work.

``train_job`` runs ``workers.lifecycle.claim.run_job`` and then asks the job's
experiment (if any) to advance; ``advance_experiment`` runs one step of
``service.experiments.advance`` on the control queue. Neither raises nor
retries: the rows hold the outcome, a duplicate delivery finds nothing to do,
and lost work is recovered by the reaper from the database (see
``service.queue`` for why the broker is not trusted with exactly-once).
"""

from __future__ import annotations

import logging
import os
import socket

from service.config import get_settings
from service.db import make_engine, make_session_factory
from service.experiments.advance import advance_experiment as advance
from service.experiments.advance import experiment_of
from service.queue import ADVANCE_TASK, TASK_NAME, enqueue_advance
from workers.celery_app import app
from workers.lifecycle.claim import run_job
from workers.lifecycle.outcome import Outcome

logger = logging.getLogger(__name__)


@app.task(name=TASK_NAME, bind=True, ignore_result=True, acks_late=False)
def train_job(self, job_id: str) -> Outcome:
    settings = getattr(self.app, "rarefit_settings", None) or get_settings()
    worker_id = f"{self.request.hostname or socket.gethostname()}:{os.getpid()}"
    try:
        outcome = run_job(job_id, settings=settings, worker_id=worker_id, celery_app=self.app)
    except Exception:  # run_job handles job errors; anything left is ours, and the reaper recovers the job
        logger.exception("job %s: unexpected error in the worker", job_id)
        return Outcome.abandoned
    _advance_its_experiment(self.app, settings, job_id)
    return outcome


def _advance_its_experiment(celery_app, settings, job_id: str) -> None:
    """A trial's job ended: its experiment can tell Optuna and start the next trial (the reaper also does)."""
    try:
        experiment_id = experiment_of(settings, job_id=job_id)
        if experiment_id is not None:
            enqueue_advance(celery_app, experiment_id)
    except Exception:  # the reaper's pass advances every active experiment anyway
        logger.warning("job %s: could not ask its experiment to advance", job_id, exc_info=True)


@app.task(name=ADVANCE_TASK, bind=True, ignore_result=True, acks_late=False)
def advance_experiment(self, experiment_id: str) -> str:
    settings = getattr(self.app, "rarefit_settings", None) or get_settings()
    engine = make_engine(settings.sqlalchemy_url)
    try:
        report = advance(
            experiment_id, settings=settings, session_factory=make_session_factory(engine), celery_app=self.app
        )
        return report.status or "idle"
    except Exception:  # a failed step changes nothing; the next message or reaper pass runs it again
        logger.exception("experiment %s: advance step failed", experiment_id)
        return "error"
    finally:
        engine.dispose()
