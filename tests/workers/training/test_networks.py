"""Networks: every arch trains on tiny and normal inputs; normalisation, resizing and head surgery."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from workers.training.networks import (
    ARCHS,
    Classifier,
    CosineHead,
    build_network,
    load_init_state,
    set_backbone_trainable,
)


def _net(arch: str = "simple_cnn", *, classes: int = 3, channels: int = 1, size: int = 28, **kwargs) -> Classifier:
    return build_network(
        arch,
        num_classes=classes,
        in_channels=channels,
        input_size=(size, size),
        mean=[0.4] * channels,
        std=[0.2] * channels,
        **kwargs,
    )


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 64, 64)])
def test_every_arch_trains_forward_and_backward(arch, shape):
    torch.manual_seed(0)
    model = _net(arch, channels=shape[0], size=shape[1]).train()
    logits = model(torch.rand(2, *shape))
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([0, 2])).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_unknown_arch_lists_supported():
    with pytest.raises(ValueError, match="unknown arch 'vgg11'.*simple_cnn.*convnext_tiny"):
        _net("vgg11")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 0}, "num_classes"),
        ({"mean": [0.1, 0.2]}, "mean and std"),
        ({"std": [0.0]}, "positive"),
        ({"image_size": -4}, "image_size"),
    ],
)
def test_build_network_rejects_bad_arguments(kwargs, message):
    base = {"num_classes": 2, "in_channels": 1, "input_size": (8, 8), "mean": [0.5], "std": [0.5]}
    with pytest.raises(ValueError, match=message):
        build_network("simple_cnn", **{**base, **kwargs})


def test_forward_normalises_inside_the_network():
    model = _net().eval()
    x = torch.rand(3, 1, 28, 28)
    manual = model.head(model.backbone((x - 0.4) / 0.2))
    torch.testing.assert_close(model(x), manual)


def test_image_size_resizes_bilinearly_inside_the_network():
    model = _net("resnet18", size=28, image_size=40).eval()
    x = torch.rand(2, 1, 28, 28)
    resized = F.interpolate((x - 0.4) / 0.2, size=(40, 40), mode="bilinear", antialias=False)
    torch.testing.assert_close(model(x), model.head(model.backbone(resized)))


def test_small_inputs_get_stride_one_stems_and_large_ones_keep_torchvision_stems():
    small, large = _net("resnet18", size=28), _net("resnet18", channels=3, size=64)
    assert small.backbone.conv1.stride == (1, 1) and isinstance(small.backbone.maxpool, torch.nn.Identity)
    assert large.backbone.conv1.kernel_size == (7, 7) and large.backbone.conv1.stride == (2, 2)
    upsampled = _net("resnet18", size=28, image_size=96)
    assert upsampled.backbone.conv1.kernel_size == (7, 7)  # the effective input is 96 px


def test_head_and_backbone_parameters_partition_the_model_and_head_can_be_replaced():
    model = _net("mobilenet_v3_small", classes=4)
    ids = {id(p) for p in model.parameters()}
    backbone, head = {id(p) for p in model.backbone_parameters()}, {id(p) for p in model.head_parameters()}
    assert backbone | head == ids and not backbone & head
    model.replace_head(7)
    assert model.num_classes == 7 and model(torch.rand(2, 1, 28, 28)).shape == (2, 7)


def test_set_backbone_trainable_freezes_only_the_backbone():
    model = _net()
    set_backbone_trainable(model, False)
    assert not any(p.requires_grad for p in model.backbone_parameters())
    assert all(p.requires_grad for p in model.head_parameters())
    set_backbone_trainable(model, True)
    assert all(p.requires_grad for p in model.parameters())


def test_load_init_state_transfers_backbone_and_skips_a_differently_sized_head():
    torch.manual_seed(0)
    source, target = _net("resnet18", classes=3), _net("resnet18", classes=5)
    head_before = target.head.weight.clone()
    skipped = load_init_state(target, source.state_dict())
    assert skipped == ["head.weight", "head.bias"]
    for key, value in source.backbone.state_dict().items():
        torch.testing.assert_close(target.backbone.state_dict()[key], value)
    torch.testing.assert_close(target.head.weight, head_before)


def test_load_init_state_keeps_the_new_normalisation():
    source = build_network("simple_cnn", num_classes=2, in_channels=1, input_size=(8, 8), mean=[0.9], std=[0.1])
    target = _net(classes=2)
    assert load_init_state(target, source.state_dict()) == []
    assert float(target.mean) == pytest.approx(0.4) and float(target.std) == pytest.approx(0.2)
    torch.testing.assert_close(target.head.weight, source.head.weight)


def test_load_init_state_names_a_mismatched_backbone_key():
    source, target = _net("simple_cnn", channels=3), _net("simple_cnn", channels=1)
    with pytest.raises(ValueError, match=r"backbone\.0\.weight.*shape"):
        load_init_state(target, source.state_dict())
    skipped = load_init_state(target, source.state_dict(), strict_backbone=False)
    assert "backbone.0.weight" in skipped


def test_load_init_state_reports_missing_backbone_keys():
    target = _net()
    partial = {k: v for k, v in _net().state_dict().items() if k != "backbone.1.running_mean"}
    with pytest.raises(ValueError, match="running_mean"):
        load_init_state(target, partial)


def test_load_init_state_accepts_a_plain_torchvision_state_dict():
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None, num_classes=4)
    target = _net("resnet18", classes=4, channels=3, size=64)
    assert load_init_state(target, reference.state_dict()) == []
    reference.eval(), target.eval()
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(target(x), reference((x - 0.4) / 0.2))


def _resnet32_parameters(classes: int, channels: int, *, bias: bool) -> int:
    """kaidic/LDAM-DRW ``resnet32`` counted by hand: a 3×3 stem to 16 channels, three stages of five
    basic blocks (two 3×3 convolutions and two BatchNorms each) at 16/32/64 channels, option-A
    shortcuts (no parameters), then 64 -> classes."""
    conv, bn = (lambda cin, cout: 9 * cin * cout), (lambda c: 2 * c)
    total = conv(channels, 16) + bn(16)
    width = 16
    for planes in (16, 32, 64):
        for _ in range(5):
            total += conv(width, planes) + conv(planes, planes) + 2 * bn(planes)
            width = planes
    return total + 64 * classes + (classes if bias else 0)


def test_resnet32_has_the_reference_parameter_count_and_layers():
    linear = _net("resnet32", classes=10, channels=3, size=32)
    cosine = _net("resnet32", classes=10, channels=3, size=32, head="cosine")
    trainable = [sum(p.numel() for p in m.parameters() if p.requires_grad) for m in (linear, cosine)]
    assert _resnet32_parameters(10, 3, bias=True) == 464_154  # the reference's "0.46M"
    # NormedLinear has no bias; the cosine head's bias is frozen (post-hoc adjustment only).
    assert trainable == [464_154, _resnet32_parameters(10, 3, bias=False)]
    weighted = [p for p in linear.parameters() if p.ndim > 1]
    assert len(weighted) == 32  # 31 convolutions and the classifier: ResNet-32


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_resnet32_forward_shapes_for_grey_28_and_colour_32(channels, size):
    model = _net("resnet32", classes=10, channels=channels, size=size).eval()
    x = torch.rand(4, channels, size, size)
    with torch.no_grad():
        assert model.features(x).shape == (4, 64) and model(x).shape == (4, 10)
    sides = []
    hooks = [block.register_forward_hook(lambda _m, _i, out: sides.append(out.shape[1:])) for block in model.backbone]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    stage_ends = [sides[i] for i in (7, 12, 17)]  # after the stem (3 modules) and each stage of 5 blocks
    half, quarter = (size + 1) // 2, (size + 3) // 4
    assert stage_ends == [(16, size, size), (32, half, half), (64, quarter, quarter)]


def test_cosine_head_equals_a_hand_computation():
    head = CosineHead(3, 2, scale=30.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 1.0]]))
    x = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]])
    # |x| = 5 and 2, |w| = 2 and √2: cos = [[3/5, 4/(5√2)], [0, 2/(2√2)]], times s = 30.
    expected = 30.0 * torch.tensor([[0.6, 0.8 / 2**0.5], [0.0, 1 / 2**0.5]])
    torch.testing.assert_close(head(x), expected)
    assert not head.bias.requires_grad and torch.equal(head.bias, torch.zeros(2))
    torch.testing.assert_close(head(x * 7), expected)  # scale-free in the features
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        under_autocast = head(x.bfloat16())
    assert under_autocast.dtype == torch.float32  # bf16 features (exact here), float32 cosines
    torch.testing.assert_close(under_autocast, expected)


def test_a_cosine_head_is_replaced_by_a_cosine_head_and_unknown_heads_are_refused():
    model = _net("simple_cnn", head="cosine", cosine_scale=16.0)
    model.replace_head(5)
    assert isinstance(model.head, CosineHead) and model.head.scale == 16.0 and model.num_classes == 5
    with pytest.raises(ValueError, match="unknown head 'normed'"):
        _net(head="normed")
    with pytest.raises(ValueError, match="scale must be"):
        CosineHead(3, 2, scale=0.0)
