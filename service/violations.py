"""Checks of a valid job spec against this server's limits and against its dataset.

A :class:`~service.spec.JobSpec` is valid on its own; these are the checks
that need more than the spec (deployment caps, the dataset's classes, masks
and counts). Each returns ``[(field path, message)]`` for the API's 422.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.spec import JobSpec, LossSpec, effective_head
from service.threshold_spec import resolve_class


def limit_violations(
    spec: JobSpec, *, max_epochs: int, max_batch_size: int, max_image_size: int, max_job_seconds: int
) -> list[tuple[tuple[str, ...], str]]:
    """Server caps that depend on deployment settings: ``[(field path, message)]``."""
    problems: list[tuple[tuple[str, ...], str]] = []
    if spec.epochs > max_epochs:
        problems.append((("epochs",), f"epochs {spec.epochs} exceeds this server's limit {max_epochs}"))
    if spec.batch_size > max_batch_size:
        problems.append((("batch_size",), f"batch_size {spec.batch_size} exceeds this server's limit {max_batch_size}"))
    if spec.model.image_size is not None and spec.model.image_size > max_image_size:
        problems.append(
            (
                ("model", "image_size"),
                f"image_size {spec.model.image_size} exceeds this server's limit {max_image_size}",
            )
        )
    if spec.max_runtime_seconds is not None and spec.max_runtime_seconds > max_job_seconds:
        problems.append(
            (
                ("max_runtime_seconds",),
                f"max_runtime_seconds {spec.max_runtime_seconds} exceeds this server's limit {max_job_seconds}",
            )
        )
    return problems


def dataset_violations(
    spec: JobSpec,
    *,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    mask_classes: Sequence[str] | None = None,
    train_counts: Sequence[int] | None = None,
) -> list[tuple[tuple[str, ...], str]]:
    """Checks across fields and against the dataset: one LDAM scale (:func:`head_violations`), per-class
    lists must match its class count, copy-paste needs masks
    (``mask_classes``: the classes with at least one masked train image), and named classes must exist."""
    problems = head_violations(spec)
    problems += copy_paste_violations(
        spec, class_names=class_names, mask_classes=mask_classes, train_counts=train_counts
    )
    for path, value in ((("loss", "alpha"), spec.loss.alpha), (("loss", "class_weights"), spec.loss.class_weights)):
        if isinstance(value, list) and len(value) != num_classes:
            problems.append((path, f"needs one value per class ({num_classes}), got {len(value)}"))
    if isinstance(spec.loss.alpha, (int, float)) and spec.loss.type == "focal" and num_classes != 2:
        problems.append(
            (
                ("loss", "alpha"),
                f"a single alpha is defined for binary data only; this dataset has {num_classes} classes: "
                "give one value per class or 'balanced'",
            )
        )
    resample = spec.resample
    if resample is not None and not isinstance(resample.sampling_strategy, str) and num_classes != 2:
        problems.append(
            (("resample", "sampling_strategy"), f"a ratio needs a binary dataset, this one has {num_classes} classes")
        )
    if spec.loss.variant == "sigmoid" and num_classes != 2:
        problems.append((("loss", "variant"), f"'sigmoid' needs a binary dataset, this one has {num_classes} classes"))
    names = class_names if class_names is not None else [str(i) for i in range(num_classes)]
    classes: list[tuple[tuple[str, ...], str | int | None]] = [
        (("positive_class",), spec.positive_class),
        (("threshold", "class"), spec.threshold.class_),
    ]
    for where, given in classes:
        if given is not None and resolve_class(given, names) is None:
            problems.append((where, f"{given!r} is neither a class name nor an index of {names}"))
    cost = spec.threshold.cost
    if cost is not None and (len(cost) != num_classes or any(len(row) != num_classes for row in cost)):
        problems.append((("threshold", "cost"), f"needs a {num_classes}×{num_classes} matrix (cost[true][predicted])"))
    return problems


def head_violations(spec: JobSpec) -> list[tuple[tuple[str, ...], str]]:
    """A cosine head already scales its logits by ``model.cosine_scale``: a second LDAM scale is refused
    rather than silently ignored."""
    default = LossSpec.model_fields["ldam_scale"].default
    if spec.loss.type == "ldam" and effective_head(spec) == "cosine" and spec.loss.ldam_scale != default:
        return [
            (
                ("loss", "ldam_scale"),
                "applies to a linear head only; this job's head is cosine (model.head), "
                "whose logits model.cosine_scale scales",
            )
        ]
    return []


def copy_paste_violations(
    spec: JobSpec,
    *,
    class_names: Sequence[str] | None,
    mask_classes: Sequence[str] | None,
    train_counts: Sequence[int] | None,
) -> list[tuple[tuple[str, ...], str]]:
    """``augment.copy_paste`` needs masks, and named classes must exist and have them."""
    paste = spec.augment.copy_paste
    if paste is None:
        return []
    path = ("augment", "copy_paste")
    masked = list(mask_classes or [])
    if not masked:
        return [(path, "copy_paste needs segmentation masks, and this dataset has none (see docs/techniques.md)")]
    if isinstance(paste.classes, list):
        unknown = [name for name in paste.classes if class_names is not None and name not in class_names]
        if unknown:
            return [((*path, "classes"), f"not classes of this dataset: {unknown}")]
        unmasked = [name for name in paste.classes if name not in masked]
        if unmasked:
            return [((*path, "classes"), f"these classes have no masks: {unmasked} (masked: {masked})")]
    elif class_names is not None and train_counts:
        minority = minority_classes(train_counts, threshold=spec.augment.minority_threshold)
        if not any(class_names[index] in masked for index in minority):
            named = [class_names[index] for index in minority]
            return [((*path, "classes"), f"no minority class {named} has masks (masked: {masked})")]
    return []


def minority_classes(counts: Sequence[int], *, threshold: float) -> list[int]:
    """Class indices with ``n_c < threshold · max(n)``, the rule of ``workers.training.augment.minority_class_mask``."""
    largest = max(counts)
    return [index for index, count in enumerate(counts) if count < threshold * largest]
