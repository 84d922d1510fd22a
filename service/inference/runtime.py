"""ONNX Runtime sessions for exported models, built the same way by the worker's export check
and by hosted inference.

Session options are tuned for the small batches a predict request brings: all
graph optimisations on, one sequential stream of operators (``inter_op`` 1),
and an intra-op pool of ``threads``: the predictor passes its core share, the
cores divided among the passes that may run at once (one per inference
thread). Idle pool threads do not spin: on a CPU shared with other processes
a spinning thread takes the core another pass (or the event loop) needs, and
a pass split over threads waits for the slowest of them.
"""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import torch

logger = logging.getLogger(__name__)

PROVIDERS = ("CPUExecutionProvider",)


def onnx_session(model: bytes, *, threads: int) -> ort.InferenceSession:
    """An inference session for the serialised ONNX ``model`` on the CPU."""
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: its warnings would land in every API log
    return ort.InferenceSession(model, sess_options=options, providers=list(PROVIDERS))


class OnnxProgram:
    """A session as a callable ``(B, C, H, W)`` float32 tensor -> ``(B, K)`` logits tensor."""

    def __init__(self, session: ort.InferenceSession) -> None:
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"expected one input and one output, got {len(inputs)} and {len(outputs)}")
        self.session = session
        self._input, self._output = inputs[0].name, outputs[0].name

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        (logits,) = self.session.run([self._output], {self._input: array})
        return torch.from_numpy(logits)
