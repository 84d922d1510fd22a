"""A finished job's artefacts: exported programs (``torch.export`` and, when it exports and checks, ONNX),
safetensors weights, val/test scores, metrics and the model card.

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

import numpy as np

from service.jsonsafe import json_safe
from service.model_card import (
    CARD_FILE,
    METRICS_FILE,
    PROGRAM_FILE,
    SCORES_FILE,
    WEIGHTS_FILE,
    InputSpec,
    ModelCard,
    Normalization,
    OnnxExport,
    artifact_key,
    artifacts_prefix,
)
from service.operating_points import scores_npz
from service.spec import JobSpec
from service.storage import BlobStore
from workers.lifecycle.decisions import Decisions, make_decisions
from workers.lifecycle.onnx_export import export_checked_onnx
from workers.training.engine import FitResult
from workers.training.export import export_program, save_weights, tempered

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


@dataclass(frozen=True)
class ExportedModel:
    """What ``export_artifacts`` stored, and the card it published."""

    stored: list[StoredArtifact]
    card: ModelCard


def model_card(
    result: FitResult,
    decisions: Decisions,
    *,
    job_id: str,
    spec: JobSpec,
    class_names: list[str],
    image_shape: tuple[int, int, int],
    pixel_bits: int,
    onnx: OnnxExport,
) -> ModelCard:
    """The card inference and users read: input contract, normalisation, operating point, metrics, provenance."""
    height, width, channels = image_shape
    model = result.model
    return ModelCard(
        arch=spec.model.arch,
        class_names=list(class_names),
        positive_class=result.positive_class,
        files=[
            PROGRAM_FILE,
            *([onnx.file] if onnx.file else []),
            WEIGHTS_FILE,
            METRICS_FILE,
            *([SCORES_FILE] if decisions.scores else []),
        ],
        input=InputSpec(height=height, width=width, channels=channels, pixel_bits=pixel_bits),
        normalization=Normalization(mean=model.mean.flatten().tolist(), std=model.std.flatten().tolist()),
        calibration=decisions.calibration,
        operating_point=decisions.operating_point,
        metrics=decisions.blocks.get("test", {}),
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


def metrics_document(
    result: FitResult, decisions: Decisions, *, report: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``metrics.json``: the whole history, the selected epoch, the final (calibrated) blocks, and the job's
    ``report`` (``init``: the initial weights and what was adapted to load them)."""
    return json_safe(
        {
            **(report or {}),
            "history": [record.to_dict() for record in result.history],
            "best_epoch": result.best_epoch,
            "best_score": result.best_score,
            "stopped": result.stopped,
            "positive_class": result.positive_class,
            "operating_point": decisions.operating_point.model_dump(mode="json"),
            "calibration": decisions.calibration.model_dump(mode="json"),
            "warnings": decisions.warnings,
            "val": decisions.blocks.get("val", result.val),
            "test": decisions.blocks.get("test", result.test),
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
    pixel_bits: int,
    labels: dict[str, np.ndarray],
    report: dict[str, Any] | None = None,
    extra_files: dict[str, Any] | None = None,
) -> ExportedModel:
    """Calibrate and fit the operating point (``decisions``), store the files the card names, then the card.

    ``extra_files`` are further JSON documents of the job (e.g. ``cleaned.json``), by file name.
    """
    height, width, channels = image_shape
    decisions = make_decisions(result, spec=spec, class_names=class_names, labels=labels)
    served = tempered(result.model, decisions.calibration.temperature)  # calibrated logits, in every program
    with tempfile.TemporaryDirectory(dir=staging, prefix="export-") as tmp:
        folder = Path(tmp)
        export_program(served, folder / PROGRAM_FILE, input_shape=(channels, height, width))
        onnx = export_checked_onnx(served, folder, input_shape=(channels, height, width))
        card = model_card(
            result,
            decisions,
            job_id=job_id,
            spec=spec,
            class_names=class_names,
            image_shape=image_shape,
            pixel_bits=pixel_bits,
            onnx=onnx,
        )
        save_weights(result.model, folder / WEIGHTS_FILE)
        _write_json(folder / METRICS_FILE, metrics_document(result, decisions, report=report))
        if decisions.scores:
            (folder / SCORES_FILE).write_bytes(scores_npz(decisions.scores))
        for name, document in (extra_files or {}).items():
            _write_json(folder / name, json_safe(document))
        (folder / CARD_FILE).write_text(card.to_json(), encoding="utf-8")
        types = {SCORES_FILE: BINARY_TYPE, METRICS_FILE: JSON_TYPE}
        stored = [_store(store, folder, job_id, name, types.get(name, BINARY_TYPE)) for name in card.files]
        stored += [_store(store, folder, job_id, name, JSON_TYPE) for name in (extra_files or {})]
        # The card last: a published card names only files that exist.
        stored.append(_store(store, folder, job_id, CARD_FILE, JSON_TYPE))
    logger.info("job %s: artefacts stored under %s", job_id, artifacts_prefix(job_id))
    return ExportedModel(stored=stored, card=card)


def _write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2, allow_nan=False), encoding="utf-8")


def _store(store: BlobStore, folder: Path, job_id: str, name: str, content_type: str) -> StoredArtifact:
    key = artifact_key(job_id, name)
    info = store.publish(key, folder / name)
    return StoredArtifact(name=name, blob_key=key, size=info.size, sha256=info.sha256, content_type=content_type)
