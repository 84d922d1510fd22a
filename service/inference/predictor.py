"""Hosted inference: cached artefacts, decoding and batched forward passes off the event loop.

Decoding and model execution run on a bounded thread pool (``threads``
workers), together: a batch decodes its images and runs the model in one hop
to the pool. Each forward pass takes an equal share of the cores among the
passes running at that moment: a lone request gets all of them, concurrent
batches split them instead of oversubscribing the CPU. An ONNX Runtime
session's threads are fixed when it is built, so it gets the share of each of
the ``threads`` passes that may run at once; for the PyTorch fallback
:class:`CoreShare` sets each pass's thread count as the passes come and go.
Model loads run on the loop's default executor so a slow load never occupies
an inference thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from rarefit.decision import DecisionRule, decide
from service.inference.artifact import RUNTIMES, ArtifactError, LoadedModel, Runtime, load_artifact, read_card
from service.inference.batcher import MicroBatcher
from service.inference.cache import ModelCache
from service.inference.decode import decode_batch
from service.model_card import ModelCard
from service.storage import BlobStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRef:
    """Which model to serve, copied out of its database row so the session is released before inference.

    Everything else (class names, positive class, calibration, operating point)
    comes from the model card; ``revision`` tells a cached card from a newer one.
    """

    id: str
    blob_prefix: str
    revision: int = 0


class DecisionError(ValueError):
    """A per-request decision override the model cannot take (a client error)."""


def decision_rule(card: ModelCard, *, threshold: float | None) -> DecisionRule:
    """The card's operating point, or a per-request ``threshold`` on its positive class (binary models only)."""
    if threshold is None:
        return card.operating_point.decision_rule()
    if card.positive_class is None or len(card.class_names) != 2:
        raise DecisionError(f"a threshold override needs a binary model; this one has {len(card.class_names)} classes")
    return DecisionRule.binary(positive_class=card.positive_class, threshold=threshold)


