"""What a failed job tells its user: an error type and a readable message, or "retry later".

A job that cannot succeed fails with its error class and a message without server paths or
tracebacks; lost infrastructure (database, broker) is not the job's fault, so the job is left for
the reaper instead.
"""

from __future__ import annotations

import re

import torch
from kombu.exceptions import OperationalError as BrokerOperationalError

from service.storage import StorageUnavailable, full_cause
from workers.lifecycle.dbretry import InfrastructureError, is_connection_error

STORAGE_FULL = "storage_full"
STORAGE_UNAVAILABLE = "storage_unavailable"
_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.-]+/)+[\w.-]*")
OOM_ADVICE = (
    "the job ran out of memory on the worker's {device}; try a smaller batch_size, a smaller "
    "model.image_size or a smaller model.arch"
)


def classify_error(exc: BaseException, *, device: str = "device") -> tuple[str, str] | None:
    """``(error_type, readable message)`` for a job failure; None for lost infrastructure (retry later)."""
    if isinstance(exc, InfrastructureError) or is_connection_error(exc) or _is_broker_error(exc):
        return None
    if isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc)):
        return "OutOfMemory", OOM_ADVICE.format(device=device)
    if (cause := full_cause(exc)) is not None:
        return STORAGE_FULL, readable(f"{cause}; the operator must free space or raise the quota, then resubmit")
    if isinstance(exc, StorageUnavailable):
        return STORAGE_UNAVAILABLE, readable(f"{exc}; resubmit the job when it is reachable again")
    if isinstance(exc, (ValueError, TypeError)):
        return type(exc).__name__, readable(str(exc))
    if isinstance(exc, OSError):
        return type(exc).__name__, readable(f"a file the job needs could not be read: {exc.strerror or exc}")
    return type(exc).__name__, "internal error in the training worker; the operator can find details in its log"


def _is_broker_error(exc: BaseException) -> bool:
    return isinstance(exc, BrokerOperationalError)


def readable(message: str, *, limit: int = 2000) -> str:
    """``message`` without absolute file system paths, on one line, at most ``limit`` characters."""
    text = _PATH.sub("<path>", message)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
