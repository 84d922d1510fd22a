"""TtlCache (under KeyCache and predict's model lookups): values expire, None is never kept."""

from __future__ import annotations

import asyncio
import time

from service.ttl_cache import TtlCache


def test_values_are_served_until_they_expire_then_looked_up_again():
    cache: TtlCache[tuple[str, str], str] = TtlCache(ttl_seconds=0.05)
    calls = []

    async def lookup(value):
        calls.append(value)
        return value

    async def scenario():
        first = await cache.resolve(("tenant", "model"), lambda: lookup("row-1"))
        cached = await cache.resolve(("tenant", "model"), lambda: lookup("unused"))
        other_tenant = await cache.resolve(("other", "model"), lambda: lookup(None))
        time.sleep(0.06)
        expired = await cache.resolve(("tenant", "model"), lambda: lookup("row-2"))
        return first, cached, other_tenant, expired

    assert asyncio.run(scenario()) == ("row-1", "row-1", None, "row-2")
    assert calls == ["row-1", None, "row-2"]


def test_zero_ttl_disables_caching():
    cache: TtlCache[str, int] = TtlCache(ttl_seconds=0)

    async def scenario():
        return [await cache.resolve("k", lambda n=n: asyncio.sleep(0, result=n)) for n in (1, 2)]

    assert asyncio.run(scenario()) == [1, 2]
