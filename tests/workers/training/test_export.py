"""Exported programs match the eager model at any batch size; safetensors weights round-trip."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workers.training.engine import fold_logit_adjustment
from workers.training.export import export_program, load_program, load_weights, save_weights, tempered
from workers.training.networks import CosineHead, build_network


@pytest.mark.parametrize("arch", ["simple_cnn", "resnet18"])
def test_exported_program_equals_eager_model_for_batches_1_and_5(tmp_path, arch):
    torch.manual_seed(0)
    model = build_network(arch, num_classes=3, in_channels=1, input_size=(28, 28), mean=[0.3], std=[0.2])
    model.train()  # export must switch its copy to eval mode (BatchNorm running stats, no dropout)
    path = tmp_path / "model.pt2"
    export_program(model, path, input_shape=(1, 28, 28))
    assert model.training  # the caller's model is left as it was
    program = load_program(path)
    model.eval()
    for batch in (1, 5):
        x = torch.rand(batch, 1, 28, 28)
        with torch.no_grad():
            torch.testing.assert_close(program(x), model(x), rtol=1e-5, atol=1e-5)


def test_exported_program_carries_resizing(tmp_path):
    model = build_network(
        "simple_cnn", num_classes=2, in_channels=3, input_size=(10, 12), image_size=16, mean=[0.5] * 3, std=[0.25] * 3
    ).eval()
    export_program(model, tmp_path / "m.pt2", input_shape=(3, 10, 12))
    x = torch.rand(3, 3, 10, 12)
    with torch.no_grad():
        torch.testing.assert_close(load_program(tmp_path / "m.pt2")(x), model(x), rtol=1e-5, atol=1e-5)


def test_a_temperature_is_folded_into_the_program(tmp_path):
    model = build_network("simple_cnn", num_classes=2, in_channels=1, input_size=(8, 8), mean=[0.5], std=[0.5]).eval()
    export_program(tempered(model, 2.5), tmp_path / "t.pt2", input_shape=(1, 8, 8))
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(load_program(tmp_path / "t.pt2")(x), model(x) / 2.5, rtol=1e-5, atol=1e-5)
    assert tempered(model, 1.0) is model
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        tempered(model, 0.0)


def test_export_rejects_bad_input_shape(tmp_path):
    model = build_network("simple_cnn", num_classes=2, in_channels=1, input_size=(8, 8), mean=[0.5], std=[0.5])
    with pytest.raises(ValueError, match="input_shape"):
        export_program(model, tmp_path / "m.pt2", input_shape=(8, 8))


def test_weights_round_trip_through_safetensors(tmp_path):
    model = build_network("resnet18", num_classes=4, in_channels=3, input_size=(32, 32), mean=[0.5] * 3, std=[0.5] * 3)
    path = tmp_path / "weights.safetensors"
    save_weights(model, path)
    loaded = load_weights(path)
    assert loaded.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)
    assert path.read_bytes()[:8] != b"PK\x03\x04"  # not a pickle/zip archive


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.decoder = nn.Linear(4, 4)
        self.decoder.weight = self.encoder.weight  # shared storage, which safetensors refuses as-is


def test_save_weights_handles_shared_and_non_contiguous_tensors(tmp_path):
    model = _Tied()
    model.register_buffer("transposed", torch.arange(6.0).view(2, 3).t())
    save_weights(model, tmp_path / "w.safetensors")
    loaded = load_weights(tmp_path / "w.safetensors")
    torch.testing.assert_close(loaded["decoder.weight"], model.encoder.weight.detach())
    torch.testing.assert_close(loaded["transposed"], model.transposed)


def test_a_cosine_head_exports_with_its_adjustment_and_temperature(tmp_path):
    torch.manual_seed(0)
    model = build_network(
        "simple_cnn", num_classes=3, in_channels=1, input_size=(8, 8), mean=[0.5], std=[0.5], head="cosine"
    ).eval()
    fold_logit_adjustment(model, torch.tensor([0.5, -1.0, 0.25]))
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        cosine = F.normalize(model.features(x), dim=1) @ F.normalize(model.head.weight, dim=1).t()
        expected = (30.0 * cosine - torch.tensor([0.5, -1.0, 0.25])) / 2.0
    assert isinstance(model.head, CosineHead)
    served = tempered(model, 2.0)
    export_program(served, tmp_path / "m.pt2", input_shape=(1, 8, 8))
    with torch.no_grad():
        torch.testing.assert_close(load_program(tmp_path / "m.pt2")(x), expected, rtol=1e-5, atol=1e-5)
