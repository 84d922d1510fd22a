"""How a delivery of ``rarefit.train_job`` ended on this worker, and what the database says afterwards."""

from __future__ import annotations

import enum


class Outcome(str, enum.Enum):
    """The result of ``run_job``; the job row, not this value, is the truth for clients."""

    skipped = "skipped"
    """Nothing to claim: a duplicate delivery, or the job is no longer queued."""
    succeeded = "succeeded"
    """Artefacts stored, model registered, job ``succeeded``."""
    failed = "failed"
    """The job cannot succeed (bad data, impossible spec, missing init weights, out of memory, time
    limit, a full disk or object store, an object store unreachable past its retry budget): ``failed``
    with the error class (``storage_full``, ``storage_unavailable`` for the storage faults) and a
    readable message (no server paths, no tracebacks)."""
    cancelled = "cancelled"
    """The cancel flag stopped it within one batch."""
    released = "released"
    """SIGTERM (graceful shutdown): back to ``queued`` with its checkpoint, attempt not counted,
    message re-sent for another worker."""
    lease_lost = "lease_lost"
    """Another worker owns the job now; stopped without writing."""
    abandoned = "abandoned"
    """The database or broker stayed unreachable: the job is left ``running`` so its lease expires
    and the reaper retries it (up to ``max_attempts``)."""

    def __str__(self) -> str:
        return self.value
