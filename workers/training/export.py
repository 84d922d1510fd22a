"""Self-contained model artefacts: a ``torch.export`` program, an ONNX graph and safetensors weights.

Both programs take float32 ``(B, C, H, W)`` in ``[0, 1]`` with a dynamic batch
dimension and return logits; normalisation and resizing are inside them, so
they run with ``torch.export.load(path).module()`` or any ONNX runtime and no
rarefit code.
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
ONNX_INPUT, ONNX_OUTPUT = "images", "logits"
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


def tempered(model: nn.Module, temperature: float) -> nn.Module:
    """The network to export: ``model`` itself at temperature 1, else its logits over ``temperature``."""
    return model if temperature == 1.0 else Tempered(model, temperature)


def export_program(model: nn.Module, path: Path | str, *, input_shape: tuple[int, int, int]) -> None:
    """Export ``model`` (a copy, on the CPU, in eval mode) for inputs ``(B, *input_shape)`` to ``path``."""
    _check_shape(input_shape)
    program = _export(model, input_shape)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(path))
    logger.info("exported %s for input %s to %s", type(model).__name__, input_shape, path)


def export_onnx(model: nn.Module, path: Path | str, *, input_shape: tuple[int, int, int]) -> None:
    """Export ``model`` as one self-contained ONNX file (input ``ONNX_INPUT``, output ``ONNX_OUTPUT``)
    with the dynamo exporter; any failure of the exporter propagates to the caller."""
    _check_shape(input_shape)
    frozen, example, dynamic = _prepared(model, input_shape)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # The exporter warns about its own internals (deprecations in onnxscript, version hints).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            frozen,
            (example,),
            str(path),
            dynamo=True,
            external_data=False,  # one file: the artefact must travel as such
            dynamic_shapes=dynamic,
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            verbose=False,
        )
    logger.info("exported %s as ONNX (%s) for input %s", type(model).__name__, path.name, input_shape)


def _check_shape(input_shape: tuple[int, int, int]) -> None:
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {input_shape!r}")


def _prepared(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[nn.Module, Tensor, tuple[dict, ...]]:
    """A frozen CPU eval copy, an example batch and the dynamic batch dimension."""
    frozen = copy.deepcopy(model).cpu().float().eval()
    frozen = frozen.to(memory_format=torch.contiguous_format)
    for parameter in frozen.parameters():
        parameter.requires_grad_(False)
    example = torch.rand((_EXAMPLE_BATCH, *input_shape), generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    return frozen, example, ({0: batch},)


def _export(model: nn.Module, input_shape: tuple[int, int, int]) -> torch.export.ExportedProgram:
    frozen, example, dynamic = _prepared(model, input_shape)
    with torch.no_grad():
        return torch.export.export(frozen, (example,), dynamic_shapes=dynamic)


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
