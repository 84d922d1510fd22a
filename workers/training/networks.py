"""Classifier networks: a small CNN and torchvision backbones adapted to any channel count and small inputs.

Every network is a :class:`Classifier`: it takes float ``(B, C, H, W)`` in
``[0, 1]``, normalises with its own ``mean``/``std`` buffers, optionally
resizes to ``image_size``, and returns logits. Normalisation lives inside the
network so the exported artefact needs nothing from the training code.
Backbones are built with ``weights=None`` (no downloads); for inputs smaller
than 64 px the stem stops downsampling (a 3×3 stride-1 ResNet stem without
max-pool, as in He et al. 2016's CIFAR variant), so 28 px images keep spatial
extent through the last stage. ``resnet32`` is He et al. 2016's CIFAR
ResNet as the LDAM-DRW code defines it (3×3 stem with 16 channels, three
stages of five basic blocks at 16/32/64 channels, parameter-free option-A
shortcuts), at every input size.

The head is a plain ``nn.Linear`` or a :class:`CosineHead` (Cao et al.'s
``NormedLinear``, scaled).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import cast

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

logger = logging.getLogger(__name__)

ARCHS = (
    "simple_cnn",
    "resnet32",
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "convnext_tiny",
)
HEADS = ("linear", "cosine")
SMALL_INPUT = 64  # below this side the stems keep full resolution
_NORM_KEYS = ("mean", "std")


class CosineHead(nn.Linear):
    """``logits = s · normalize(x) @ normalize(W)ᵀ + b``: Cao et al.'s ``NormedLinear`` times the scale ``s``.

    The scale lives in the head, not in the loss, so the logits every loss,
    evaluation, calibration and export see are the ones the softmax is trained
    on. ``bias`` is zero and frozen (the reference has none); it exists so that
    post-hoc logit adjustment folds into the head as it does for a linear one.
    The weight keeps ``nn.Linear``'s ``(out, in)`` layout, so rows are classes.
    """

    def __init__(self, in_features: int, out_features: int, *, scale: float) -> None:
        super().__init__(in_features, out_features)
        if isinstance(scale, bool) or not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
        self.scale = float(scale)
        with torch.no_grad():  # the reference's uniform(-1, 1) directions; only directions matter
            self.weight.uniform_(-1.0, 1.0)
            self.bias.zero_()
        self.bias.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        # float32 with autocast off: bf16 cosines keep about three digits, and the scale multiplies their error.
        with torch.autocast(device_type=x.device.type, enabled=False):
            cosine = F.linear(F.normalize(x.float(), dim=-1), F.normalize(self.weight.float(), dim=-1))
            return cosine * self.scale + self.bias.float()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale}"


def make_head(kind: str, *, in_features: int, num_classes: int, scale: float = 30.0) -> nn.Linear:
    """A freshly initialised head: ``"linear"`` (``nn.Linear``) or ``"cosine"`` (:class:`CosineHead` at ``scale``)."""
    if kind not in HEADS:
        raise ValueError(f"unknown head {kind!r}; supported: {', '.join(HEADS)}")
    if kind == "cosine":
        return CosineHead(in_features, num_classes, scale=scale)
    return nn.Linear(in_features, num_classes)


class Classifier(nn.Module):
    """``logits = head(backbone(resize((x - mean) / std)))``; ``backbone`` returns ``(B, F)`` features."""

    mean: Tensor  # buffers, declared for type checkers
    std: Tensor

    def __init__(
        self,
        *,
        arch: str,
        backbone: nn.Module,
        head: nn.Linear,
        mean: Sequence[float],
        std: Sequence[float],
        image_size: int | None,
        tv_head_key: str | None = None,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.backbone = backbone
        self.head = head
        self.image_size = image_size
        self.tv_head_key = tv_head_key  # where torchvision keeps this head, for loading its state dicts
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def features(self, x: Tensor) -> Tensor:
        """The penultimate ``(B, F)`` features the head reads (decoupled re-training embeds with these)."""
        x = (x - self.mean) / self.std
        if self.image_size is not None:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=False)
        return self.backbone(x)

    def replace_head(self, num_classes: int) -> None:
        """A freshly initialised head of the same kind for ``num_classes`` (transfer learning)."""
        _check_positive("num_classes", num_classes)
        old = self.head
        kind, scale = ("cosine", old.scale) if isinstance(old, CosineHead) else ("linear", 30.0)
        new = make_head(kind, in_features=old.in_features, num_classes=num_classes, scale=scale)
        self.head = new.to(device=old.weight.device, dtype=old.weight.dtype)

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        return self.head.parameters()


def build_network(
    arch: str,
    *,
    num_classes: int,
    in_channels: int,
    input_size: tuple[int, int],
    image_size: int | None = None,
    mean: Sequence[float],
    std: Sequence[float],
    head: str = "linear",
    cosine_scale: float = 30.0,
) -> Classifier:
    """A randomly initialised :class:`Classifier` for ``(in_channels, *input_size)`` images.

    ``head`` is ``"linear"`` or ``"cosine"`` (a :class:`CosineHead` with scale ``cosine_scale``).
    """
    if arch not in _BUILDERS:
        raise ValueError(f"unknown arch {arch!r}; supported: {', '.join(ARCHS)}")
    _check_positive("num_classes", num_classes)
    _check_positive("in_channels", in_channels)
    if len(input_size) != 2 or min(input_size) < 1:
        raise ValueError(f"input_size must be (height, width) with positive sides, got {input_size!r}")
    if image_size is not None:
        _check_positive("image_size", image_size)
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean and std need {in_channels} values each, got {list(mean)} and {list(std)}")
    if min(std) <= 0:
        raise ValueError(f"std values must be positive, got {list(std)}")
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; supported: {', '.join(HEADS)}")
    small = (image_size if image_size is not None else min(input_size)) < SMALL_INPUT
    backbone, features, tv_head_key = _BUILDERS[arch](in_channels=in_channels, small=small)
    return Classifier(
        arch=arch,
        backbone=backbone,
        head=make_head(head, in_features=features, num_classes=num_classes, scale=cosine_scale),
        mean=mean,
        std=std,
        image_size=image_size,
        tv_head_key=tv_head_key,
    )


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _simple_cnn(*, in_channels: int, small: bool) -> tuple[nn.Module, int, str | None]:
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    layers = [*block(in_channels, 32), nn.MaxPool2d(2), *block(32, 64), nn.MaxPool2d(2), *block(64, 128)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2)]
    return nn.Sequential(*layers), 128, None


class _BasicBlock(nn.Module):
    """He et al.'s basic block with the option-A shortcut: strided identity, new channels zero-padded
    (half before, half after), so the shortcut has no parameters."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride, self.pad = stride, (out_channels - in_channels) // 2

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x
        if self.stride != 1 or self.pad:
            shortcut = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + shortcut)


