"""Beta draws driven only by a ``torch.Generator`` (``torch.distributions.Beta`` takes none).

Used by :mod:`workers.training.mixing` for MixUp/CutMix λ (Beta(α, α)) and
Balanced-MixUp λ (Beta(α, 1)).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor


def sample_beta(alpha: float, *, size: int, generator: torch.Generator) -> Tensor:
    """``size`` draws of Beta(α, α) as float64, driven only by ``generator``.

    ``torch.distributions.Beta`` takes no generator, so this uses
    ``G1 / (G1 + G2)`` with G ~ Gamma(α, 1) from Marsaglia & Tsang (2000),
    computed as ``sigmoid(log G1 - log G2)`` so that tiny α (G underflowing to 0)
    still gives a number in [0, 1]. The draws are exactly those the mixing
    module takes for a batch's λ (:func:`_beta_scalars`).
    """
    _check_beta_alpha(alpha)
    return torch.tensor(_beta_scalars(float(alpha), count=size, generator=generator), dtype=torch.float64)


def _check_beta_alpha(alpha: float) -> None:
    if not (alpha > 0 and math.isfinite(alpha)):
        raise ValueError(f"Beta alpha must be a finite number > 0, got {alpha!r}")


def _beta_scalars(alpha: float, *, count: int, generator: torch.Generator) -> list[float]:
    # A batch needs one λ: a dozen tiny tensor ops (rejection masks, boolean
    # indexing) would cost host time on every step, so the rejection runs on
    # Python floats fed by few ``torch.rand`` calls on the generator.
    logs = _log_standard_gamma_scalars(alpha, count=2 * count, generator=generator)
    return [_sigmoid(a - b) for a, b in zip(logs[:count], logs[count:], strict=True)]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _uniform_stream(generator: torch.Generator, block: int) -> Iterator[float]:
    """Endless uniforms in [0, 1) from ``generator``, ``block`` per tensor call."""
    while True:
        yield from torch.rand(block, dtype=torch.float64, generator=generator).tolist()


def _log_standard_gamma_scalars(shape: float, *, count: int, generator: torch.Generator) -> list[float]:
    """``count`` draws of log Gamma(shape, 1): Marsaglia–Tsang on floats (Box–Muller normals).

    For shape < 1 it draws Gamma(shape + 1) and multiplies by ``U^(1/shape)``
    (in log space).
    """
    uniforms = _uniform_stream(generator, block=8 * count + 8)
    a = shape + 1.0 if shape < 1.0 else shape
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    logs: list[float] = []
    while len(logs) < count:
        u1, u2, u3 = next(uniforms), next(uniforms), next(uniforms)
        x = math.sqrt(-2.0 * math.log1p(-u1)) * math.cos(2.0 * math.pi * u2)
        v = (1.0 + c * x) ** 3
        if v <= 0:
            continue
        log_v = math.log(v)
        if math.log1p(-u3) < 0.5 * x * x + d - d * v + d * log_v:
            log_g = math.log(d) + log_v
            if shape < 1.0:
                log_g += math.log1p(-next(uniforms)) / shape
            logs.append(log_g)
    return logs


def beta_one_scalar(alpha: float, *, generator: torch.Generator) -> float:
    """One draw of Beta(α, 1) as ``U^(1/α)`` (its inverse CDF), ``U`` uniform in (0, 1] from ``generator``."""
    _check_beta_alpha(alpha)
    u = 1.0 - float(torch.rand(1, dtype=torch.float64, generator=generator, device=generator.device))
    return math.exp(math.log(u) / alpha)
