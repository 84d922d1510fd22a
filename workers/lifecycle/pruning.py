"""A trial of a pruning experiment asks its experiment to advance as its epochs finish.

An advance step (``service.experiments.advance``) reports a trial's new epochs
to Optuna and cancels the trial's jobs when the pruner says so. Without these
requests it runs only when a job ends or on a reaper pass, by which time most
short jobs are done and pruning saves nothing. The step is idempotent, so a
duplicate request costs one cheap step; a lost one is made up by the next
epoch's request, the job's end or the reaper.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from celery import Celery
from sqlalchemy.orm import Session

from service.queue import enqueue_advance
from service.repository import experiments

logger = logging.getLogger(__name__)

# At most one request per job this often: a job with sub-second epochs would otherwise put a step per
# epoch on the control queue, while a rung (epochs 1, 3, 9, …) is rarely reached sooner than this.
INTERVAL_SECONDS = 1.0
# A request still waiting after this is stale (a later one, the job's end or the reaper does its work):
# dropping it keeps messages from piling up while no control worker runs.
EXPIRES_SECONDS = 30.0
# After a failed send, wait about one reaper pass before trying again, so a broker outage costs
# training at most one failed publish per pause; the reaper advances the experiment meanwhile.
FAILURE_PAUSE_SECONDS = 15.0


class EpochAdvance:
    """``epoch_ended`` after each recorded epoch: a throttled, never-raising "advance" request."""

    def __init__(
        self,
        *,
        experiment_id: str,
        celery_app: Celery,
        interval_seconds: float = INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.experiment_id, self.celery_app = experiment_id, celery_app
        self.interval_seconds, self.clock = interval_seconds, clock
        self._next_at: float | None = None

    @classmethod
    def for_job(cls, session: Session, *, experiment_id: str | None, celery_app: Celery) -> EpochAdvance | None:
        """The requester for a job of ``experiment_id``; None for a standalone job or one that does not prune."""
        if experiment_id is None or experiments.pruning_of(session, experiment_id=experiment_id) != "asha":
            return None
        return cls(experiment_id=experiment_id, celery_app=celery_app)

    def epoch_ended(self) -> bool:
        """Send the request unless one went out within the interval; True when sent."""
        now = self.clock()
        if self._next_at is not None and now < self._next_at:
            return False
        try:
            enqueue_advance(self.celery_app, self.experiment_id, expires_seconds=EXPIRES_SECONDS)
        except Exception:  # the broker's errors vary; training goes on and the reaper advances the experiment
            logger.warning(
                "experiment %s: could not ask it to advance after an epoch", self.experiment_id, exc_info=True
            )
            self._next_at = now + FAILURE_PAUSE_SECONDS
            return False
        self._next_at = now + self.interval_seconds
        return True
