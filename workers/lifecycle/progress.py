"""The callbacks ``fit`` calls during a job: stop requests before every batch, epoch records after each epoch.

Stopping follows the lease, shutdown, cancellation and the deadline; each
epoch's record is committed under the lease before its checkpoint is
submitted, so a worker that lost the job never overwrites its new owner's.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import TYPE_CHECKING

from service.models import utcnow
from service.repository import leases
from workers.lifecycle.checkpoints import CheckpointWriter
from workers.lifecycle.heartbeat import Heartbeat
from workers.lifecycle.pruning import EpochAdvance
from workers.training.state import EpochRecord, StopReason, TrainingState

if TYPE_CHECKING:
    from workers.lifecycle.run import JobRun


class Progress:
    """The callbacks ``fit`` calls: ``should_stop`` before every batch, ``on_epoch_end`` after each epoch."""

    def __init__(
        self,
        run: JobRun,
        *,
        heartbeat: Heartbeat,
        shutdown: threading.Event,
        deadline: datetime,
        advance: EpochAdvance | None,
    ) -> None:
        self.run, self.heartbeat, self.shutdown, self.deadline = run, heartbeat, shutdown, deadline
        self.advance = advance
        self._first_step_logged = False
        self.checkpoints = CheckpointWriter(
            job_id=run.job_id,
            attempt=run.attempt,
            store=run.store,
            staging=run.staging,
            record=run.record_checkpoint,
            current_key=run.checkpoint[0],
            on_lease_lost=heartbeat.lease_lost.set,
            min_interval=run.settings.checkpoint_seconds,
        )

    def should_stop(self) -> StopReason | None:
        if not self._first_step_logged:
            self._first_step_logged = True
            self.run.log_first_step()
        if self.heartbeat.lease_lost.is_set():
            return StopReason.lease_lost
        if self.shutdown.is_set():
            return StopReason.shutdown
        if self.heartbeat.cancel_requested.is_set():
            return StopReason.cancelled
        if utcnow() >= self.deadline:
            return StopReason.deadline
        return None

    def on_epoch_end(self, record: EpochRecord, state: TrainingState) -> None:
        run = self.run
        if self.heartbeat.lease_lost.is_set():
            return  # never overwrite the checkpoint of the worker that owns the job now
        held = run.write(
            lambda s: leases.record_epoch(s, job_id=run.job_id, worker_id=run.worker_id, record=record.to_dict()),
            f"record epoch {record.epoch}",
        )
        if not held:
            self.heartbeat.lease_lost.set()
            return
        if self.advance is not None:  # after the epoch's commit, so the step it asks for sees the epoch
            self.advance.epoch_ended()
        self.checkpoints.submit(state.snapshot())
        # Read the cancel flag at every epoch end too: with epochs shorter than the heartbeat interval,
        # "a running job stops within one epoch" (API.md) would otherwise not hold.
        self.heartbeat.beat()
