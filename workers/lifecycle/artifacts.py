"""A finished job's artefacts: exported programs (``torch.export`` and, when it exports and checks, ONNX),
safetensors weights, model card and metrics.

Files are written in a temporary folder inside the run's own staging folder
and published to ``jobs/{job_id}/artifacts/{name}`` (``BlobStore.publish``,
atomic on every store), so a crash never leaves a torn artefact. The card is
``service.model_card.ModelCard`` (docs/architecture.md, "The model artefact").
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rarefit.decision import DecisionRule
from service.jsonsafe import json_safe
from service.model_card import (
    CARD_FILE,
    METRICS_FILE,
    PROGRAM_FILE,
    WEIGHTS_FILE,
    Calibration,
    InputSpec,
    ModelCard,
    Normalization,
    OnnxExport,
    OperatingPoint,
    artifact_key,
    artifacts_prefix,
)
from service.spec import JobSpec
from service.storage import BlobStore
from workers.lifecycle.onnx_export import export_checked_onnx
from workers.training.engine import FitResult
from workers.training.export import export_program, save_weights

logger = logging.getLogger(__name__)

JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class StoredArtifact:
    name: str
    blob_key: str
    size: int
    sha256: str
    content_type: str


def model_card(
    result: FitResult,
    *,
    job_id: str,
    spec: JobSpec,
    class_names: list[str],
    image_shape: tuple[int, int, int],
    onnx: OnnxExport,
) -> ModelCard:
    """The card inference and users read: input contract, normalisation, operating point, metrics, provenance."""
    height, width, channels = image_shape
    model = result.model
    rule = DecisionRule.binary(positive_class=result.positive_class or 0, threshold=result.threshold)
    return ModelCard(
        arch=spec.model.arch,
        class_names=list(class_names),
        positive_class=result.positive_class,
        files=[PROGRAM_FILE, *([onnx.file] if onnx.file else []), WEIGHTS_FILE, METRICS_FILE],
        input=InputSpec(height=height, width=width, channels=channels),
        normalization=Normalization(mean=model.mean.flatten().tolist(), std=model.std.flatten().tolist()),
        calibration=Calibration(),
        operating_point=OperatingPoint.from_rule(rule, policy=spec.threshold.model_dump(mode="json")),
        metrics=json_safe(result.test or {}),
        best_epoch=result.best_epoch,
        job_id=job_id,
        spec=spec.model_dump(mode="json"),
        onnx=onnx,
        versions=_versions(),
    )


def _versions() -> dict[str, str | None]:
    """Who wrote the programs: a runtime that cannot read them can say which versions it needs."""
    found: dict[str, str | None] = {}
    for package in ("rarefit", "torch", "onnx", "onnxscript", "onnxruntime"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


def metrics_document(result: FitResult, *, report: dict[str, Any] | None = None) -> dict[str, Any]:
    """``metrics.json``: the whole history, the selected epoch, the final blocks, and the job's ``report``
    (``init``: the initial weights and what was adapted to load them)."""
    return json_safe(
        {
            **(report or {}),
            "history": [record.to_dict() for record in result.history],
            "best_epoch": result.best_epoch,
            "best_score": result.best_score,
            "stopped": result.stopped,
            "threshold": result.threshold,
            "positive_class": result.positive_class,
            "val": result.val,
            "test": result.test,
        }
    )


def export_artifacts(
    result: FitResult,
    *,
    store: BlobStore,
    staging: Path,
    job_id: str,
    spec: JobSpec,
    class_names: list[str],
    image_shape: tuple[int, int, int],
    report: dict[str, Any] | None = None,
    extra_files: dict[str, Any] | None = None,
) -> list[StoredArtifact]:
    """Store the files the card names, then the card; returns what was stored (for ``register_artifact``).

    ``extra_files`` are further JSON documents of the job (e.g. ``cleaned.json``), by file name.
    """
    height, width, channels = image_shape
    with tempfile.TemporaryDirectory(dir=staging, prefix="export-") as tmp:
        folder = Path(tmp)
        export_program(result.model, folder / PROGRAM_FILE, input_shape=(channels, height, width))
        onnx = export_checked_onnx(result.model, folder, input_shape=(channels, height, width))
        card = model_card(result, job_id=job_id, spec=spec, class_names=class_names, image_shape=image_shape, onnx=onnx)
        save_weights(result.model, folder / WEIGHTS_FILE)
        _write_json(folder / METRICS_FILE, metrics_document(result, report=report))
        for name, document in (extra_files or {}).items():
            _write_json(folder / name, json_safe(document))
        (folder / CARD_FILE).write_text(card.to_json(), encoding="utf-8")
        stored = [
            _store(store, folder, job_id, PROGRAM_FILE, BINARY_TYPE),
            *([_store(store, folder, job_id, onnx.file, BINARY_TYPE)] if onnx.file else []),
            _store(store, folder, job_id, WEIGHTS_FILE, BINARY_TYPE),
            _store(store, folder, job_id, METRICS_FILE, JSON_TYPE),
            *(_store(store, folder, job_id, name, JSON_TYPE) for name in (extra_files or {})),
            _store(store, folder, job_id, CARD_FILE, JSON_TYPE),  # last: a card names only files that exist
        ]
    logger.info("job %s: artefacts stored under %s", job_id, artifacts_prefix(job_id))
    return stored


def _write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2, allow_nan=False), encoding="utf-8")


def _store(store: BlobStore, folder: Path, job_id: str, name: str, content_type: str) -> StoredArtifact:
    key = artifact_key(job_id, name)
    info = store.publish(key, folder / name)
    return StoredArtifact(name=name, blob_key=key, size=info.size, sha256=info.sha256, content_type=content_type)
