"""A finished job's artefacts: exported program, safetensors weights, model card and metrics.

Files are written in a temporary folder of the blob store and moved into
``jobs/{job_id}/artifacts/{name}`` atomically (``BlobStore.put_file(move=True)``),
so a crash never leaves a torn artefact and the same code works on a remote
store. The model card format is in docs/architecture.md ("The model artefact").
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.jsonsafe import json_safe
from service.spec import JobSpec
from service.storage import BlobStore
from workers.training.export import export_program, save_weights
from workers.training.engine import FitResult

logger = logging.getLogger(__name__)

CARD_FORMAT_VERSION = 1
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class StoredArtifact:
    name: str
    blob_key: str
    size: int
    sha256: str
    content_type: str


def artifacts_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/artifacts"


def checkpoint_key(job_id: str, *, attempt: int = 0, epoch: int = 0) -> str:
    """A new file per (attempt, epoch): writing the next checkpoint never touches the one the job row
    points at, so a crash or database outage between the file and the row costs one epoch, not the
    whole run, and a worker that lost its lease never overwrites its successor's file."""
    return f"jobs/{job_id}/checkpoints/a{int(attempt)}-e{int(epoch):05d}.pt"


def model_card(
    result: FitResult, *, job_id: str, spec: JobSpec, class_names: list[str], image_shape: tuple[int, int, int]
) -> dict[str, Any]:
    """The JSON card inference and users read: input contract, normalisation, threshold, metrics, provenance."""
    height, width, channels = image_shape
    model = result.model
    return json_safe(
        {
            "format_version": CARD_FORMAT_VERSION,
            "arch": spec.model.arch,
            "class_names": list(class_names),
            "input": {
                "height": height,
                "width": width,
                "channels": channels,
                "layout": "NCHW",
                "dtype": "float32",
                "range": [0, 1],
            },
            "normalization": {"mean": model.mean.flatten().tolist(), "std": model.std.flatten().tolist()},
            "threshold": result.threshold,
            "positive_class": result.positive_class,
            "metrics": result.test or {},
            "best_epoch": result.best_epoch,
            "job_id": job_id,
            "spec": spec.model_dump(mode="json"),
        }
    )


def metrics_document(result: FitResult) -> dict[str, Any]:
    """``metrics.json``: the whole history, the selected epoch and the final blocks."""
    return json_safe(
        {
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
    job_id: str,
    spec: JobSpec,
    class_names: list[str],
    image_shape: tuple[int, int, int],
) -> list[StoredArtifact]:
    """Write and store the four artefacts; returns what was stored (for ``register_artifact``)."""
    height, width, channels = image_shape
    card = model_card(result, job_id=job_id, spec=spec, class_names=class_names, image_shape=image_shape)
    with tempfile.TemporaryDirectory(dir=store.tmp_dir(), prefix=f"export-{job_id}-") as tmp:
        folder = Path(tmp)
        export_program(result.model, folder / "model.pt2", input_shape=(channels, height, width))
        save_weights(result.model, folder / "weights.safetensors")
        _write_json(folder / "model_card.json", card)
        _write_json(folder / "metrics.json", metrics_document(result))
        stored = [
            _store(store, folder, job_id, "model.pt2", BINARY_TYPE),
            _store(store, folder, job_id, "weights.safetensors", BINARY_TYPE),
            _store(store, folder, job_id, "model_card.json", JSON_TYPE),
            _store(store, folder, job_id, "metrics.json", JSON_TYPE),
        ]
    logger.info("job %s: artefacts stored under %s", job_id, artifacts_prefix(job_id))
    return stored


def _write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2, allow_nan=False), encoding="utf-8")


def _store(store: BlobStore, folder: Path, job_id: str, name: str, content_type: str) -> StoredArtifact:
    key = f"{artifacts_prefix(job_id)}/{name}"
    info = store.put_file(key, folder / name, move=True)
    return StoredArtifact(name=name, blob_key=key, size=info.size, sha256=info.sha256, content_type=content_type)