def probabilities(module: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """Softmax of the program's logits in float64, as training's evaluation computes it (the tuned
    threshold was chosen on those values).

    In numpy: on a handful of rows each torch op costs more dispatch than
    arithmetic, as much as a small ONNX graph's whole forward pass.
    """
    with torch.inference_mode():
        logits = module(images)
    wide = logits.numpy().astype(np.float64)
    wide = np.exp(wide - wide.max(axis=1, keepdims=True))
    return torch.from_numpy(wide / wide.sum(axis=1, keepdims=True))


class CoreShare:
    """Intra-op threads for a forward pass: the cores divided among the passes running now."""

    def __init__(self, cores: int) -> None:
        if cores < 1:
            raise ValueError(f"cores must be >= 1, got {cores!r}")
        self.cores = cores
        self._running = 0
        self._lock = threading.Lock()

    @contextmanager
    def claim(self) -> Iterator[int]:
        with self._lock:
            self._running += 1
            share = max(1, self.cores // self._running)
        try:
            yield share
        finally:
            with self._lock:
                self._running -= 1


class Predictor:
    """Serves ``predict`` for any registered model; one per process (``app.state.predictor``)."""

    def __init__(
        self,
        *,
        store: BlobStore,
        max_cache_bytes: int,
        max_batch: int,
        max_wait_ms: float,
        threads: int,
        runtime: Runtime = "onnxruntime",
    ) -> None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {threads!r}")
        if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
            raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}")
        if not max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms!r}")
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        self.store, self.runtime = store, runtime
        self.max_batch, self.max_wait_ms, self.threads = max_batch, float(max_wait_ms), threads
        self.cache: ModelCache[LoadedModel] = ModelCache(max_bytes=max_cache_bytes)
        self.cores = CoreShare(_cpu_count())
        # A lone pass split over more threads than this share loses more to waiting on a
        # descheduled thread than it gains, on a CPU other processes also use.
        self.session_threads = max(1, self.cores.cores // threads)
        self._thread_state = threading.local()
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rarefit-predict")
        self._batchers: dict[str, MicroBatcher] = {}
        self._cards: dict[str, ModelCard] = {}

    async def predict(
        self,
        model: ModelRef,
        *,
        images: Sequence[bytes],
        names: Sequence[str | None] | None = None,
        max_pixels: int,
        threshold: float | None = None,
    ) -> list[dict[str, Any]]:
        """One ``{"label", "class_index", "probabilities", "scores_version", "decision"}`` per image, in order.

        The decision is the card's operating point, or ``threshold`` on the
        positive class when given. Raises ``DecisionError`` for an override the
        model cannot take, ``InstanceError`` (a ``ValueError``) naming the first
        image that cannot be decoded, ``ArtifactError`` when the stored model is unusable.
        """
        if not images:
            raise ValueError("images must hold at least one image")
        names = list(names) if names is not None else [None] * len(images)
        if len(names) != len(images):
            raise ValueError(f"got {len(names)} names for {len(images)} images")
        loaded = await self._load(model)
        card = await self._card(model, loaded)
        rule = decision_rule(card, threshold=threshold)
        images, shape = list(images), (loaded.height, loaded.width, loaded.channels)

        def decode(start: int, stop: int) -> torch.Tensor:  # runs on the pool, inside the batch
            return decode_batch(
                images[start:stop],
                names=names[start:stop],
                height=shape[0],
                width=shape[1],
                channels=shape[2],
                max_pixels=max_pixels,
                first_index=start,
            )

        probs = await self._batcher(model.id, loaded).submit_lazy(count=len(images), load=decode)
        return predictions(probs.numpy(), card=card, rule=rule, overridden=threshold is not None)

    async def _card(self, model: ModelRef, loaded: LoadedModel) -> ModelCard:
        """The card of the model's current revision (re-read once after a re-fitted operating point)."""
        card = self._cards.get(model.id, loaded.card)
        if card.revision != model.revision:
            loop = asyncio.get_running_loop()
            read = partial(read_card, self.store, blob_prefix=model.blob_prefix, revision=model.revision)
            card = await loop.run_in_executor(None, read)
            if len(card.class_names) != loaded.num_classes:
                raise ArtifactError(f"model {model.id}: card revision {card.revision} changed the classes")
            self._cards[model.id] = card
        return card

    async def _load(self, model: ModelRef) -> LoadedModel:
        cached = self.cache.get(model.id)
        if cached is not None:
            return cached
        load = partial(
            _load_sized, self.store, blob_prefix=model.blob_prefix, runtime=self.runtime, threads=self.session_threads
        )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, partial(self.cache.get_or_load, model.id, load=load))

    def _batcher(self, model_id: str, loaded: LoadedModel) -> MicroBatcher:
        batcher = self._batchers.get(model_id)
        if batcher is None or batcher.loop not in (None, asyncio.get_running_loop()):
            batcher = MicroBatcher(
                forward=partial(self._forward, loaded),
                executor=self._executor,
                max_batch=self.max_batch,
                max_wait_ms=self.max_wait_ms,
                max_inflight=self.threads,
                on_idle=partial(self._drop_batcher, model_id),
            )
            self._batchers[model_id] = batcher
        return batcher

    def _forward(self, loaded: LoadedModel, images: torch.Tensor) -> torch.Tensor:
        if loaded.runtime == "onnxruntime":  # its session's pool is shared by concurrent runs
            return probabilities(loaded.module, images)
        with self.cores.claim() as threads:
            # This thread's intra-op pool (OpenMP: per calling thread). The call is expensive next
            # to a small model's whole request, so it is made only when the share changes.
            if getattr(self._thread_state, "threads", None) != threads:
                torch.set_num_threads(threads)
                self._thread_state.threads = threads
            return probabilities(loaded.module, images)

    def _drop_batcher(self, model_id: str, batcher: MicroBatcher) -> None:
        # An idle batcher is dropped so it does not keep an evicted model alive.
        if self._batchers.get(model_id) is batcher:
            del self._batchers[model_id]

    def close(self) -> None:
        """Stop the thread pool (queued work is cancelled) and drop every cached model."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._batchers.clear()
        self._cards.clear()
        self.cache.clear()


def predictions(probs: np.ndarray, *, card: ModelCard, rule: DecisionRule, overridden: bool) -> list[dict[str, Any]]:
    """The answer per row of (calibrated) probabilities: label, class, probabilities and the decision made."""
    labels, margins = decide(probs, rule=rule)
    names = card.class_names
    out = []
    for row, index, margin in zip(probs.tolist(), labels.tolist(), margins.tolist(), strict=True):
        decision: dict[str, Any] = {"rule": rule.kind, "margin": margin, "overridden": overridden}
        if rule.kind == "threshold":
            decision["thresholds"] = {names[c]: t for c, t in rule.thresholds.items()}
            positive = card.positive_class
            decision["threshold"] = None if positive is None else rule.thresholds.get(positive)
        out.append(
            {
                "label": names[index],
                "class_index": index,
                "probabilities": dict(zip(names, row, strict=True)),
                "scores_version": card.revision,
                "decision": decision,
            }
        )
    return out


def _load_sized(store: BlobStore, *, blob_prefix: str, runtime: Runtime, threads: int) -> tuple[LoadedModel, int]:
    loaded = load_artifact(store, blob_prefix=blob_prefix, runtime=runtime, threads=threads)
    return loaded, loaded.size_bytes


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
