"""Crash-safe checkpoints: atomic writes, sha256 verification, and loading without full pickle.

A checkpoint is written to a temporary file beside the target, flushed and
fsynced, renamed over the target with ``os.replace`` (atomic on POSIX and
Windows) and the directory entry fsynced, so a crash at any point leaves
either the old file or the new one, never a torn one. States hold only
tensors, numbers, strings, ``None``, lists, tuples and dicts, which is what
``torch.load(..., weights_only=True)`` accepts: loading never runs pickled code.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

_SAFE_SCALARS = (bool, int, float, str, type(None))
_HASH_CHUNK = 1024 * 1024


def save_checkpoint(path: Path | str, state: dict[str, Any]) -> str:
    """Write ``state`` atomically to ``path``; returns the file's sha256 hex digest."""
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    check_weights_only_safe(state)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        digest = file_sha256(tmp_name)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    logger.debug("checkpoint %s written (sha256 %s)", path, digest)
    return digest


def load_checkpoint(path: Path | str, *, sha256: str | None = None) -> dict[str, Any]:
    """Load a checkpoint onto the CPU, first checking its sha256 when given (``ValueError`` on mismatch)."""
    path = Path(path)
    if sha256 is not None:
        actual = file_sha256(path)
        if actual != sha256.lower():
            raise ValueError(f"checkpoint {path} has sha256 {actual}, expected {sha256}: corrupt or tampered")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict")
    return state


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_weights_only_safe(value: Any, where: str = "state") -> None:
    """``TypeError`` naming the first value ``torch.load(weights_only=True)`` would refuse."""
    # Exact types: numpy scalars subclass float/int but are refused by weights_only loading.
    if torch.is_tensor(value) or type(value) in _SAFE_SCALARS:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where} has a key of type {type(key).__name__}: {key!r}; use str or int keys")
            check_weights_only_safe(item, f"{where}[{key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_weights_only_safe(item, f"{where}[{index}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__module__}.{type(value).__name__}; checkpoints hold only tensors, "
        "numbers, strings, None, lists, tuples and dicts"
    )


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not possible on Windows, where os.open on a directory fails.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