def _resnet32(*, in_channels: int, small: bool) -> tuple[nn.Module, int, str | None]:
    # The CIFAR network keeps its 3×3 stride-1 stem at every size (``small`` changes nothing).
    layers: list[nn.Module] = [nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    width = 16
    for stage, channels in enumerate((16, 32, 64)):
        for index in range(5):
            layers.append(_BasicBlock(width, channels, stride=2 if stage and not index else 1))
            width = channels
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    net = nn.Sequential(*layers)
    for module in net.modules():
        if isinstance(module, nn.Conv2d):  # the reference's initialisation
            nn.init.kaiming_normal_(module.weight)
    return net, 64, None


def _resnet(name: str) -> Callable[..., tuple[nn.Module, int, str | None]]:
    def build(*, in_channels: int, small: bool) -> tuple[nn.Module, int, str | None]:
        net = getattr(torchvision.models, name)(weights=None)
        if small:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        features = net.fc.in_features
        net.fc = nn.Identity()
        return net, features, "fc"

    return build


def _first_conv(conv: nn.Conv2d, *, in_channels: int, stride: int, kernel: int | None = None) -> nn.Conv2d:
    # A 2-D convolution's kernel size and padding are pairs (or a padding mode).
    kernel_size = cast(tuple[int, int], conv.kernel_size) if kernel is None else (kernel, kernel)
    padding = cast("str | tuple[int, int]", conv.padding) if kernel is None else (0, 0)
    bias = conv.bias is not None
    return nn.Conv2d(in_channels, conv.out_channels, kernel_size, stride=stride, padding=padding, bias=bias)


def _mobilenet_v3_small(*, in_channels: int, small: bool) -> tuple[nn.Module, int, str | None]:
    net = torchvision.models.mobilenet_v3_small(weights=None)
    if small or in_channels != 3:
        net.features[0][0] = _first_conv(net.features[0][0], in_channels=in_channels, stride=1 if small else 2)
    features = net.classifier[3].in_features
    net.classifier[3] = nn.Identity()
    return net, features, "classifier.3"


def _efficientnet_b0(*, in_channels: int, small: bool) -> tuple[nn.Module, int, str | None]:
    net = torchvision.models.efficientnet_b0(weights=None)
    if small or in_channels != 3:
        net.features[0][0] = _first_conv(net.features[0][0], in_channels=in_channels, stride=1 if small else 2)
    features = net.classifier[1].in_features
    net.classifier[1] = nn.Identity()
    return net, features, "classifier.1"


def _convnext_tiny(*, in_channels: int, small: bool) -> tuple[nn.Module, int, str | None]:
    net = torchvision.models.convnext_tiny(weights=None)
    if small:  # patchify 2×2 instead of 4×4: 28 px → 14 → 7 → 3 → 1 through the stages
        net.features[0][0] = _first_conv(net.features[0][0], in_channels=in_channels, stride=2, kernel=2)
    elif in_channels != 3:
        net.features[0][0] = _first_conv(net.features[0][0], in_channels=in_channels, stride=4)
    features = net.classifier[2].in_features
    net.classifier[2] = nn.Identity()
    return net, features, "classifier.2"


_BUILDERS: dict[str, Callable[..., tuple[nn.Module, int, str | None]]] = {
    "simple_cnn": _simple_cnn,
    "resnet32": _resnet32,
    "resnet18": _resnet("resnet18"),
    "resnet34": _resnet("resnet34"),
    "resnet50": _resnet("resnet50"),
    "mobilenet_v3_small": _mobilenet_v3_small,
    "efficientnet_b0": _efficientnet_b0,
    "convnext_tiny": _convnext_tiny,
}


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze (``False``) or unfreeze the ``backbone`` submodule's parameters; the head stays trainable."""
    for parameter in model.get_submodule("backbone").parameters():
        parameter.requires_grad_(trainable)


def load_init_state(model: Classifier, state_dict: Mapping[str, Tensor], *, strict_backbone: bool = True) -> list[str]:
    """Initialise ``model`` from an earlier model's ``state_dict``; returns the keys not loaded.

    Accepts a :class:`Classifier` state dict or a plain torchvision one (its
    classifier layer is mapped to ``head``). The head is skipped when its
    shape differs (a new class count). ``mean``/``std`` are never loaded: the
    new model normalises with its own dataset's statistics. With
    ``strict_backbone`` a missing, unexpected or mis-shaped backbone key
    raises ``ValueError`` naming it; without, such keys are skipped and returned.
    """
    incoming = _canonical_keys(model, state_dict)
    own = model.state_dict()
    skipped: list[str] = []
    loadable: dict[str, Tensor] = {}
    for key, value in incoming.items():
        if key in _NORM_KEYS:
            continue
        problem = _key_problem(key, value, own)
        if problem is None:
            loadable[key] = value
        elif key.startswith("head.") or not strict_backbone:
            skipped.append(key)
        else:
            raise ValueError(f"cannot load backbone key {key!r}: {problem}")
    missing = [k for k in own if k not in incoming and k not in _NORM_KEYS and not k.startswith("head.")]
    if missing and strict_backbone:
        raise ValueError(f"backbone keys missing from the state dict: {missing[:5]} ({len(missing)} in all)")
    skipped += missing
    model.load_state_dict(loadable, strict=False)
    if skipped:
        logger.info("load_init_state skipped %d keys: %s", len(skipped), skipped[:10])
    return skipped


def _key_problem(key: str, value: Tensor, own: Mapping[str, Tensor]) -> str | None:
    if key not in own:
        return "no such parameter in this network"
    if not torch.is_tensor(value):
        return f"value is a {type(value).__name__}, not a tensor"
    if tuple(value.shape) != tuple(own[key].shape):
        return f"shape {tuple(value.shape)} != expected {tuple(own[key].shape)}"
    return None


def _canonical_keys(model: Classifier, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map a torchvision-style state dict onto ``backbone.*`` / ``head.*`` keys."""
    if all(k.startswith(("backbone.", "head.")) or k in _NORM_KEYS for k in state_dict):
        return dict(state_dict)  # a Classifier's own (timm's convnext also has a "head.", but not only)
    head_prefix = f"{model.tv_head_key}." if model.tv_head_key else None
    mapped: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if head_prefix and key.startswith(head_prefix):
            mapped["head." + key[len(head_prefix) :]] = value
        else:
            mapped["backbone." + key] = value
    return mapped
