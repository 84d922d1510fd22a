"""A job's plots as PNG files (matplotlib, headless Agg), for reports and tickets.

Drawn from what the job recorded: the per-epoch history and the test metric
block (its curves, confusion matrix and calibration bins). The object-oriented
API (a ``Figure`` on its own Agg canvas, no ``pyplot``) keeps rendering free of
global state, so API threads can draw at once.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PLOTS = ("training_curves", "pr_curve", "confusion_matrix", "roc_curve", "reliability")


class PlotUnavailable(LookupError):
    """The job did not record what this plot is drawn from."""


def render(name: str, *, history: list[dict[str, Any]], test: dict[str, Any] | None, metric: str) -> bytes:
    """The PNG bytes of plot ``name``; ``PlotUnavailable`` saying what is missing."""
    if name not in PLOTS:
        raise ValueError(f"unknown plot {name!r}; available: {', '.join(PLOTS)}")
    figure = Figure(figsize=(6.4, 4.0), dpi=100)
    axes = figure.add_subplot()
    _DRAW[name](axes, history=history, test=test or {}, metric=metric)
    figure.tight_layout()
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def _training_curves(axes, *, history, test, metric) -> None:
    if not history:
        raise PlotUnavailable("no epoch has finished yet")
    epochs = [row["epoch"] for row in history]
    axes.plot(epochs, [row["train_loss"] for row in history], label="train loss")
    axes.plot(epochs, [row["val_loss"] for row in history], label="val loss")
    axes.set(xlabel="epoch", ylabel="loss", title="Training curves")
    values = [(row.get("val") or {}).get(metric) for row in history]
    if any(v is not None for v in values):
        twin = axes.twinx()
        twin.plot(epochs, [np.nan if v is None else v for v in values], color="tab:green", label=f"val {metric}")
        twin.set_ylabel(metric)
        twin.legend(loc="upper right")
    axes.legend(loc="upper left")


def _pr_curve(axes, *, history, test, metric) -> None:
    points = test.get("pr_curve")
    if not points:
        raise PlotUnavailable("the job has no test PR curve (it is recorded for finished binary jobs)")
    points = sorted(points, key=lambda p: p["recall"])
    axes.plot([p["recall"] for p in points], [p["precision"] for p in points])
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall (test)")


def _confusion_matrix(axes, *, history, test, metric) -> None:
    matrix = test.get("confusion_matrix")
    if not matrix:
        raise PlotUnavailable("the job has no test confusion matrix yet (it is recorded when the job finishes)")
    counts = np.asarray(matrix, dtype=float)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    names = [str(c["class"]) for c in test.get("per_class", [])] or [str(i) for i in range(len(counts))]
    image = axes.imshow(rates, vmin=0.0, vmax=1.0, cmap="Blues")
    for (row, col), value in np.ndenumerate(rates):
        axes.text(col, row, f"{value:.2f}", ha="center", va="center", color="white" if value > 0.5 else "black")
    axes.set(xticks=range(len(names)), yticks=range(len(names)), xticklabels=names, yticklabels=names)
    axes.set(xlabel="predicted", ylabel="true", title="Confusion matrix (row-normalised, test)")
    axes.figure.colorbar(image, ax=axes)


def _roc_curve(axes, *, history, test, metric) -> None:
    points = test.get("roc_curve")
    if not points:
        raise PlotUnavailable("the job has no test ROC curve (it is recorded when the job finishes)")
    names = [str(c["class"]) for c in test.get("per_class", [])]
    positive, auroc = test.get("positive_class"), test.get("auroc")
    if positive is None or auroc is None:  # multi-class: one-vs-rest, and the block's AUROC is the macro one
        label = f"class {_class_name(names, test.get('minority_class'))} vs rest"
    else:
        label = f"class {_class_name(names, positive)} (AUROC {auroc:.3f})"
    axes.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="grey", label="chance")
    # the curve starts at the origin (a threshold above every score), which is not a recorded point
    axes.plot([0.0] + [p["fpr"] for p in points], [0.0] + [p["tpr"] for p in points], label=label)
    axes.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.02))
    axes.set_title("ROC (test)")
    axes.legend(loc="lower right")


def _class_name(names: list[str], index: int | None) -> str:
    return names[index] if index is not None and 0 <= index < len(names) else str(index)


def _reliability(axes, *, history, test, metric) -> None:
    calibration = test.get("calibration") or {}
    if calibration.get("method", "none") == "none" or not calibration.get("reliability_after"):
        raise PlotUnavailable("the job has no calibration data (calibration.method none, or not finished)")
    axes.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="grey", label="perfect calibration")
    after = f"after T={calibration['temperature']:.2f}"
    for key, ece, label, style in (
        ("reliability_before", "ece_before", "before", {"fill": False, "edgecolor": "tab:red"}),
        ("reliability_after", "ece_after", after, {"color": "tab:blue", "alpha": 0.5}),
    ):
        bins = [b for b in calibration[key] if b["count"]]
        axes.bar(
            [b["lower"] for b in bins],
            [b["accuracy"] for b in bins],
            width=[b["upper"] - b["lower"] for b in bins],
            align="edge",
            label=f"{label} (ECE {calibration[ece]:.3f})",
            **style,
        )
    axes.set(xlabel="confidence (arg-max probability)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02))
    axes.set_title("Reliability (test, temperature scaling)")
    axes.legend(loc="upper left")


_DRAW: dict[str, Callable[..., None]] = {
    "training_curves": _training_curves,
    "pr_curve": _pr_curve,
    "confusion_matrix": _confusion_matrix,
    "roc_curve": _roc_curve,
    "reliability": _reliability,
}
