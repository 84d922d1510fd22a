"""MicroBatcher: coalescing, splitting, order, no wait when alone, failures reach their requests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from service.inference import MicroBatcher


def rows_of(images: torch.Tensor) -> torch.Tensor:
    """A per-image function (the oracle): row i depends on image i only."""
    flat = images.flatten(1)
    return torch.stack([flat.sum(1), flat[:, 0]], dim=1)


class Recorder:
    """Wraps the forward function and records each batch size (observation, not a stand-in)."""

    def __init__(self, *, gate: threading.Event | None = None, fail: bool = False) -> None:
        self.sizes: list[int] = []
        self.gate, self.fail = gate, fail
        self.started = threading.Event()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.sizes.append(images.shape[0])
        self.started.set()
        if self.gate is not None:
            self.gate.wait(timeout=10)
        if self.fail:
            raise RuntimeError("forward exploded")
        return rows_of(images)


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=2)
    yield pool
    pool.shutdown(wait=True)


def images(count: int, *, offset: int = 0) -> torch.Tensor:
    return torch.arange(offset, offset + count * 4, dtype=torch.float32).reshape(count, 1, 2, 2)


def test_concurrent_requests_share_one_forward_and_get_their_own_rows(executor: ThreadPoolExecutor) -> None:
    recorder = Recorder()
    batcher = MicroBatcher(forward=recorder, executor=executor, max_batch=64, max_wait_ms=2)
    inputs = [images(1 + i % 3, offset=100 * i) for i in range(8)]

    async def main() -> list[torch.Tensor]:
        return await asyncio.gather(*(batcher.submit(x) for x in inputs))

    outputs = asyncio.run(main())
    assert recorder.sizes == [sum(len(x) for x in inputs)]
    for x, out in zip(inputs, outputs, strict=True):
        assert torch.equal(out, rows_of(x))


def test_batches_never_exceed_max_batch(executor: ThreadPoolExecutor) -> None:
    recorder = Recorder()
    batcher = MicroBatcher(forward=recorder, executor=executor, max_batch=3, max_wait_ms=0)
    inputs = [images(1, offset=10 * i) for i in range(8)]

    async def main() -> list[torch.Tensor]:
        return await asyncio.gather(*(batcher.submit(x) for x in inputs))

    outputs = asyncio.run(main())
    assert recorder.sizes == [3, 3, 2]
    assert all(torch.equal(out, rows_of(x)) for x, out in zip(inputs, outputs, strict=True))


def test_a_request_larger_than_max_batch_is_split_and_reassembled(executor: ThreadPoolExecutor) -> None:
    recorder = Recorder()
    batcher = MicroBatcher(forward=recorder, executor=executor, max_batch=4, max_wait_ms=0)
    x = images(10)
    out = asyncio.run(batcher.submit(x))
    assert recorder.sizes == [4, 4, 2]
    assert torch.equal(out, rows_of(x))


def test_a_lone_request_does_not_wait(executor: ThreadPoolExecutor) -> None:
    recorder = Recorder()
    batcher = MicroBatcher(forward=recorder, executor=executor, max_batch=64, max_wait_ms=500)

    async def main() -> float:
        began = time.perf_counter()
        for i in range(5):
            await batcher.submit(images(1, offset=i))
        return time.perf_counter() - began

    assert asyncio.run(main()) < 0.5  # waiting max_wait_ms even once would take 0.5 s
    assert recorder.sizes == [1] * 5


def wait_until(condition, *, timeout: float = 5.0) -> None:
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.001)


def test_work_queued_during_a_pass_runs_together_as_soon_as_the_pass_ends(executor: ThreadPoolExecutor) -> None:
    gate = threading.Event()
    recorder = Recorder(gate=gate)
    batcher = MicroBatcher(forward=recorder, executor=executor, max_batch=4, max_wait_ms=10_000, max_inflight=2)

    async def main() -> None:
        first = asyncio.ensure_future(batcher.submit(images(1)))
        await asyncio.to_thread(recorder.started.wait, 5)  # first pass is running (and held)
        queued = [asyncio.ensure_future(batcher.submit(images(1, offset=o))) for o in (50, 90)]
        await asyncio.sleep(0.05)
        assert recorder.sizes == [1]  # a slot is free, but the batch is not full: it waits
        gate.set()  # the pass ends, nothing runs: the queue goes at once, not after 10 s
        await first
        for offset, task in zip((50, 90), queued, strict=True):
            assert torch.equal(await task, rows_of(images(1, offset=offset)))

    began = time.perf_counter()
    asyncio.run(main())
    assert recorder.sizes == [1, 2]
    assert time.perf_counter() - began < 5.0


def test_while_a_pass_runs_a_free_slot_waits_at_most_max_wait(executor: ThreadPoolExecutor) -> None:
    gate = threading.Event()
    recorder = Recorder(gate=gate)
    batcher = MicroBatcher(forward=recorder, executor=executor, max_batch=8, max_wait_ms=50, max_inflight=2)

    async def main() -> float:
        first = asyncio.ensure_future(batcher.submit(images(1)))
        await asyncio.to_thread(recorder.started.wait, 5)
        began = time.perf_counter()
        second = asyncio.ensure_future(batcher.submit(images(1, offset=9)))
        await asyncio.to_thread(wait_until, lambda: len(recorder.sizes) == 2)  # dispatched beside the first
        waited = time.perf_counter() - began
        gate.set()
        await first
        assert torch.equal(await second, rows_of(images(1, offset=9)))
        return waited

    assert asyncio.run(main()) >= 0.05
    assert recorder.sizes == [1, 1]


def test_a_full_queue_does_not_wait(executor: ThreadPoolExecutor) -> None:
    gate = threading.Event()
    recorder = Recorder(gate=gate)
    batcher = MicroBatcher(forward=recorder, executor=executor, max_batch=2, max_wait_ms=10_000, max_inflight=2)

    async def main() -> None:
        first = asyncio.ensure_future(batcher.submit(images(1)))
        await asyncio.to_thread(recorder.started.wait, 5)
        rest = [asyncio.ensure_future(batcher.submit(images(1, offset=i))) for i in (10, 20)]
        await asyncio.to_thread(wait_until, lambda: len(recorder.sizes) == 2)  # full: runs beside the first
        gate.set()
        await asyncio.gather(first, *rest)

    began = time.perf_counter()
    asyncio.run(main())
    assert time.perf_counter() - began < 5.0
    assert recorder.sizes == [1, 2]


def test_a_failing_load_fails_only_its_own_request(executor: ThreadPoolExecutor) -> None:
    recorder = Recorder()
    batcher = MicroBatcher(forward=recorder, executor=executor, max_batch=16, max_wait_ms=0)

    def broken(start: int, stop: int) -> torch.Tensor:
        raise ValueError("undecodable")

    async def main() -> list[object]:
        return await asyncio.gather(
            batcher.submit(images(2)),
            batcher.submit_lazy(count=3, load=broken),
            batcher.submit(images(1, offset=5)),
            return_exceptions=True,
        )

    good, bad, other = asyncio.run(main())
    assert isinstance(bad, ValueError) and str(bad) == "undecodable"
    assert torch.equal(good, rows_of(images(2))) and torch.equal(other, rows_of(images(1, offset=5)))
    assert recorder.sizes == [3]


def test_lazy_loads_get_their_slice_of_a_split_request(executor: ThreadPoolExecutor) -> None:
    recorder = Recorder()
    batcher = MicroBatcher(forward=recorder, executor=executor, max_batch=4, max_wait_ms=0)
    x = images(10)
    slices: list[tuple[int, int]] = []

    def load(start: int, stop: int) -> torch.Tensor:
        slices.append((start, stop))
        return x[start:stop]

    assert torch.equal(asyncio.run(batcher.submit_lazy(count=10, load=load)), rows_of(x))
    assert slices == [(0, 4), (4, 8), (8, 10)]


def test_a_failed_forward_fails_its_requests_and_the_next_one_works(executor: ThreadPoolExecutor) -> None:
    failing = Recorder(fail=True)
    batcher = MicroBatcher(forward=failing, executor=executor, max_batch=8, max_wait_ms=0)

    async def main() -> list[object]:
        return await asyncio.gather(*(batcher.submit(images(1)) for _ in range(3)), return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) and str(r) == "forward exploded" for r in results)
    failing.fail = False
    assert torch.equal(asyncio.run(batcher.submit(images(2))), rows_of(images(2)))


def test_a_cancelled_request_is_skipped(executor: ThreadPoolExecutor) -> None:
    gate = threading.Event()
    recorder = Recorder(gate=gate)
    batcher = MicroBatcher(forward=recorder, executor=executor, max_batch=8, max_wait_ms=0)

    async def main() -> torch.Tensor:
        first = asyncio.ensure_future(batcher.submit(images(1)))
        await asyncio.to_thread(recorder.started.wait, 5)
        doomed = asyncio.ensure_future(batcher.submit(images(3)))
        kept = asyncio.ensure_future(batcher.submit(images(1, offset=7)))
        await asyncio.sleep(0)
        doomed.cancel()
        gate.set()
        await first
        return await kept

    assert torch.equal(asyncio.run(main()), rows_of(images(1, offset=7)))
    assert recorder.sizes == [1, 1]


def test_idle_callback_fires_when_the_queue_drains(executor: ThreadPoolExecutor) -> None:
    idle: list[MicroBatcher] = []
    batcher = MicroBatcher(forward=rows_of, executor=executor, max_batch=8, max_wait_ms=0, on_idle=idle.append)
    asyncio.run(batcher.submit(images(2)))
    assert idle == [batcher]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch": 0}, "max_batch must be an int >= 1, got 0"),
        ({"max_inflight": 0}, "max_inflight must be an int >= 1, got 0"),
        ({"max_wait_ms": -1}, "max_wait_ms must be >= 0, got -1"),
    ],
)
def test_rejects_bad_settings(executor: ThreadPoolExecutor, kwargs: dict, message: str) -> None:
    values = {"max_batch": 4, "max_wait_ms": 1.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        MicroBatcher(forward=rows_of, executor=executor, **values)


def test_rejects_images_that_are_not_a_batch(executor: ThreadPoolExecutor) -> None:
    batcher = MicroBatcher(forward=rows_of, executor=executor, max_batch=4, max_wait_ms=0)
    with pytest.raises(ValueError, match=r"non-empty \(B, C, H, W\) tensor, got \(0, 1, 2, 2\)"):
        asyncio.run(batcher.submit(torch.zeros(0, 1, 2, 2)))
