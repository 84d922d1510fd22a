"""The ONNX artefact: exported next to ``model.pt2``, then checked against PyTorch before it is kept.

Hosted inference serves ``model.onnx`` with ONNX Runtime when the card names
it and falls back to the ``torch.export`` program otherwise, so a network the
exporter cannot handle (or one whose ONNX outputs drift from PyTorch's) is
still served, and the card says why it is not ONNX.
"""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path

import torch
from torch import nn

from service.inference.runtime import OnnxProgram, onnx_session
from service.model_card import ONNX_FILE, OnnxExport
from workers.training.export import export_onnx

logger = logging.getLogger(__name__)

RELATIVE_TOLERANCE = 1e-3  # of the largest logit: float32 kernels differ, a wrong graph differs by far more
_PROBE_BATCHES = (1, 5)  # 1 and another size: the batch axis must really be dynamic


def export_checked_onnx(model: nn.Module, folder: Path, *, input_shape: tuple[int, int, int]) -> OnnxExport:
    """Write ``folder / ONNX_FILE`` and keep it only if ONNX Runtime reproduces the eager outputs."""
    path = folder / ONNX_FILE
    try:
        export_onnx(model, path, input_shape=input_shape)
        diff, tolerance = _max_abs_diff(path, model, input_shape=input_shape)
    except Exception as exc:  # whatever the exporter or the runtime raise, PyTorch still serves
        path.unlink(missing_ok=True)
        logger.warning("ONNX export of %s failed; it will be served with PyTorch", type(model).__name__, exc_info=True)
        return OnnxExport(file=None, max_abs_diff=None, error=_reason(exc))
    if diff > tolerance:
        path.unlink()
        logger.warning("ONNX outputs differ from PyTorch by %.3g (> %.3g); serving with PyTorch", diff, tolerance)
        return OnnxExport(file=None, max_abs_diff=diff, error=f"outputs differ from PyTorch by {diff:.3g}")
    return OnnxExport(file=ONNX_FILE, max_abs_diff=diff, error=None)


def _max_abs_diff(path: Path, model: nn.Module, *, input_shape: tuple[int, int, int]) -> tuple[float, float]:
    """The largest |ONNX - PyTorch| logit over the probe batches, and the tolerance it must stay under."""
    program = OnnxProgram(onnx_session(path.read_bytes(), threads=1))
    reference = copy.deepcopy(model).cpu().float().eval()
    generator = torch.Generator().manual_seed(0)
    diff, scale = 0.0, 1.0
    for batch in _PROBE_BATCHES:
        images = torch.rand((batch, *input_shape), generator=generator)
        with torch.inference_mode():
            expected = reference(images)
        diff = max(diff, float((program(images) - expected).abs().max()))
        scale = max(scale, float(expected.abs().max()))
    return diff, RELATIVE_TOLERANCE * scale


def _reason(exc: Exception) -> str:
    """One readable line for the card (the exporter's messages run to pages, with terminal colours)."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]
