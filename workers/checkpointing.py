"""Epoch checkpoints written off the training thread.

A checkpoint of a ResNet-18 with its AdamW moments is ~130 MB; writing,
fsyncing and hashing it synchronously after every epoch cost ~0.4 s per epoch
on an H100, as much as the epoch itself. Training instead hands over the CPU
snapshot ``TrainingState.to_checkpoint()`` already makes and carries on; one
thread writes it atomically (``save_checkpoint``), then records key and sha256
on the job row, then deletes the previous file. The job row only ever names a
complete file, so a crash at any moment resumes from a valid checkpoint.

Newest wins: a snapshot that arrives while another is being written replaces
any snapshot still waiting (a checkpoint is only a resume point). ``close()``
waits for the last one, so a job handed back at SIGTERM resumes from its last
finished epoch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from workers.artifacts import checkpoint_key
from workers.training.checkpoint import save_checkpoint

logger = logging.getLogger(__name__)

# (key, sha256, epoch) -> whether this worker still holds the lease
RecordCheckpoint = Callable[[str, str, int], bool]


class CheckpointWriter:
    """One background thread that writes, records and rotates a job's checkpoints."""

    def __init__(self, *, job_id: str, attempt: int, store: Any, record: RecordCheckpoint,
                 current_key: str | None, on_lease_lost: Callable[[], None]) -> None:
        self.job_id, self.attempt, self.store = job_id, attempt, store
        self._record, self._on_lease_lost = record, on_lease_lost
        self.current_key = current_key
        self._pending: tuple[int, dict] | None = None
        self._closed = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"checkpoint-{job_id}", daemon=True)
        self._thread.start()

    def submit(self, epoch: int, state: dict) -> None:
        """Queue ``state`` (CPU tensors only) as the checkpoint after ``epoch``; re-raises a writer failure."""
        with self._cond:
            self._raise_error()
            self._pending = (epoch, state)
            self._cond.notify_all()

    def close(self, *, timeout: float | None = None) -> None:
        """Write what is queued, stop the thread, and re-raise a writer failure."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        with self._cond:
            self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._pending is None:
                    return
                (epoch, state), self._pending = self._pending, None
            try:
                self._write(epoch, state)
            except BaseException as exc:  # handed to the training thread at its next submit/close
                logger.warning("job %s: checkpoint after epoch %d failed: %s", self.job_id, epoch, exc)
                with self._cond:
                    self._error = exc

    def _write(self, epoch: int, state: dict) -> None:
        key = checkpoint_key(self.job_id, attempt=self.attempt, epoch=epoch)
        sha256 = save_checkpoint(self.store.local_path(key), state)
        if not self._record(key, sha256, epoch):
            self._on_lease_lost()
            return
        previous, self.current_key = self.current_key, key
        if previous and previous != key:  # the row points at the new file now; the old one is garbage
            try:
                self.store.delete_prefix(previous)
            except OSError:
                logger.warning("job %s: could not delete the old checkpoint %s", self.job_id, previous,
                               exc_info=True)
