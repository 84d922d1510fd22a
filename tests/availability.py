"""What a test does when a server or tool it needs is missing: skip on a developer machine, fail under CI.

A module of its own (not conftest) so every folder's tests and fixtures can import it.
"""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def unavailable(reason: str) -> None:
    """Skip locally, fail under CI: a missing server is a broken CI machine, not a pass."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)
