"""Seeds and generators: every random draw in the core comes from an explicit generator.

``derive_seed`` turns a job seed plus labels (``"augment"``, an epoch number …)
into an independent stream seed, so per-epoch randomness is a pure function of
``(seed, epoch)`` and resuming from a checkpoint needs no saved RNG state.
"""

from __future__ import annotations

import hashlib
import logging
import random

import numpy as np
import torch

logger = logging.getLogger(__name__)

_SEED_MODULUS = 2**63 - 1  # torch.Generator.manual_seed accepts non-negative int64


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's legacy global RNG and torch (CPU and CUDA)."""
    _check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    _check_seed(seed)
    generator = torch.Generator(device=torch.device(device))
    generator.manual_seed(seed)
    return generator


def derive_seed(seed: int, *parts: object) -> int:
    """A stable 63-bit seed derived from ``seed`` and ``parts`` (same inputs, same seed, any process).

    Uses sha256 of the ``repr`` of each part, not Python's ``hash``, which is
    salted per process for strings.
    """
    _check_seed(seed)
    digest = hashlib.sha256(repr((int(seed),) + tuple(parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % _SEED_MODULUS


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
