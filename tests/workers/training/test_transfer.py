"""Pretrained weights onto small grayscale inputs: timm is the oracle for the channel rule and the key layouts.

The "pretrained" weights are made here: a torchvision ResNet-18 trained for a
few steps at 3×64×64 and saved in torchvision's own layout (no download).
"""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from timm.models import adapt_input_conv as timm_adapt_input_conv

from workers.training.networks import build_network, load_init_state
from workers.training.transfer import adapt_input_conv, prepare_pretrained


def _briefly_trained_resnet18(path) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=4)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        images, labels = torch.rand(8, 3, 64, 64, generator=g), torch.randint(4, (8,), generator=g)
        optimizer.zero_grad()
        F.cross_entropy(net(images), labels).backward()
        optimizer.step()
    torch.save(net.state_dict(), path)
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory):
    return _briefly_trained_resnet18(tmp_path_factory.mktemp("weights") / "resnet18-imagenet.pth")


def _small(arch, *, channels=1, size=28, classes=4):
    return build_network(
        arch,
        num_classes=classes,
        in_channels=channels,
        input_size=(size, size),
        mean=[0.0] * channels,
        std=[1.0] * channels,
    )


@pytest.mark.parametrize("in_chans", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("in_c", [3, 12])
def test_adapt_input_conv_matches_timm(in_chans, in_c):
    weight = torch.randn(16, in_c, 3, 3, generator=torch.Generator().manual_seed(in_chans))
    if in_c == 12 and in_chans != 1 and in_chans != 12:
        with pytest.raises(ValueError, match="only from RGB"):
            adapt_input_conv(in_chans, weight)
        return
    torch.testing.assert_close(adapt_input_conv(in_chans, weight), timm_adapt_input_conv(in_chans, weight.clone()))


def test_grayscale_28px_resnet_keeps_every_pretrained_tensor(resnet_weights):
    model = _small("resnet18")
    state, notes = prepare_pretrained(model, resnet_weights)
    skipped = load_init_state(model, state, strict_backbone=True)
    assert skipped == ["head.weight", "head.bias"] or set(skipped) <= {"head.weight", "head.bias"}
    conv1 = model.backbone.conv1
    assert (conv1.kernel_size, conv1.stride, conv1.padding, conv1.in_channels) == ((7, 7), (1, 1), (3, 3), 1)
    torch.testing.assert_close(conv1.weight, resnet_weights["conv1.weight"].sum(dim=1, keepdim=True))
    own = model.state_dict()
    for key, value in resnet_weights.items():
        if key != "conv1.weight" and not key.startswith("fc."):
            torch.testing.assert_close(own[f"backbone.{key}"], value, rtol=0, atol=0, msg=key)
    assert any("7x7 kernel kept at stride 1" in note for note in notes)
    assert any("3 -> 1 input channels (summed over RGB)" in note for note in notes)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 4)


def test_adapted_stem_sees_a_gray_image_as_the_pretrained_stem_sees_it_in_rgb(resnet_weights):
    model = _small("resnet18")
    load_init_state(model, prepare_pretrained(model, resnet_weights)[0])
    gray = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    reference = F.conv2d(gray.expand(-1, 3, -1, -1), resnet_weights["conv1.weight"], stride=1, padding=3)
    torch.testing.assert_close(model.backbone.conv1(gray), reference, rtol=1e-5, atol=1e-5)


def test_large_rgb_inputs_load_unchanged_with_the_same_head(resnet_weights):
    model = _small("resnet18", channels=3, size=64)
    state, notes = prepare_pretrained(model, resnet_weights)
    assert notes == [] and load_init_state(model, state) == []
    reference = torchvision.models.resnet18(weights=None, num_classes=4)
    reference.load_state_dict(resnet_weights)
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(model.eval()(x), reference.eval()(x))


@pytest.mark.parametrize(
    ("timm_name", "arch"),
    [
        ("resnet18", "resnet18"),
        ("efficientnet_b0", "efficientnet_b0"),
        ("mobilenetv3_small_100", "mobilenet_v3_small"),
        ("convnext_tiny", "convnext_tiny"),
    ],
)
def test_timm_layouts_load_and_give_timms_outputs(timm_name, arch):
    torch.manual_seed(0)
    reference = timm.create_model(timm_name, pretrained=False, num_classes=5).eval()
    model = _small(arch, channels=3, size=64, classes=5)
    state, _ = prepare_pretrained(model, reference.state_dict())
    assert load_init_state(model, state, strict_backbone=True) == []
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), reference(x), rtol=1e-4, atol=1e-4)


def test_timm_convnext_patchify_stem_is_kept_on_small_grayscale_inputs():
    reference = timm.create_model("convnext_tiny", pretrained=False, num_classes=2)
    model = _small("convnext_tiny", classes=2)
    state, notes = prepare_pretrained(model, reference.state_dict())
    load_init_state(model, state)
    stem = model.backbone.features[0][0]
    assert (stem.kernel_size, stem.stride, stem.in_channels) == ((4, 4), (2, 2), 1)
    torch.testing.assert_close(stem.weight, reference.state_dict()["stem.0.weight"].sum(1, keepdim=True))
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 2)
    assert any("timm layout" in note for note in notes)


def test_foreign_weights_are_refused_naming_the_problem(resnet_weights):
    model = _small("efficientnet_b0")
    with pytest.raises(ValueError, match="neither the torchvision nor the timm layout of efficientnet_b0"):
        prepare_pretrained(model, resnet_weights)
    resnet = _small("resnet34")
    state, _ = prepare_pretrained(resnet, resnet_weights)  # names fit, resnet-34 has more blocks
    with pytest.raises(ValueError, match="missing"):
        load_init_state(resnet, state, strict_backbone=True)
