"""Micro-batching: concurrent requests for one model share forward passes.

Dynamic batching as in Triton's scheduler (dispatch when the batch is full or
its oldest request has waited ``max_wait_ms``) with the "natural batching"
rule first: whenever no pass is running, whatever is queued runs at once, so a
lone client never waits and requests that arrived during a pass go together in
the next one. Up to ``max_inflight`` batches run at a time (one per inference
thread) so a busy model uses every core; only while another pass runs does a
free slot wait (at most ``max_wait_ms``) for its batch to fill.

Each queued chunk carries a ``load`` function that produces its tensor on the
executor (decoding, typically) just before the forward pass: one thread hop
per batch instead of one per step, and a chunk whose load fails fails only its
own request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import torch

from service.metrics import PREDICT_BATCH

logger = logging.getLogger(__name__)

Load = Callable[[int, int], torch.Tensor]  # (start, stop) of a request's images -> (stop - start, C, H, W)


@dataclass
class _Chunk:
    count: int
    load: Callable[[], torch.Tensor]
    future: asyncio.Future[torch.Tensor]
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Queue of image chunks for one model, drained by one runner task on the event loop.

    ``forward`` maps a ``(B, C, H, W)`` batch to ``(B, K)`` rows and runs on
    ``executor``, never on the loop. Rows come back to the request that sent
    the images, in order. ``on_idle(batcher)`` is called whenever the queue
    drains, so the owner can drop the batcher (and its reference to the model).
    """

    def __init__(
        self,
        *,
        forward: Callable[[torch.Tensor], torch.Tensor],
        executor: Executor,
        max_batch: int,
        max_wait_ms: float,
        max_inflight: int = 1,
        on_idle: Callable[[MicroBatcher], None] | None = None,
    ) -> None:
        for name, value in (("max_batch", max_batch), ("max_inflight", max_inflight)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms!r}")
        self.max_batch, self.max_inflight = max_batch, max_inflight
        self.max_wait = float(max_wait_ms) / 1000
        self._forward, self._executor, self._on_idle = forward, executor, on_idle
        self._queue: deque[_Chunk] = deque()
        self._queued_images = 0
        self._inflight: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, images: torch.Tensor) -> torch.Tensor:
        """Rows of ``forward`` for a ready ``(N, C, H, W)`` tensor."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a non-empty (B, C, H, W) tensor, got {shape}")
        return await self.submit_lazy(count=images.shape[0], load=lambda start, stop: images[start:stop])

    async def submit_lazy(self, *, count: int, load: Load) -> torch.Tensor:
        """Rows of ``forward`` for ``count`` images that ``load(start, stop)`` produces on the
        executor; requests above ``max_batch`` images are split into chunks."""
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be an int >= 1, got {count!r}")
        self.loop = loop = asyncio.get_running_loop()
        if self._runner is None:
            self._wakeup = asyncio.Event()  # an Event binds to the loop it first waits on
            self._runner = loop.create_task(self._run())
        futures = []
        for start in range(0, count, self.max_batch):
            stop = min(start + self.max_batch, count)
            future: asyncio.Future[torch.Tensor] = loop.create_future()
            self._queue.append(_Chunk(stop - start, _bind(load, start, stop), future))
            self._queued_images += stop - start
            futures.append(future)
        self._wakeup.set()
        rows = await asyncio.gather(*futures)
        return rows[0] if len(rows) == 1 else torch.cat(rows)

    async def _run(self) -> None:
        try:
            while self._queue or self._inflight:
                delay = self._dispatch_delay()
                if delay == 0:
                    self._dispatch(self._take())
                    continue
                self._wakeup.clear()  # no await since the state was read: no wake-up is lost
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=delay)
                except asyncio.TimeoutError:
                    pass
        finally:
            self._runner = None
            self._abandon()
            if self._on_idle is not None:
                self._on_idle(self)

    def _dispatch_delay(self) -> float | None:
        """0: dispatch now; seconds: wait at most that long; None: wait for a wake-up."""
        if not self._queue or len(self._inflight) >= self.max_inflight:
            return None
        if not self._inflight or self._queued_images >= self.max_batch:
            return 0.0
        return max(0.0, self._queue[0].enqueued + self.max_wait - time.perf_counter())

    def _take(self) -> list[_Chunk]:
        """Whole chunks from the front of the queue, up to ``max_batch`` images in all."""
        batch: list[_Chunk] = []
        count = 0
        while self._queue:
            chunk = self._queue[0]
            if batch and count + chunk.count > self.max_batch:
                break
            self._queue.popleft()
            self._queued_images -= chunk.count
            if chunk.future.done():  # its request was cancelled (client went away)
                continue
            batch.append(chunk)
            count += chunk.count
        return batch

    def _dispatch(self, batch: list[_Chunk]) -> None:
        if not batch:
            return
        task = asyncio.get_running_loop().create_task(self._execute(batch))
        self._inflight.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wakeup.set()

    async def _execute(self, batch: list[_Chunk]) -> None:
        loop = asyncio.get_running_loop()
        try:
            ready, rows, failures = await loop.run_in_executor(self._executor, self._load_and_forward, batch)
        except Exception as exc:
            logger.warning("batched forward of %d images failed: %s", sum(c.count for c in batch), exc)
            ready, rows, failures = [], None, [(chunk, exc) for chunk in batch]
        for chunk, exc in failures:
            if not chunk.future.done():
                chunk.future.set_exception(exc)
        start = 0
        for chunk in ready:
            if not chunk.future.done():
                chunk.future.set_result(rows[start : start + chunk.count])
            start += chunk.count

    def _load_and_forward(self, batch: list[_Chunk]):
        """On the executor: each chunk's tensor (a failing load fails only its chunk), one forward."""
        ready, tensors, failures = [], [], []
        for chunk in batch:
            try:
                tensor = chunk.load()
                if tensor.shape[0] != chunk.count:
                    raise RuntimeError(f"load returned {tensor.shape[0]} images for a chunk of {chunk.count}")
            except Exception as exc:
                failures.append((chunk, exc))
                continue
            ready.append(chunk)
            tensors.append(tensor)
        if not tensors:
            return ready, None, failures
        images = tensors[0] if len(tensors) == 1 else torch.cat(tensors)
        PREDICT_BATCH.observe(images.shape[0])
        rows = self._forward(images)
        if rows.shape[0] != images.shape[0]:
            raise RuntimeError(f"forward returned {rows.shape[0]} rows for {images.shape[0]} images")
        return ready, rows, failures

    def _abandon(self) -> None:
        # Only reached with work left when the runner itself was cancelled (loop shutdown).
        for task in self._inflight:
            task.cancel()
        for chunk in self._queue:
            chunk.future.cancel()
        self._queue.clear()
        self._queued_images = 0


def _bind(load: Load, start: int, stop: int) -> Callable[[], torch.Tensor]:
    return lambda: load(start, stop)
