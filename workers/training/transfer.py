"""Transfer learning: pretrained state dicts onto a :class:`Classifier` of any channel count and input size.

:func:`prepare_pretrained` turns a state dict in torchvision's layout, timm's
layout or rarefit's own (``backbone.*``/``head.*``) into the model's keys and
adapts only the stem:

- **channels**: the first convolution's weights are converted as timm's
  ``adapt_input_conv`` does (summed over RGB for 1 channel; RGB repeated and
  scaled by ``3 / C`` for ``C`` channels);
- **kernel**: small inputs (below 64 px) build stems that keep full
  resolution; when the pretrained stem's kernel differs (ResNet's 7×7,
  ConvNeXt's 4×4 patchify), the model's stem is rebuilt with the pretrained
  kernel at the small-input stride, so the pretrained stem weights are kept and
  only stride and pooling change.

Every other tensor must then load strictly (see
:func:`workers.training.networks.load_init_state`). What was adapted is
returned as readable lines for the job's record.

timm's layouts for the supported architectures hold the same tensors in the
same order as torchvision's (only names differ; a 1×1 convolution may stand
for a linear layer and a layer scale may be ``(C,)`` for ``(C, 1, 1)``), so
they are mapped by position, with every shape checked.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import cast

import torch
from torch import Tensor, nn

from workers.training.networks import _NORM_KEYS, Classifier, _canonical_keys

logger = logging.getLogger(__name__)


def adapt_input_conv(in_chans: int, conv_weight: Tensor) -> Tensor:
    """A first-convolution weight ``(O, I, kH, kW)`` for ``in_chans`` input channels (timm's rule)."""
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"in_chans must be a positive int, got {in_chans!r}")
    if conv_weight.ndim != 4:
        raise ValueError(f"expected a conv weight (O, I, kH, kW), got shape {tuple(conv_weight.shape)}")
    dtype = conv_weight.dtype
    weight = conv_weight.float()
    out_c, in_c, kh, kw = weight.shape
    if in_chans == in_c:
        return conv_weight.clone()
    if in_chans == 1:
        if in_c > 3:
            if in_c % 3:
                raise ValueError(f"cannot reduce a {in_c}-channel stem to 1 channel (not a multiple of 3)")
            weight = weight.reshape(out_c, in_c // 3, 3, kh, kw).sum(dim=2)  # space-to-depth stems
        else:
            weight = weight.sum(dim=1, keepdim=True)
    else:
        if in_c != 3:
            raise ValueError(f"cannot adapt a {in_c}-channel stem to {in_chans} channels (only from RGB)")
        repeat = math.ceil(in_chans / 3)
        weight = weight.repeat(1, repeat, 1, 1)[:, :in_chans] * (3 / float(in_chans))
    return weight.to(dtype)


def prepare_pretrained(model: Classifier, state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """``state_dict`` in ``model``'s keys with its stem adapted; also a line per adaptation made.

    May replace ``model``'s stem convolution (see the module docstring): call it
    before building the optimizer.
    """
    if not isinstance(model, Classifier):
        raise TypeError(f"model must be a Classifier, got {type(model).__name__}")
    state, notes = _in_own_keys(model, state_dict)
    stem_name, stem = _stem(model)
    key = f"backbone.{stem_name}.weight"
    weight = state.get(key)
    if weight is None or not torch.is_tensor(weight) or weight.ndim != 4:
        raise ValueError(f"the weights have no 4-D first convolution {key!r} for {model.arch}")
    if tuple(weight.shape[-2:]) != tuple(stem.kernel_size):
        stem = _rebuild_stem(model, stem_name, stem, kernel=(int(weight.shape[-2]), int(weight.shape[-1])))
        notes.append(
            f"{key}: pretrained {weight.shape[-2]}x{weight.shape[-1]} kernel kept at stride "
            f"{stem.stride[0]} (small input; the stem keeps full resolution)"
        )
    if weight.shape[1] != stem.in_channels:
        state[key] = adapt_input_conv(stem.in_channels, weight)
        rule = "summed over RGB" if stem.in_channels == 1 else f"RGB repeated, scaled by 3/{stem.in_channels}"
        notes.append(f"{key}: {weight.shape[1]} -> {stem.in_channels} input channels ({rule})")
    for note in notes:
        logger.info("pretrained weights: %s", note)
    return state, notes


def _stem(model: Classifier) -> tuple[str, nn.Conv2d]:
    for name, module in model.backbone.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ValueError(f"{model.arch} has no convolution to adapt")


def _rebuild_stem(model: Classifier, name: str, stem: nn.Conv2d, *, kernel: tuple[int, int]) -> nn.Conv2d:
    stride = cast(tuple[int, int], stem.stride)  # a 2-D convolution's strides are a pair
    padding = cast(tuple[int, int], tuple(max((k - s + 1) // 2, 0) for k, s in zip(kernel, stride, strict=True)))
    new = nn.Conv2d(
        stem.in_channels, stem.out_channels, kernel, stride=stride, padding=padding, bias=stem.bias is not None
    )
    parent_name, _, child = name.rpartition(".")
    parent = model.backbone.get_submodule(parent_name) if parent_name else model.backbone
    setattr(parent, child, new.to(device=stem.weight.device, dtype=stem.weight.dtype))
    return new


def _in_own_keys(model: Classifier, state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Name-based for rarefit's and torchvision's layouts, position-based for timm's."""
    own = {k: v for k, v in model.state_dict().items() if k not in _NORM_KEYS}
    named = _canonical_keys(model, state_dict)
    incoming = {k: v for k, v in named.items() if k not in _NORM_KEYS}
    if set(incoming) <= set(own):
        return dict(named), []
    if len(incoming) != len(own):
        unknown = sorted(set(incoming) - set(own))[:5]
        raise ValueError(
            f"weights match neither the torchvision nor the timm layout of {model.arch}: "
            f"{len(incoming)} tensors for {len(own)}, unknown keys such as {unknown}"
        )
    return _by_position(own, list(state_dict.values()), list(state_dict)), [
        f"timm layout: {len(own)} tensors mapped by position onto torchvision's names"
    ]


def _by_position(own: Mapping[str, Tensor], values: list[Tensor], names: list[str]) -> dict[str, Tensor]:
    mapped: dict[str, Tensor] = {}
    for index, ((key, target), value, name) in enumerate(zip(own.items(), values, names, strict=True)):
        if not torch.is_tensor(value):
            raise ValueError(f"weights entry {name!r} is a {type(value).__name__}, not a tensor")
        if index == 0 or key.startswith("head.") or value.shape == target.shape:
            mapped[key] = value  # the stem is adapted next; a head of another class count is skipped later
        elif value.numel() == target.numel() and value.squeeze().shape == target.squeeze().shape:
            mapped[key] = value.reshape(target.shape)  # 1×1 conv for linear, (C,) layer scale for (C, 1, 1)
        else:
            raise ValueError(
                f"timm weights {name!r} {tuple(value.shape)} do not fit {key!r} {tuple(target.shape)} by position"
            )
    return mapped
