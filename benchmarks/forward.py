"""The model's own forward time: one image through a downloaded artefact, per serving runtime.

This is the part of a predict request nothing around the model can remove;
``benchmarks.inference`` sets it beside the predict latency (target: predict
p50 ≤ ``GET /v1/jobs/{id}`` p50 + forward + 1 ms). Programs are built the way
the service builds them (default settings): ``onnx_session`` with the
predictor's per-pass core share, or the ``torch.export`` program with torch's
threads set to every core (what a lone pass gets).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from service.config import Settings
from service.inference.runtime import OnnxProgram, onnx_session

RUNTIMES = ("onnxruntime", "torch")


def load(path: Path, *, runtime: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model.onnx`` on ONNX Runtime or ``model.pt2`` eagerly, threaded as the service would."""
    cores = len(os.sched_getaffinity(0))
    if runtime == "onnxruntime":
        share = max(1, cores // Settings().predict_threads)  # as Predictor.session_threads
        return OnnxProgram(onnx_session(path.read_bytes(), threads=share))
    if runtime == "torch":
        torch.set_num_threads(cores)
        return torch.export.load(str(path)).module()
    raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")


def forward_ms(program: Callable[[torch.Tensor], torch.Tensor], *, shape: tuple[int, int, int], calls: int) -> float:
    """Median wall time of one ``(1, *shape)`` forward pass, after a warm-up."""
    image = torch.rand((1, *shape), generator=torch.Generator().manual_seed(0))
    times = []
    with torch.inference_mode():
        for index in range(calls + 10):
            start = time.perf_counter()
            program(image)
            if index >= 10:
                times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)
