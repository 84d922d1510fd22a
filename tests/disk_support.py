"""Helpers for the full-disk tests (the ``small_tmpfs`` fixture mounts the disk)."""

from __future__ import annotations

import os
from pathlib import Path


def fill_up(folder: Path) -> None:
    """Write a filler file in ``folder`` until its filesystem has not one page left."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for chunk in (1024 * 1024, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                continue
    finally:
        os.close(fd)


def free_bytes(folder: Path) -> int:
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize
