"""A small time-bounded cache for hot-path database reads that may lag by a few seconds.

Found values are kept for ``ttl_seconds`` (``None`` answers are never kept, so a
row that appears is seen on the next call); concurrent misses for one key
share a single lookup, because when an entry expires under a request storm
every request in flight would otherwise queue its own read behind the few
hot-read threads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """``key`` → value for ``ttl_seconds`` (0 disables caching), at most ``max_entries`` keys."""

    def __init__(self, *, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self.ttl_seconds, self.max_entries = ttl_seconds, max_entries
        self._entries: dict[K, tuple[V, float]] = {}
        self._lookups: dict[K, asyncio.Future[V | None]] = {}

    async def resolve(self, key: K, lookup: Callable[[], Awaitable[V | None]]) -> V | None:
        """The cached value of ``key``, else ``await lookup()``, cached when not None."""
        cached = self._fresh(key)
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
        if value is not None:
            self._store(key, value)
        return value

    def _fresh(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def _store(self, key: K, value: V) -> None:
        if self.ttl_seconds <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # a crude bound: refilling costs one lookup per active key
        self._entries[key] = (value, time.monotonic() + self.ttl_seconds)
