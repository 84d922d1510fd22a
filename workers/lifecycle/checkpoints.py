"""Epoch checkpoints written off the training thread, at most one per interval.

A checkpoint holds the model and its optimizer moments. Writing, fsyncing
and hashing it after every epoch can take as long as a GPU epoch, and even
on a background thread ``torch.save`` holds the interpreter lock long enough
to slow the training thread's kernel launches (``benchmarks/RESULTS.md``,
"100-epoch job on the H100"). So training hands over a ``Snapshot`` (tensors cloned on
the device, no host transfer) after each epoch and carries on; one thread
makes it a checkpoint dict (the host transfer), writes it in the run's own
staging folder (``save_checkpoint``), publishes it to the blob store under a
new key (atomic: the whole object or none), records key and sha256 on the
job row, then deletes the previous one. The job row only ever names a
complete checkpoint, so a crash at any moment resumes from a valid one, on
this host or any other.

Newest wins: a snapshot that arrives while another is being written, or
before ``min_interval`` seconds have passed since the last write began,
replaces any snapshot still waiting (a checkpoint is only a resume point; a
crash loses about the interval, the write and the epoch in flight). The first
snapshot is written at once. ``close()`` writes the one still waiting, so a
job handed back at SIGTERM resumes from its last finished epoch; a run that
finished needs no resume point and closes with ``write_pending=False``.
"""

from __future__ import annotations

import contextvars
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.model_card import checkpoint_key
from service.storage import BlobStore, StorageUnavailable
from workers.training.checkpoint import load_checkpoint, save_checkpoint
from workers.training.state import Snapshot

logger = logging.getLogger(__name__)

# (key, sha256, epoch) -> whether this worker still holds the lease
RecordCheckpoint = Callable[[str, str, int], bool]


class CheckpointWriter:
    """One background thread that writes, records and rotates a job's checkpoints."""

    def __init__(
        self,
        *,
        job_id: str,
        attempt: int,
        store: BlobStore,
        staging: Path,
        record: RecordCheckpoint,
        current_key: str | None,
        on_lease_lost: Callable[[], None],
        min_interval: float = 0.0,
    ) -> None:
        self.job_id, self.attempt, self.store, self.staging = job_id, attempt, store, staging
        self._record, self._on_lease_lost = record, on_lease_lost
        self.current_key = current_key
        self.min_interval = float(min_interval)
        self._last_write = -math.inf  # time.monotonic() when the last write began
        self._pending: Snapshot | None = None
        self._closed = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        # The job id (service.logs.job_id) goes with the thread: its log lines name the job too.
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._run,), name=f"checkpoint-{job_id}", daemon=True
        )
        self._thread.start()

    def submit(self, snapshot: Snapshot) -> None:
        """Queue ``snapshot`` as the job's next checkpoint; re-raises a writer failure."""
        with self._cond:
            self._raise_error()
            self._pending = snapshot
            self._cond.notify_all()

    def close(self, *, write_pending: bool = True, timeout: float | None = None) -> None:
        """Write what is queued (unless ``write_pending`` is False), stop the thread, and re-raise a
        writer failure."""
        with self._cond:
            self._closed = True
            if not write_pending:
                self._pending = None
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
            snapshot = self._next()
            if snapshot is None:
                return
            try:
                self._write(snapshot)
            except BaseException as exc:  # handed to the training thread at its next submit/close
                logger.warning("job %s: checkpoint after epoch %d failed: %s", self.job_id, snapshot.epoch, exc)
                with self._cond:
                    self._error = exc

    def _next(self) -> Snapshot | None:
        """The snapshot to write once one is waiting and the interval has passed (at once when closing);
        None when closed with nothing waiting."""
        with self._cond:
            while True:
                if self._pending is None:
                    if self._closed:
                        return None
                    self._cond.wait()
                    continue
                wait = self._last_write + self.min_interval - time.monotonic()
                if wait <= 0 or self._closed:
                    snapshot, self._pending = self._pending, None
                    self._last_write = time.monotonic()
                    return snapshot
                self._cond.wait(wait)

    def _write(self, snapshot: Snapshot) -> None:
        epoch = snapshot.epoch
        key = checkpoint_key(self.job_id, attempt=self.attempt, epoch=epoch)
        local = self.staging / key.rsplit("/", 1)[-1]
        try:
            sha256 = save_checkpoint(local, snapshot.to_checkpoint())
            self.store.publish(key, local)
        finally:
            local.unlink(missing_ok=True)
        if not self._record(key, sha256, epoch):
            self._on_lease_lost()
            return
        previous, self.current_key = self.current_key, key
        if previous and previous != key:  # the row points at the new file now; the old one is garbage
            try:
                self.store.delete(previous)
            except OSError:
                logger.warning("job %s: could not delete the old checkpoint %s", self.job_id, previous, exc_info=True)


def resume_point(
    store: BlobStore, *, checkpoint: tuple[str | None, str | None], staging: Path, job_id: str
) -> dict[str, Any] | None:
    """The job's last checkpoint (``(key, sha256)`` from its row) loaded, or None to start over.

    A missing, torn or tampered checkpoint starts the job over (correctness
    first); a store that cannot be reached raises, since starting over would
    throw the finished epochs away.
    """
    key, sha256 = checkpoint
    if not key:
        return None
    local = staging / "resume.pt"
    try:
        store.download(key, local, sha256=sha256)  # BlobCorrupt unless the bytes match the row's hash
        state = load_checkpoint(local)
    except StorageUnavailable:
        raise
    except Exception as exc:
        logger.warning("job %s: checkpoint unusable (%s); starting over", job_id, exc)
        return None
    finally:
        local.unlink(missing_ok=True)
    logger.info("job %s: resuming after epoch %s", job_id, state.get("epoch"))
    return state
