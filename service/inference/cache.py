"""A thread-safe LRU cache of loaded models, bounded by their artefact bytes.

Loads run outside the lock, so a slow load never blocks hits on other models,
and concurrent requests for the same missing model share one load: the first
caller loads, the others wait for its result (or its exception).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from service.metrics import MODEL_CACHE

logger = logging.getLogger(__name__)

V = TypeVar("V")


@dataclass
class _Pending(Generic[V]):
    """A load in progress: waiters block on ``done`` and then read value or error."""

    done: threading.Event = field(default_factory=threading.Event)
    value: V | None = None
    size: int = 0
    error: BaseException | None = None


class ModelCache(Generic[V]):
    """LRU of loaded values keyed by model id, evicting least-recently-used past ``max_bytes``.

    A value larger than the whole budget is still returned (and kept until the
    next insertion evicts it), so one oversized model degrades to "load per
    request" instead of failing.
    """

    def __init__(self, *, max_bytes: int) -> None:
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 0:
            raise ValueError(f"max_bytes must be a non-negative int, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[V, int]] = OrderedDict()
        self._pending: dict[str, _Pending[V]] = {}
        self._total = 0

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return self._total

    def keys(self) -> list[str]:
        """Cached keys, least recently used first."""
        with self._lock:
            return list(self._entries)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, key: str) -> V | None:
        """The cached value (marking it recently used), or None; never loads or waits."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                return None
            self._entries.move_to_end(key)
            return hit[0]

    def get_or_load(self, key: str, *, load: Callable[[], tuple[V, int]]) -> V:
        """The cached value for ``key``, else ``load()`` -> ``(value, size_bytes)`` once.

        If ``load`` raises, every caller waiting on that load gets the same
        exception and nothing is cached, so the next call tries again.
        """
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                MODEL_CACHE.labels("hit").inc()
                return hit[0]
            pending = self._pending.get(key)
            owner = pending is None
            if owner:
                pending = self._pending[key] = _Pending()
        MODEL_CACHE.labels("miss" if owner else "shared").inc()
        if owner:
            return self._load(key, pending, load)
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.value  # type: ignore[return-value]

    def _load(self, key: str, pending: _Pending[V], load: Callable[[], tuple[V, int]]) -> V:
        try:
            value, size = load()
            if not isinstance(size, int) or size < 0:
                raise ValueError(f"load for {key!r} returned size {size!r}; expected bytes >= 0")
        except BaseException as exc:
            pending.error = exc
            with self._lock:
                del self._pending[key]
            pending.done.set()
            raise
        pending.value, pending.size = value, size
        with self._lock:
            del self._pending[key]
            self._entries[key] = (value, size)
            self._total += size
            self._evict()
        pending.done.set()
        logger.info("cached model %s (%d bytes; cache holds %d bytes)", key, size, self._total)
        return value

    def _evict(self) -> None:
        # Caller holds the lock. The newest entry stays even if it alone exceeds the budget.
        while self._total > self.max_bytes and len(self._entries) > 1:
            oldest = next(iter(self._entries))  # never the newest: it sits at the end
            _, size = self._entries.pop(oldest)
            self._total -= size
            logger.info("evicted model %s (%d bytes)", oldest, size)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._total = 0
