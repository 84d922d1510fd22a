"""Self-contained model artefacts: a ``torch.export`` program and safetensors weights.

The program takes float32 ``(B, C, H, W)`` in ``[0, 1]`` with a dynamic batch
dimension and returns logits; normalisation and resizing are inside it, so it
runs with ``torch.export.load(path).module()`` and no rarefit code.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

logger = logging.getLogger(__name__)

MAX_EXPORT_BATCH = 4096
_EXAMPLE_BATCH = 2  # not 1: export specialises size-1 dimensions to constants


class Tempered(nn.Module):
    """``model``'s logits divided by a temperature (Guo et al. 2017), so a softmax of them is calibrated."""

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        self.model, self.temperature = model, float(temperature)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) / self.temperature


def export_program(
    model: nn.Module, path: Path | str, *, input_shape: tuple[int, int, int], temperature: float = 1.0
) -> None:
    """Export ``model`` (a copy, on the CPU, in eval mode) for inputs ``(B, *input_shape)`` to ``path``.

    A ``temperature`` other than 1 is folded into the program: it returns ``logits / temperature``.
    """
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {input_shape!r}")
    program = _export(model if temperature == 1.0 else Tempered(model, temperature), input_shape)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(path))
    logger.info("exported %s for input %s to %s", type(model).__name__, input_shape, path)


def _export(model: nn.Module, input_shape: tuple[int, int, int]) -> torch.export.ExportedProgram:
    frozen = copy.deepcopy(model).cpu().float().eval()
    frozen = frozen.to(memory_format=torch.contiguous_format)
    for parameter in frozen.parameters():
        parameter.requires_grad_(False)
    example = torch.rand((_EXAMPLE_BATCH, *input_shape), generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    with torch.no_grad():
        return torch.export.export(frozen, (example,), dynamic_shapes=({0: batch},))


def load_program(path: Path | str) -> nn.Module:
    """The exported network as a callable module (``torch.export.load(path).module()``)."""
    with warnings.catch_warnings():
        # Some torch versions wrap the archive's read-only buffers and warn; the weights are never written.
        warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)
        return torch.export.load(str(path)).module()


def weights_state(model: nn.Module) -> dict[str, Tensor]:
    """The ``state_dict`` as contiguous CPU tensors that share no memory (what safetensors requires)."""
    state: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        # clone(): safetensors refuses tensors aliasing one another (tied weights, views).
        state[key] = value.detach().to("cpu").contiguous().clone()
    return state


def save_weights(model: nn.Module, path: Path | str) -> None:
    """Write the network's ``state_dict`` as safetensors (loadable without pickle)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights_state(model), str(path), metadata={"format": "pt"})


def load_weights(path: Path | str) -> dict[str, Tensor]:
    """A state dict read from a safetensors file onto the CPU."""
    return load_file(str(path), device="cpu")
