"""Initial weights for transfer learning: ``model.init`` (an ``InitSource``) → a state dict, never via pickle.

- ``"job:<id>"``: the registered model of an earlier job *of the same tenant*
  (its safetensors weights); another tenant's job is "not found".
- ``"weights:<name>"``: a file the operator placed in the weights directory:
  ``.safetensors``, or ``.pt``/``.pth`` read with ``torch.load(weights_only=True)``.
  The name is a plain file name (no path separators, no leading dot).

Every problem raises ``InitNotFound`` (a ``ValueError``), so the job fails
with a readable message and no server path.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file
from sqlalchemy.orm import Session

from service.model_card import WEIGHTS_FILE
from service.repository import jobs, models
from service.spec import InitSource, JobSpec, effective_head
from service.storage import BlobStore

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SUFFIXES = (".safetensors", ".pt", ".pth")


class InitNotFound(ValueError):
    """``model.init`` names weights that do not exist or cannot be read."""


def load_init_state(
    source: InitSource, *, weights_dir: Path, job_weights: Callable[[str], dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """The state dict ``source`` names; ``job_weights(job_id)`` fetches a job's weights on this worker."""
    if source.kind == "weights":
        return load_operator_weights(source.name, weights_dir=weights_dir)
    return job_weights(source.name)


def load_job_weights(store: BlobStore, key: str, *, dest: Path, job_id: str) -> dict[str, torch.Tensor]:
    """The weights stored at ``key``, copied to ``dest`` (in the run's staging folder) and loaded from there."""
    try:
        store.download(key, dest)
    except FileNotFoundError:
        raise InitNotFound(f"init job not found: the weights of {job_id} are missing") from None
    try:
        return load_file(str(dest), device="cpu")
    finally:
        dest.unlink(missing_ok=True)


def job_weights_key(session: Session, *, tenant_id: str, job_id: str) -> str:
    """The blob key of the weights of the model the tenant's job ``job_id`` registered."""
    prefix = models.blob_prefix_of_job(session, tenant_id=tenant_id, job_id=job_id)
    if prefix is None:
        raise InitNotFound(f"init job not found: {job_id} has no registered model for this tenant")
    return f"{prefix}/{WEIGHTS_FILE}"


def job_head(session: Session, *, tenant_id: str, job_id: str) -> str | None:
    """The head kind (``linear`` or ``cosine``) the tenant's job ``job_id`` trained, ``None`` when unknown."""
    job = jobs.get_job(session, tenant_id=tenant_id, job_id=job_id)
    if job is None:
        return None
    try:
        return effective_head(JobSpec.model_validate(job.spec))
    except ValueError:  # a spec stored before a field existed may no longer parse; then the shapes decide
        return None


def without_foreign_head(
    state: dict[str, torch.Tensor], *, source_head: str | None, head: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``state`` without its ``head.*`` tensors when they belong to another kind of head, and a note per key.

    A cosine head's weight has a linear head's shape but means directions at a
    fixed scale, so loading one into the other would start from wrong logits
    without any shape check noticing.
    """
    if source_head is None or source_head == head:
        return state, []
    dropped = sorted(key for key in state if key.startswith("head."))
    reason = f"the init job's {source_head} head does not fit this job's {head} head"
    notes = [f"{key}: not loaded ({reason})" for key in dropped]
    return {k: v for k, v in state.items() if not k.startswith("head.")}, notes


def load_operator_weights(name: str, *, weights_dir: Path) -> dict[str, torch.Tensor]:
    """The state dict in the operator's file ``weights_dir/<name>``."""
    if not _NAME.match(name) or name in (".", ".."):
        raise InitNotFound(f"invalid weights name {name!r}: use a plain file name from the weights directory")
    path = _find(Path(weights_dir), name)
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path), device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickle with code, wrong format: all the operator's to fix
        raise InitNotFound(f"weights {name!r} could not be read safely ({type(exc).__name__})") from exc
    return _state_dict(state, name)


def _find(weights_dir: Path, name: str) -> Path:
    candidates = [weights_dir / name]
    if not name.endswith(SUFFIXES):
        candidates += [weights_dir / f"{name}{suffix}" for suffix in SUFFIXES]
    for path in candidates:
        if path.is_file() and path.suffix in SUFFIXES:
            return path
    raise InitNotFound(f"weights {name!r} not found in the weights directory (expected {', '.join(SUFFIXES)})")


def _state_dict(state: object, name: str) -> dict[str, torch.Tensor]:
    # Common wrappers: {"state_dict": {...}} (Lightning) and {"model": {...}}.
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise InitNotFound(f"weights {name!r} do not hold a state dict of tensors")
    return {str(key): value for key, value in state.items()}
