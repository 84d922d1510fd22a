"""The inference tests' artefact builder for other service tests (``export_net`` and friends).

It lives in ``tests/service/inference/conftest.py``, which is not importable by
name, so it is loaded by path once and registered in ``sys.modules``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_MODULE_NAME = "rarefit_inference_artefacts"


def inference_support() -> ModuleType:
    if _MODULE_NAME not in sys.modules:
        path = Path(__file__).parent / "service" / "inference" / "conftest.py"
        spec = importlib.util.spec_from_file_location(_MODULE_NAME, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[_MODULE_NAME] = module  # before running it: its dataclasses look themselves up there
        spec.loader.exec_module(module)
    return sys.modules[_MODULE_NAME]
