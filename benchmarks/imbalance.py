"""Imbalance strategies on PneumoniaMNIST with the normal class subsampled to 1:10 in train.

The train split keeps all 3494 pneumonia images and a seeded random 349 of
the normal ones (1:10; the subsample is drawn once, with seed 0, so the
seed-to-seed spread below is training randomness alone); val and test are
untouched. Every strategy is the same base job spec (``rarefit_default`` with
plain cross-entropy, random sampling, no mixing, argmax decisions, selection
by validation balanced accuracy) changed only where named.

Spread: for a metric, the best imbalance-aware strategy (highest mean
balanced accuracy) *beats* plain CE when ``mean_best − mean_CE >
std_best + std_CE`` (sample standard deviations over seeds): the sum of the
two spreads, a deliberately conservative margin.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from benchmarks import common

logger = logging.getLogger(__name__)

RATIO = 10
SUBSAMPLE_SEED = 0
MINORITY = 0  # normal
STRATEGIES: dict[str, dict[str, Any]] = {
    "plain CE": {},
    "focal (γ=2)": {"loss": {"type": "focal", "gamma": 2.0}},
    "weighted sampler": {"sampler": {"type": "weighted"}},
    "CutMix": {"mixing": {"mode": "cutmix", "cutmix_alpha": 1.0, "prob": 1.0}},
    "focal + weighted + CutMix": {
        "loss": {"type": "focal", "gamma": 2.0},
        "sampler": {"type": "weighted"},
        "mixing": {"mode": "cutmix", "cutmix_alpha": 1.0, "prob": 1.0},
    },
}
BASE_CHANGES = {
    "loss": {"type": "cross_entropy"},
    "sampler": {"type": "random"},
    "mixing": {"mode": "none"},
    "selection_metric": "balanced_accuracy",
    "threshold": {"strategy": "none"},
}
COLUMNS = (
    ("minority_recall", "minority recall"),
    ("balanced_accuracy", "balanced acc"),
    ("macro_f1", "macro-F1"),
    ("pr_auc_minority", "PR-AUC (minority)"),
    ("auc", "test AUC"),
)
COMPARED = ("balanced_accuracy", "minority_recall")


def subsample_minority(arrays: common.Arrays, *, ratio: int = RATIO, seed: int = SUBSAMPLE_SEED) -> common.Arrays:
    """Train with class 0 cut to ``n_1 // ratio`` images (seeded); val and test untouched."""
    images, labels = arrays["train"]
    minority = np.flatnonzero(labels == MINORITY)
    keep_n = max(2, int(np.sum(labels != MINORITY)) // ratio)
    if keep_n > len(minority):
        raise ValueError(f"cannot subsample class {MINORITY} to {keep_n}: only {len(minority)} images")
    kept = np.random.default_rng(seed).choice(minority, size=keep_n, replace=False)
    keep = np.sort(np.concatenate([np.flatnonzero(labels != MINORITY), kept]))
    return {**arrays, "train": (images[keep], labels[keep])}


def run(
    *,
    arrays: common.Arrays,
    class_names: Sequence[str],
    device: torch.device,
    seeds: Sequence[int],
    epochs: int | None,
    arch: str | None,
    base: Mapping[str, Any],
    run_one: Callable[..., dict[str, float]],
    with_epochs: Callable[[Mapping[str, Any], int | None], dict[str, Any]],
) -> str:
    """Train every strategy for every seed; the markdown section."""
    data = subsample_minority(arrays)
    base_spec = with_epochs(common.deep_merge(base, BASE_CHANGES), epochs)
    if arch is not None:
        base_spec = common.deep_merge(base_spec, {"model": {"arch": arch}})
    results: dict[str, list[dict[str, float]]] = {}
    for name, changes in STRATEGIES.items():
        for seed in seeds:
            logger.info("imbalance strategy %s seed %d", name, seed)
            spec = common.deep_merge(base_spec, {**changes, "seed": seed})
            results.setdefault(name, []).append(run_one(spec, arrays=data, class_names=class_names, device=device))
    counts = np.bincount(data["train"][1], minlength=len(class_names)).tolist()
    return report(results, data=subsampled(counts), base_spec=base_spec, seeds=seeds)


def subsampled(counts: Sequence[int]) -> str:
    """The data line of a PneumoniaMNIST table: the train counts after subsampling, their measured ratio."""
    ratio = round(max(counts) / min(counts))
    return (
        f"Train class counts after subsampling: {list(counts)} (normal : pneumonia ≈ 1:{ratio}); "
        "val and test untouched."
    )


def report(
    results: Mapping[str, list[dict[str, float]]],
    *,
    data: str,
    base_spec: Mapping[str, Any],
    seeds: Sequence[int],
) -> str:
    """The table of ``results`` (mean ± std per column), after the ``data`` line, and the verdict."""
    stats = {
        name: {key: common.mean_std([r[key] for r in runs]) for key, _ in COLUMNS} for name, runs in results.items()
    }
    headers = ["strategy", *[label for _, label in COLUMNS]]
    rows = [[name, *[f"{s[key][0]:.3f} ± {s[key][1]:.3f}" for key, _ in COLUMNS]] for name, s in stats.items()]
    return (
        f"{data} "
        f"Seeds {list(seeds)}; mean ± sample std. Base spec: `{json.dumps(dict(base_spec))}`.\n\n"
        + common.markdown_table(headers, rows)
        + "\n\n"
        + verdict(stats)
    )


def margin_and_spread(better: tuple[float, float], worse: tuple[float, float]) -> tuple[float, float]:
    """``(mean_better − mean_worse, std_better + std_worse)``: ``better`` beats ``worse`` beyond the seed spread
    when the margin exceeds the spread (the rule of every study here)."""
    return better[0] - worse[0], better[1] + worse[1]


def verdict(stats: Mapping[str, Mapping[str, tuple[float, float]]]) -> str:
    """Does the best imbalance-aware strategy beat plain CE by more than the summed spreads?"""
    aware = [name for name in stats if name != "plain CE"]
    if "plain CE" not in stats or not aware:
        return "No comparison (plain CE or imbalance-aware strategies missing)."
    best = max(aware, key=lambda name: stats[name]["balanced_accuracy"][0])
    lines = [f"Best imbalance-aware strategy by mean balanced accuracy: **{best}**."]
    for key in COMPARED:
        (m_best, _), (m_ce, _) = pair = stats[best][key], stats["plain CE"][key]
        margin, spread = margin_and_spread(*pair)
        beats = margin > spread
        verdict = "beats plain CE beyond the seed spread" if beats else "NOT beyond the seed spread"
        lines.append(
            f"- {key.replace('_', ' ')}: {m_best:.3f} vs plain CE {m_ce:.3f}, margin {margin:+.3f} vs spread "
            f"(std sum) {spread:.3f} → {verdict}."
        )
    return "\n".join(lines)
