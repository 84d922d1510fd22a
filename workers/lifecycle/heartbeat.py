"""The lease heartbeat: a thread that keeps a running job's lease alive and relays cancel requests.

At start and every ``interval_seconds`` it renews the lease (``leases.renew_lease``). It
sets ``cancel_requested`` when the API asked to cancel, and ``lease_lost``
when another worker owns the job, the job stopped running, or the database
stayed unreachable for a whole lease (the reaper may then have handed the job
on, so this worker must stop writing). The training loop polls both events.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time

from sqlalchemy.orm import Session, sessionmaker

from service.db import transaction
from service.models import utcnow
from service.repository import leases

logger = logging.getLogger(__name__)


class Heartbeat:
    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        job_id: str,
        worker_id: str,
        lease_seconds: float,
        interval_seconds: float,
    ) -> None:
        if interval_seconds <= 0 or lease_seconds <= interval_seconds:
            raise ValueError(
                f"need 0 < interval_seconds < lease_seconds, got {interval_seconds!r} and {lease_seconds!r}"
            )
        self._factory = session_factory
        self._job_id, self._worker_id = job_id, worker_id
        self._lease_seconds, self._interval = float(lease_seconds), float(interval_seconds)
        self.cancel_requested = threading.Event()
        self.lease_lost = threading.Event()
        self._stop = threading.Event()
        self._last_success = time.monotonic()
        # The job id (service.logs.job_id) goes with the thread: its log lines name the job too.
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._run,), name=f"heartbeat-{job_id}", daemon=True
        )

    def start(self) -> None:
        self._last_success = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._interval + 30)

    def beat(self) -> None:
        """Renew once now; database errors are logged, and count against the lease."""
        try:
            with transaction(self._factory) as session:
                status = leases.renew_lease(
                    session,
                    job_id=self._job_id,
                    worker_id=self._worker_id,
                    lease_seconds=self._lease_seconds,
                    now=utcnow(),
                )
        except Exception:
            silent = time.monotonic() - self._last_success
            logger.warning(
                "job %s: lease renewal failed (%.0f s since the last one)", self._job_id, silent, exc_info=True
            )
            if silent >= self._lease_seconds:
                logger.error("job %s: no lease renewal for a whole lease; stopping", self._job_id)
                self.lease_lost.set()
            return
        self._last_success = time.monotonic()
        if not status.held:
            logger.warning("job %s: lease lost (another worker owns it or it stopped running)", self._job_id)
            self.lease_lost.set()
        if status.cancel_requested and not self.cancel_requested.is_set():
            logger.info("job %s: cancel requested", self._job_id)
            self.cancel_requested.set()

    def _run(self) -> None:
        # Beat at once: a cancel requested while the job was being claimed is seen before training starts.
        while True:
            self.beat()
            if self.lease_lost.is_set() or self._stop.wait(self._interval):
                return
