"""ModelCache: LRU by bytes, one load per key under concurrency, failures not cached."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.inference import ModelCache


def loader(value: object, size: int, calls: list[str] | None = None, name: str = ""):
    def load() -> tuple[object, int]:
        if calls is not None:
            calls.append(name)
        return value, size

    return load


def test_evicts_least_recently_used_until_under_budget() -> None:
    cache: ModelCache[str] = ModelCache(max_bytes=100)
    cache.get_or_load("a", load=loader("A", 40))
    cache.get_or_load("b", load=loader("B", 40))
    assert cache.get("a") == "A"  # touch: b is now the least recently used
    cache.get_or_load("c", load=loader("C", 40))
    assert cache.keys() == ["a", "c"]
    assert cache.total_bytes == 80
    cache.get_or_load("d", load=loader("D", 70))  # needs both a and c gone
    assert cache.keys() == ["d"]
    assert cache.total_bytes == 70


def test_hit_does_not_reload() -> None:
    calls: list[str] = []
    cache: ModelCache[str] = ModelCache(max_bytes=100)
    for _ in range(3):
        assert cache.get_or_load("a", load=loader("A", 10, calls, "a")) == "A"
    assert calls == ["a"]


def test_oversized_value_is_served_then_evicted_by_the_next_load() -> None:
    cache: ModelCache[str] = ModelCache(max_bytes=50)
    cache.get_or_load("small", load=loader("S", 10))
    assert cache.get_or_load("big", load=loader("B", 80)) == "B"
    assert cache.keys() == ["big"]  # everything else made room; big itself stays for now
    cache.get_or_load("small", load=loader("S", 10))
    assert cache.keys() == ["small"]
    assert cache.total_bytes == 10


def test_concurrent_misses_share_one_load() -> None:
    cache: ModelCache[object] = ModelCache(max_bytes=1000)
    calls: list[str] = []
    start = threading.Barrier(8)
    value = object()

    def slow_load() -> tuple[object, int]:
        calls.append("load")
        time.sleep(0.2)  # long enough that every thread arrives while the load runs
        return value, 10

    def get() -> object:
        start.wait()
        return cache.get_or_load("m", load=slow_load)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: get(), range(8)))
    assert calls == ["load"]
    assert all(result is value for result in results)


def test_a_slow_load_does_not_block_hits_on_other_keys() -> None:
    cache: ModelCache[str] = ModelCache(max_bytes=1000)
    cache.get_or_load("fast", load=loader("F", 10))
    release = threading.Event()

    def blocked_load() -> tuple[str, int]:
        release.wait(timeout=5)
        return "S", 10

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(cache.get_or_load, "slow", load=blocked_load)
        time.sleep(0.05)
        began = time.perf_counter()
        assert cache.get_or_load("fast", load=loader("never", 10)) == "F"
        assert time.perf_counter() - began < 1.0
        release.set()
        assert pending.result(timeout=5) == "S"


def test_failed_load_reaches_every_waiter_and_is_not_cached() -> None:
    cache: ModelCache[str] = ModelCache(max_bytes=1000)
    start = threading.Barrier(4)

    def failing() -> tuple[str, int]:
        time.sleep(0.1)
        raise OSError("disk gone")

    def get() -> BaseException | str:
        start.wait()
        try:
            return cache.get_or_load("m", load=failing)
        except OSError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: get(), range(4)))
    assert all(isinstance(r, OSError) and str(r) == "disk gone" for r in results)
    assert "m" not in cache
    assert cache.get_or_load("m", load=loader("M", 5)) == "M"  # the next call retries


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10"])
def test_rejects_a_bad_budget(bad: object) -> None:
    with pytest.raises(ValueError, match="max_bytes must be a non-negative int"):
        ModelCache(max_bytes=bad)  # type: ignore[arg-type]


def test_rejects_a_bad_size_from_the_loader() -> None:
    cache: ModelCache[str] = ModelCache(max_bytes=10)
    with pytest.raises(ValueError, match="returned size -3"):
        cache.get_or_load("m", load=loader("M", -3))
    assert len(cache) == 0
