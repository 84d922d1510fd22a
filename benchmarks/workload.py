"""The workload both sides of the throughput and scale benchmarks run: a case and its job spec fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The work both sides do; the job spec and the bare loop's arguments are built from these.
GAMMA, CUTMIX_ALPHA, ROTATION, SCALE, LR, WEIGHT_DECAY = 2.0, 1.0, 15.0, (0.9, 1.1), 1e-3, 1e-4


@dataclass(frozen=True)
class Case:
    name: str
    arch: str
    side: int  # 28: PneumoniaMNIST; otherwise synthetic RGB images of this side
    train: int  # images (PneumoniaMNIST: at most 4708)
    val: int
    batch_size: int
    epochs: int  # including the warm-up epoch


def job_overrides(case: Case, *, compile: bool) -> dict[str, Any]:
    """The JobSpec fields of a case (everything else is the spec's default)."""
    return {
        "model": {"arch": case.arch},
        "loss": {"type": "focal", "gamma": GAMMA},
        "mixing": {"mode": "cutmix", "cutmix_alpha": CUTMIX_ALPHA, "prob": 1.0},
        "sampler": {"type": "weighted"},
        "augment": {"hflip": True, "vflip": False, "rotation": ROTATION, "scale": list(SCALE)},
        "optim": {"name": "adamw", "lr": LR, "weight_decay": WEIGHT_DECAY, "scheduler": "cosine"},
        "epochs": case.epochs,
        "batch_size": case.batch_size,
        "seed": 0,
        "selection_metric": "balanced_accuracy",
        "threshold": {"strategy": "max_f1"},
        "compile": compile,
    }
