"""Beta draws driven only by a ``torch.Generator`` (``torch.distributions.Beta`` takes none).

Used by :mod:`workers.training.mixing` for MixUp/CutMix λ (Beta(α, α)) and
Balanced-MixUp λ (Beta(α, 1)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sample_beta(alpha: float, *, size: int, generator: torch.Generator) -> Tensor:
    """``size`` draws of Beta(α, α) as float64, driven only by ``generator``.

    ``torch.distributions.Beta`` takes no generator, so this uses
    ``G1 / (G1 + G2)`` with G ~ Gamma(α, 1) from Marsaglia & Tsang (2000),
    computed as ``sigmoid(log G1 - log G2)`` so that tiny α (G underflowing to 0)
    still gives a number in [0, 1].
    """
    _check_beta_alpha(alpha)
    if size <= _SCALAR_DRAWS:
        return torch.tensor(_beta_scalars(float(alpha), count=size, generator=generator), dtype=torch.float64)
    log_g = _log_standard_gamma(float(alpha), size=2 * size, generator=generator)
    return torch.sigmoid(log_g[:size] - log_g[size:])


# A batch needs one λ: drawing it with a dozen tiny tensor ops (rejection masks,
# boolean indexing) cost ~0.4 ms of host time per step on a GPU. Below this many
# draws, the same Marsaglia–Tsang rejection runs on Python floats fed by ONE
# ``torch.rand`` call on the generator, so results stay generator-driven.
_SCALAR_DRAWS = 8


def _check_beta_alpha(alpha: float) -> None:
    if not (alpha > 0 and math.isfinite(alpha)):
        raise ValueError(f"Beta alpha must be a finite number > 0, got {alpha!r}")


def _beta_scalars(alpha: float, *, count: int, generator: torch.Generator) -> list[float]:
    logs = _log_standard_gamma_scalars(alpha, count=2 * count, generator=generator)
    return [_sigmoid(a - b) for a, b in zip(logs[:count], logs[count:], strict=True)]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _uniform_stream(generator: torch.Generator, block: int):
    """Endless uniforms in [0, 1) from ``generator``, ``block`` per tensor call."""
    while True:
        yield from torch.rand(block, dtype=torch.float64, generator=generator).tolist()


def _log_standard_gamma_scalars(shape: float, *, count: int, generator: torch.Generator) -> list[float]:
    """``count`` draws of log Gamma(shape, 1): Marsaglia–Tsang on floats (Box–Muller normals)."""
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


def _log_standard_gamma(shape: float, *, size: int, generator: torch.Generator) -> Tensor:
    """``log`` of Gamma(shape, 1) draws: Marsaglia–Tsang squeeze-free rejection, vectorised.

    For shape < 1 it draws Gamma(shape + 1) and multiplies by ``U^(1/shape)``
    (in log space). Acceptance is above 95 %, so one or two rounds suffice.
    """
    options = {"dtype": torch.float64, "device": generator.device, "generator": generator}
    a = shape + 1.0 if shape < 1.0 else shape
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    accepted: list[Tensor] = []
    remaining = size
    while remaining > 0:
        n = remaining + remaining // 8 + 8
        x = torch.randn(n, **options)
        log_u = torch.log1p(-torch.rand(n, **options))  # log of U in (0, 1]
        v = (1.0 + c * x) ** 3
        log_v = torch.log(v.clamp_min(1e-300))
        ok = (v > 0) & (log_u < 0.5 * x * x + d - d * v + d * log_v)
        draws = (math.log(d) + log_v)[ok][:remaining]
        accepted.append(draws)
        remaining -= draws.numel()
    log_g = torch.cat(accepted)
    if shape < 1.0:
        log_g = log_g + torch.log1p(-torch.rand(size, **options)) / shape
    return log_g


def beta_one_scalar(alpha: float, *, generator: torch.Generator) -> float:
    """One draw of Beta(α, 1) as ``U^(1/α)`` (its inverse CDF), ``U`` uniform in (0, 1] from ``generator``."""
    _check_beta_alpha(alpha)
    u = 1.0 - float(torch.rand(1, dtype=torch.float64, generator=generator, device=generator.device))
    return math.exp(math.log(u) / alpha)
