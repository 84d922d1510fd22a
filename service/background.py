"""A daemon thread that repeats one pass on a fixed interval (the reaper, the webhook dispatcher).

A failing pass (database or broker down) is logged and the next one runs on
schedule: these threads outlive outages, which is when they are needed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable


class BackgroundLoop:
    """Start, stop and liveness of a named daemon thread; subclasses say what ``_run`` repeats."""

    def __init__(self, *, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        raise NotImplementedError

    def _repeat(self, one_pass: Callable[[], object], *, interval: float, what: str, log: logging.Logger) -> None:
        """Run ``one_pass`` until stopped, ``interval`` seconds apart, logging (not raising) its failures.

        ``log`` is the owner's logger, so a failed pass is reported under the module whose work failed.
        """
        while not self._stop.is_set():
            try:
                one_pass()
            except Exception:
                log.exception("%s failed; retrying in %.1f s", what, interval)
            self._stop.wait(interval)
