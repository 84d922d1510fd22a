"""The Celery task: a thin, idempotent shim from a message to ``workers.lifecycle.claim.run_job``.

It never raises and never retries: the job row holds the outcome, a duplicate
delivery finds nothing to claim, and lost work is recovered by the reaper
from the database (see ``service.queue`` for why the broker is not trusted
with exactly-once).
"""

from __future__ import annotations

import logging
import os
import socket

from service.config import get_settings
from service.queue import TASK_NAME
from workers.celery_app import app
from workers.lifecycle.claim import run_job
from workers.lifecycle.outcome import Outcome

logger = logging.getLogger(__name__)


@app.task(name=TASK_NAME, bind=True, ignore_result=True, acks_late=False)
def train_job(self, job_id: str) -> Outcome:
    settings = getattr(self.app, "rarefit_settings", None) or get_settings()
    worker_id = f"{self.request.hostname or socket.gethostname()}:{os.getpid()}"
    try:
        return run_job(job_id, settings=settings, worker_id=worker_id, celery_app=self.app)
    except Exception:  # run_job handles job errors; anything left is ours, and the reaper recovers the job
        logger.exception("job %s: unexpected error in the worker", job_id)
        return Outcome.abandoned
