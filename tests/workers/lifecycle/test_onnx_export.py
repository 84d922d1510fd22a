"""The ONNX artefact: kept when ONNX Runtime reproduces PyTorch, dropped (PyTorch serves) when the
exporter cannot handle the network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from service.inference.runtime import OnnxProgram, onnx_session
from workers.lifecycle.onnx_export import ONNX_FILE, export_checked_onnx
from workers.training.networks import CosineHead, build_network


@pytest.mark.parametrize("head", ["linear", "cosine"])  # the cosine head (LDAM) normalises in float32
def test_a_network_exports_and_runs_on_onnx_runtime_like_pytorch(tmp_path, head: str) -> None:
    torch.manual_seed(0)
    model = build_network(
        "simple_cnn", num_classes=3, in_channels=1, input_size=(28, 28), mean=[0.3], std=[0.2], head=head
    )
    model.train()  # the check must compare in eval mode, like the export
    result = export_checked_onnx(model, tmp_path, input_shape=(1, 28, 28))
    assert result.file == ONNX_FILE and result.error is None
    assert result.max_abs_diff is not None and 0 <= result.max_abs_diff < 1e-4
    program = OnnxProgram(onnx_session((tmp_path / ONNX_FILE).read_bytes(), threads=1))
    x = torch.rand(7, 1, 28, 28)  # a batch size the export never saw: the batch axis is dynamic
    with torch.no_grad():
        torch.testing.assert_close(program(x), model.eval()(x), rtol=1e-4, atol=1e-4)
    assert isinstance(model.head, CosineHead) == (head == "cosine")


class _Eigen(nn.Module):
    """``linalg.eigh`` has no ONNX translation: the dynamo exporter fails on it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.flatten(1)[:, :4]
        return torch.linalg.eigh(rows[:, :, None] * rows[:, None, :]).eigenvalues


def test_a_network_the_exporter_cannot_handle_is_left_to_pytorch(tmp_path) -> None:
    result = export_checked_onnx(_Eigen(), tmp_path, input_shape=(1, 4, 4))
    assert result.file is None and result.max_abs_diff is None
    assert result.error is not None and result.error.startswith("ConversionError")
    assert "\x1b[" not in result.error  # the exporter's terminal colours are stripped
    assert not (tmp_path / ONNX_FILE).exists()
