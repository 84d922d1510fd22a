"""Graceful shutdown inside the task child: SIGTERM sets a flag the training loop polls.

Celery's prefork child runs the task in its main thread, so the handler can
be installed there for the duration of a job. On SIGTERM the job stops before
its next batch, keeps its last checkpoint and goes back to the queue
(``leases.release_job``) for another worker to resume. Outside the main
thread (a test runner's worker thread) no handler can be installed and the
flag simply never fires.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)


@contextmanager
def shutdown_flag() -> Iterator[threading.Event]:
    """An event set by SIGTERM while the block runs; the previous handler is restored after."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handle(signum, _frame) -> None:
        logger.warning("received signal %d: stopping the job at the next batch and handing it back", signum)
        flag.set()

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)
