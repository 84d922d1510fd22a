"""A small time-bounded cache for hot-path database reads that may lag by a few seconds.

Found values are kept for ``ttl_seconds`` (``None`` answers are never kept, so a
row that appears is seen on the next call); concurrent misses for one key
share a single lookup, because when an entry expires under a request storm
every request in flight would otherwise queue its own read behind the few
hot-read threads. At ``max_entries`` the least recently used entry makes room
(expired ones first), so a burst of new keys never drops the hot ones at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from cachetools import TTLCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """``key`` → value for ``ttl_seconds`` (0 disables caching), at most ``max_entries`` keys."""

    def __init__(self, *, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self._lookups: dict[K, asyncio.Future[V | None]] = {}

    @property
    def ttl_seconds(self) -> float:
        return self._ttl_seconds

    @ttl_seconds.setter
    def ttl_seconds(self, value: float) -> None:
        # A TTLCache has one lifetime for all its entries: a new lifetime starts an empty cache.
        self._ttl_seconds = float(value)
        self._entries: TTLCache[K, V] = TTLCache(
            maxsize=self.max_entries, ttl=max(self._ttl_seconds, 0.0), timer=time.monotonic
        )

    def forget(self, key: K) -> None:
        """Drop ``key``'s cached value (its source changed); the next ``resolve`` looks it up again."""
        self._entries.pop(key, None)

    async def resolve(self, key: K, lookup: Callable[[], Awaitable[V | None]]) -> V | None:
        """The cached value of ``key``, else ``await lookup()``, cached when not None."""
        cached = self._entries.get(key)
        if cached is not None:
            return cached
        pending = self._lookups.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._look_up(key, lookup))
            self._lookups[key] = pending
            pending.add_done_callback(lambda _done: self._lookups.pop(key, None))
        return await asyncio.shield(pending)  # one waiter going away must not cancel the others' lookup

    async def _look_up(self, key: K, lookup: Callable[[], Awaitable[V | None]]) -> V | None:
        value = await lookup()
        if value is not None and self.ttl_seconds > 0:
            self._entries[key] = value
        return value
