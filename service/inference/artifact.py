"""Load an exported model artefact (``model.onnx`` or ``model.pt2``, and ``model_card.json``).

The artefact is self-contained (docs/architecture.md, "The model artefact"):
normalisation and resizing live inside the exported program, so serving it
needs no training code. The ONNX graph runs on ONNX Runtime when the card
names one (the worker checked it against PyTorch); otherwise, or when the
operator asks for ``torch``, the ``torch.export`` program runs eagerly.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import ValidationError

from service.inference.runtime import OnnxProgram, onnx_session
from service.model_card import PROGRAM_FILE, WEIGHTS_FILE, ModelCard, card_key
from service.storage import BlobStore

logger = logging.getLogger(__name__)

Runtime = Literal["onnxruntime", "torch"]
RUNTIMES: tuple[Runtime, ...] = ("onnxruntime", "torch")


class ArtifactError(RuntimeError):
    """The stored artefact is missing or malformed: a server-side problem, not the client's."""


@dataclass(frozen=True)
class LoadedModel:
    """A ready-to-run program (``(B, C, H, W)`` -> ``(B, K)`` logits), the runtime running it, the
    input it expects and the card it was loaded with."""

    module: Callable[[torch.Tensor], torch.Tensor]
    runtime: Runtime
    height: int
    width: int
    channels: int
    num_classes: int
    size_bytes: int
    card: ModelCard


def load_artifact(
    store: BlobStore, *, blob_prefix: str, runtime: Runtime = "onnxruntime", threads: int = 1
) -> LoadedModel:
    """Load the program ``runtime`` prefers (``threads`` intra-op threads for ONNX Runtime) and its
    card; size = program + weights bytes."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    card = read_card(store, blob_prefix=blob_prefix)
    if runtime == "onnxruntime" and card.onnx.file is not None:
        key, program, chosen = f"{blob_prefix}/{card.onnx.file}", _onnx_program, "onnxruntime"
    else:
        key, program, chosen = f"{blob_prefix}/{PROGRAM_FILE}", _torch_program, "torch"
    if not store.exists(key):
        raise ArtifactError(f"artefact {blob_prefix!r} has no {key.rsplit('/', 1)[-1]}")
    try:
        module = program(store, key, threads=threads)
    except Exception as exc:  # a corrupt or incompatible program, whatever the runtime raises
        raise ArtifactError(f"cannot load {key!r}: {type(exc).__name__}: {exc}") from exc
    shape = card.input
    loaded = LoadedModel(
        module=module,
        runtime=chosen,
        height=shape.height,
        width=shape.width,
        channels=shape.channels,
        num_classes=len(card.class_names),
        size_bytes=_artifact_bytes(store, blob_prefix=blob_prefix, program=key),
        card=card,
    )
    _warm_up(loaded, key=key)
    logger.info("loaded %s for %s", key, chosen)
    return loaded


def _onnx_program(store: BlobStore, key: str, *, threads: int) -> Callable[[torch.Tensor], torch.Tensor]:
    with store.open_read(key) as handle:
        return OnnxProgram(onnx_session(handle.read(), threads=threads))


def _torch_program(store: BlobStore, key: str, *, threads: int) -> Callable[[torch.Tensor], torch.Tensor]:
    del threads  # torch's threads are set per forward pass (the predictor's core share)
    with store.open_read(key) as handle:
        program = io.BytesIO(handle.read())  # torch.export.load seeks; an object-store stream cannot
    module = torch.export.load(program).module()
    _to_eval(module)
    return module


def read_card(store: BlobStore, *, blob_prefix: str, revision: int = 0) -> ModelCard:
    """Card ``revision`` (default: the trained one) stored under ``blob_prefix``; ``ArtifactError`` naming
    what is wrong otherwise."""
    key = card_key(blob_prefix, revision=revision)
    if not store.exists(key):
        raise ArtifactError(f"artefact {blob_prefix!r} has no {key.rsplit('/', 1)[-1]}")
    with store.open_read(key) as handle:
        raw = handle.read()
    try:
        return ModelCard.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'card'}: {e['msg']}" for e in exc.errors())
        raise ArtifactError(f"{key!r} is malformed: {problems}") from exc


def _to_eval(module: torch.nn.Module) -> None:
    # An exported graph is frozen in the mode it was exported in (the worker exports in
    # eval mode); recent torch refuses .eval() on it, which is then a no-op for us.
    try:
        module.eval()
    except NotImplementedError:
        pass


def _artifact_bytes(store: BlobStore, *, blob_prefix: str, program: str) -> int:
    # The weights file stands for the memory of the parameters the program holds once loaded.
    keys = (program, f"{blob_prefix}/{WEIGHTS_FILE}")
    return sum(store.size(key) for key in keys if store.exists(key))


def _warm_up(loaded: LoadedModel, *, key: str) -> None:
    """First call compiles nothing but is slow; also check the output shape and that rows
    are independent of their batch-mates (micro-batching relies on it)."""
    probe = torch.rand(2, loaded.channels, loaded.height, loaded.width, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        try:
            pair, single = loaded.module(probe), loaded.module(probe[:1])
        except Exception as exc:
            raise ArtifactError(f"{key!r} fails on a (2, C, H, W) probe: {type(exc).__name__}: {exc}") from exc
    if not isinstance(pair, torch.Tensor) or tuple(pair.shape) != (2, loaded.num_classes):
        shape = tuple(pair.shape) if isinstance(pair, torch.Tensor) else type(pair).__name__
        raise ArtifactError(f"{key!r} returns {shape}; expected (B, {loaded.num_classes}) logits")
    if not torch.allclose(pair[:1], single, rtol=1e-3, atol=1e-4):
        logger.warning("%s: outputs depend on the batch (exported in training mode?)", key)
