"""Real model artefacts for the inference tests, built the way the worker builds them.

A tiny network with its normalisation inside is exported with ``torch.export``
and as ONNX (dynamic batch), saved as ``model.pt2`` and ``model.onnx`` beside
``weights.safetensors`` and a ``model_card.json`` in a real ``LocalBlobStore``.
Exporting takes seconds, so each program is exported once per session and
copied per test.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from rarefit.decision import DecisionRule
from service.inference import ModelRef
from service.model_card import (
    CARD_FILE,
    ONNX_FILE,
    PROGRAM_FILE,
    WEIGHTS_FILE,
    InputSpec,
    ModelCard,
    Normalization,
    OnnxExport,
    OperatingPoint,
)
from service.storage import LocalBlobStore
from workers.training.export import export_onnx


class TinyNet(nn.Module):
    """Normalise, one conv, a linear head over every pixel (so each pixel matters)."""

    def __init__(self, *, channels: int, height: int, width: int, num_classes: int, seed: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.full((1, channels, 1, 1), 0.4))
        self.register_buffer("std", torch.full((1, channels, 1, 1), 0.3))
        self.conv = nn.Conv2d(channels, 3, kernel_size=3, padding=1)
        self.head = nn.Linear(3 * height * width, num_classes)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return self.head(torch.relu(self.conv(x)).flatten(1))


@dataclass(frozen=True)
class Exported:
    net: TinyNet
    folder: Path  # model.pt2 + model.onnx + weights.safetensors + model_card.json
    height: int
    width: int
    channels: int
    class_names: list[str]


def export_net(folder: Path, *, channels: int, height: int, width: int, class_names: list[str], seed: int) -> Exported:
    net = TinyNet(channels=channels, height=height, width=width, num_classes=len(class_names), seed=seed).eval()
    example = torch.rand(2, channels, height, width, generator=torch.Generator().manual_seed(seed))
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
    folder.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, folder / PROGRAM_FILE)
    export_onnx(net, folder / ONNX_FILE, input_shape=(channels, height, width))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / WEIGHTS_FILE))
    exported = Exported(net, folder, height, width, channels, class_names)
    (folder / CARD_FILE).write_text(card_for(exported).to_json())
    return exported


def card_for(
    exported: Exported, *, threshold: float | None = None, positive_class: int | None = None, revision: int = 0
) -> ModelCard:
    """The card the worker would write for ``exported``, with a binary threshold when given."""
    rule = DecisionRule.binary(positive_class=positive_class or 0, threshold=threshold)
    return ModelCard(
        revision=revision,
        arch="tiny",
        class_names=exported.class_names,
        positive_class=positive_class,
        files=[PROGRAM_FILE, ONNX_FILE, WEIGHTS_FILE],
        input=InputSpec(height=exported.height, width=exported.width, channels=exported.channels),
        normalization=Normalization(mean=[0.4] * exported.channels, std=[0.3] * exported.channels),
        operating_point=OperatingPoint.from_rule(rule),
        job_id="job",
        onnx=OnnxExport(file=ONNX_FILE, max_abs_diff=0.0),
    )


@pytest.fixture(scope="session")
def binary_grey(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """Two classes, 1 x 12 x 10 (H != W to catch transposes)."""
    return export_net(
        tmp_path_factory.mktemp("grey"), channels=1, height=12, width=10, class_names=["normal", "pneumonia"], seed=1
    )


@pytest.fixture(scope="session")
def three_rgb(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """Three classes, 3 x 8 x 8."""
    return export_net(
        tmp_path_factory.mktemp("rgb"), channels=3, height=8, width=8, class_names=["a", "b", "c"], seed=2
    )


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def install(
    store: LocalBlobStore,
    exported: Exported,
    *,
    prefix: str,
    threshold: float | None = None,
    positive_class: int | None = None,
) -> None:
    """Copy an exported artefact into the blob store under ``prefix`` (its card with a threshold when given)."""
    for path in exported.folder.iterdir():
        store.write(f"{prefix}/{path.name}", path.read_bytes())
    if threshold is not None or positive_class is not None:
        card = card_for(exported, threshold=threshold, positive_class=positive_class)
        store.write(f"{prefix}/{CARD_FILE}", card.to_json().encode())


@pytest.fixture
def installed(store: LocalBlobStore) -> Callable[..., str]:
    """``installed(exported, model_id)`` -> blob prefix of the copy in ``store``."""

    def make(exported: Exported, model_id: str, **card: float | int | None) -> str:
        prefix = f"jobs/{model_id}/artifacts"
        install(store, exported, prefix=prefix, **card)
        return prefix

    return make


def png_bytes(array: np.ndarray) -> bytes:
    """PNG of a uint8 (H, W) or (H, W, 3) array."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def random_images(count: int, *, height: int, width: int, channels: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 1 else (height, width, channels)
    return [rng.integers(0, 256, size=shape, dtype=np.uint8) for _ in range(count)]


def eager_probabilities(exported: Exported, arrays: list[np.ndarray]) -> torch.Tensor:
    """The oracle: the original (not exported) network on the exact pixels, softmax in float64."""
    batch = torch.stack([torch.from_numpy(a.reshape(a.shape[0], a.shape[1], -1)).permute(2, 0, 1) for a in arrays])
    with torch.no_grad():
        logits = exported.net(batch.float() / 255)
    return torch.softmax(logits.double(), dim=1)


@pytest.fixture
def helpers() -> type:
    """Plain helper functions for the test modules (conftest modules are not importable)."""

    class Helpers:
        png = staticmethod(png_bytes)
        images = staticmethod(random_images)
        eager = staticmethod(eager_probabilities)
        install = staticmethod(install)
        card_for = staticmethod(card_for)
        Row = ModelRef

    return Helpers
