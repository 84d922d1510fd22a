"""Pre-flight diagnostics at upload: what in a dataset would mislead training or its evaluation.

``diagnose`` returns ``(diagnostics, advice)``. Diagnostics are facts:

- exact duplicate images (same bytes and shape, by SHA-256) within a split
  and across splits (a test image also in train makes test metrics optimistic),
  and duplicates that carry different labels;
- classes whose val or test support is below ``MIN_SUPPORT``: with ``n``
  images a recall can only take ``n + 1`` values, and even a perfect score
  only bounds the true recall from below by ``0.05 ** (1 / n)`` (the exact
  one-sided 95 % Clopper-Pearson bound for ``n`` of ``n``);
- label sets that differ between splits (a class absent from val is never
  selected for, one absent from test is never measured);
- constant images (every pixel equal), usually blank or corrupt scans.

Advice is a structured list ``{code, message, suggested}``: ``suggested``
holds job-spec or experiment fields that address the finding, or is empty
when the fix is in the data.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np

from service.ingest.dataset import SPLITS, DecodedDataset

MIN_SUPPORT = 20
EXAMPLES = 10


def diagnose(decoded: DecodedDataset) -> tuple[dict, list[dict]]:
    hashes = {split: _hashes(decoded.splits[split][0]) for split in SPLITS if split in decoded.splits}
    labels = {split: decoded.splits[split][1] for split in hashes}
    diagnostics = {
        "duplicates": _duplicates(hashes, labels),
        "small_support": _small_support(decoded),
        "missing_classes": _missing_classes(decoded),
        "constant_images": _constant_images(decoded),
    }
    return diagnostics, _advice(diagnostics, decoded)


def _hashes(images: np.ndarray) -> list[str]:
    shape = repr(images.shape[1:]).encode()
    return [hashlib.sha256(shape + np.ascontiguousarray(image).tobytes()).hexdigest() for image in images]


def _duplicates(hashes: dict[str, list[str]], labels: dict[str, np.ndarray]) -> dict:
    where: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for split, digests in hashes.items():
        for index, digest in enumerate(digests):
            where[digest].append((split, index))
    within = {split: {"groups": 0, "images": 0} for split in hashes}
    across: dict[tuple[str, str], list[dict]] = defaultdict(list)
    conflicts = []
    for places in (p for p in where.values() if len(p) > 1):
        for split in {s for s, _ in places}:
            count = sum(s == split for s, _ in places)
            if count > 1:
                within[split]["groups"] += 1
                within[split]["images"] += count
        for a, b in _split_pairs({s for s, _ in places}):
            across[(a, b)].append({a: _first(places, a), b: _first(places, b)})
        if len({int(labels[s][i]) for s, i in places}) > 1:
            conflicts.append([{"split": s, "index": i, "label": int(labels[s][i])} for s, i in places])
    return {
        "within": within,
        "across": [
            {"splits": [a, b], "images": len(pairs), "examples": pairs[:EXAMPLES]} for (a, b), pairs in across.items()
        ],
        "label_conflicts": {"groups": len(conflicts), "examples": conflicts[:EXAMPLES]},
    }


def _split_pairs(splits: set[str]) -> list[tuple[str, str]]:
    ordered = [s for s in SPLITS if s in splits]
    return [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1 :]]


def _first(places: list[tuple[str, int]], split: str) -> int:
    return next(index for s, index in places if s == split)


def _small_support(decoded: DecodedDataset) -> list[dict]:
    found = []
    for split in ("val", "test"):
        for index, count in enumerate(decoded.class_counts(split)):
            if 0 < count < MIN_SUPPORT:
                found.append(
                    {
                        "split": split,
                        "class": decoded.class_names[index],
                        "support": count,
                        "recall_lower_bound_if_perfect": round(0.05 ** (1 / count), 4),
                    }
                )
    return found


def _missing_classes(decoded: DecodedDataset) -> dict[str, list[str]]:
    return {
        split: [decoded.class_names[i] for i, count in enumerate(decoded.class_counts(split)) if count == 0]
        for split in SPLITS
        if any(count == 0 for count in decoded.class_counts(split))
    }


def _constant_images(decoded: DecodedDataset) -> dict[str, dict]:
    found = {}
    for split in SPLITS:
        images = decoded.splits[split][0]
        if len(images) == 0:
            continue
        flat = images.reshape(len(images), -1)
        constant = np.flatnonzero(flat.min(axis=1) == flat.max(axis=1))
        if len(constant):
            found[split] = {"images": int(len(constant)), "examples": constant[:EXAMPLES].tolist()}
    return found


def _advice(diagnostics: dict, decoded: DecodedDataset) -> list[dict]:
    advice = []
    for item in diagnostics["duplicates"]["across"]:
        a, b = item["splits"]
        advice.append(
            _item(
                f"duplicates_across_{a}_{b}",
                f"{item['images']} image(s) in {b} also appear in {a}: {b} metrics are optimistic; "
                f"remove them from one split and upload again",
            )
        )
    if diagnostics["duplicates"]["label_conflicts"]["groups"]:
        groups = diagnostics["duplicates"]["label_conflicts"]["groups"]
        advice.append(_item("duplicate_label_conflicts", f"{groups} identical image(s) carry different labels"))
    for item in diagnostics["small_support"]:
        advice.append(
            _item(
                f"small_{item['split']}_support",
                f"class {item['class']!r} has {item['support']} {item['split']} image(s): its recall moves in steps "
                f"of 1/{item['support']} and even a perfect score only shows recall >= "
                f"{item['recall_lower_bound_if_perfect']} (95 %); rank strategies on a metric over all classes and "
                "run several seeds",
                {"selection_metric": "balanced_accuracy", "experiment": {"seeds": [0, 1, 2, 3, 4]}},
            )
        )
    for split, names in diagnostics["missing_classes"].items():
        advice.append(
            _item(
                f"missing_classes_{split}", f"{split} has no image of class(es) {names}; they are never measured there"
            )
        )
    for split, item in diagnostics["constant_images"].items():
        advice.append(_item(f"constant_images_{split}", f"{item['images']} constant (blank?) image(s) in {split}"))
    return advice


def _item(code: str, message: str, suggested: dict | None = None) -> dict:
    return {"code": code, "message": message, "suggested": suggested or {}}
