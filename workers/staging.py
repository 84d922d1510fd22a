"""Each job's staging folder on the worker's own disk, and the sweep of the folders killed workers left.

A job stages its blobs (dataset copy, resume checkpoint, exports) in
``<scratch>/job-<job id>-<random>/``. Beside it lies the lock file
``job-<job id>-<random>.lock``, held with an exclusive ``flock`` for as long
as the folder is in use. The kernel releases the lock when the process dies,
however it dies (SIGKILL, the OOM killer), so a lock that can be taken names
a folder nobody uses: ``sweep`` removes such folders, and every job sweeps
before it makes its own. A folder without a lock file (an upload the API is
parsing, anything else) is never touched.

Order keeps a folder in use safe from a concurrent sweep: the lock file is made
and locked before its folder exists and removed after the folder is gone, and
whoever takes a lock checks that the file it locked is still the one at the
path (a sweeper may have removed it in between), else it does not act on it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

PREFIX = "job-"
LOCK_SUFFIX = ".lock"


@contextmanager
def job_staging(scratch: Path, *, job_id: str) -> Iterator[Path]:
    """A new staging folder for ``job_id`` under ``scratch``, locked while in use and removed afterwards.

    Folders of dead processes under ``scratch`` are swept first, so a killed worker's leftovers are
    reclaimed before a new job needs the space.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    sweep(scratch)
    fd, lock = _new_lock(scratch, job_id)
    folder = _folder_of(lock)
    try:
        folder.mkdir()
        yield folder
    finally:
        _remove(folder, lock, fd)


def sweep(scratch: Path) -> list[Path]:
    """Remove the staging folders under ``scratch`` whose owner has died; answers the folders removed."""
    removed = []
    for lock in sorted(scratch.glob(f"{PREFIX}*{LOCK_SUFFIX}")):
        fd = _take(lock, wait=False)
        if fd is None:  # in use, or already swept by another process
            continue
        folder = _folder_of(lock)
        _remove(folder, lock, fd)
        logger.info("removed the staging folder %s left by a dead worker process", folder.name)
        removed.append(folder)
    return removed


def _new_lock(scratch: Path, job_id: str) -> tuple[int, Path]:
    while True:
        fd, name = tempfile.mkstemp(prefix=f"{PREFIX}{job_id}-", suffix=LOCK_SUFFIX, dir=scratch)
        os.close(fd)
        # A sweeper may lock and remove the new file before this process locks it; then make another.
        taken = _take(Path(name), wait=True)
        if taken is not None:
            return taken, Path(name)


def _take(lock: Path, *, wait: bool) -> int | None:
    """The descriptor holding ``lock`` exclusively; ``None`` when it is held elsewhere or no longer at its path."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        held, current = os.fstat(fd), os.stat(lock)
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        return None
    if (held.st_dev, held.st_ino) != (current.st_dev, current.st_ino):
        os.close(fd)
        return None
    return fd


def _folder_of(lock: Path) -> Path:
    return lock.with_name(lock.name.removesuffix(LOCK_SUFFIX))


def _remove(folder: Path, lock: Path, fd: int) -> None:
    # Folder first, lock file last: a process killed in between leaves a free lock, and the next sweep finishes.
    try:
        shutil.rmtree(folder, ignore_errors=True)
        lock.unlink(missing_ok=True)
    finally:
        os.close(fd)
