"""The import-linter contracts in pyproject.toml hold, and they catch what they promise to catch.

Run as part of the suite so that the one test command also checks the architecture
(docs/architecture.md, "Import rules"). The second half runs the same configuration over a tiny
stand-in tree, breaking one rule at a time, so a contract that silently stopped matching (a renamed
package, external packages left out of the graph) fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

# A stand-in for each root package, shaped like the real one and keeping every rule.
STAND_IN = {
    "rarefit/__init__.py": "",
    "rarefit/decision.py": "import math\nimport numpy\n",
    "rarefit/calibration.py": "import scipy\nfrom rarefit import decision\n",
    "rarefit/schemas.py": "import pydantic\n",
    "rarefit/client.py": "import httpx\nfrom rarefit import schemas\n",
    "service/__init__.py": "",
    "service/config.py": "import pydantic\n",
    "service/schemas.py": "import pydantic\n",
    "service/api/__init__.py": "import fastapi\nfrom service import config\n",
    "service/main.py": "import uvicorn\nfrom service import api\n",
    "workers/__init__.py": "",
    "workers/training/__init__.py": "import math\nimport numpy\nimport torch\nfrom rarefit import decision\n",
    "workers/lifecycle.py": "import sqlalchemy\nfrom service import config\nfrom workers import training\n",
    "launch/__init__.py": "import service.api\nimport workers.lifecycle\n",
}


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache", "--no-logo"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_import_linter_contracts_are_kept() -> None:
    result = lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(REPO_ROOT / "tools", tmp_path / "tools", ignore=shutil.ignore_patterns("__pycache__"))
    for name, text in STAND_IN.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def test_the_stand_in_tree_keeps_every_contract(stand_in: Path) -> None:
    result = lint_imports(stand_in)
    assert result.returncode == 0 and "5 kept, 0 broken" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "line", "shown"),
    [
        # the core: an external package outside its allow list, and the rest of the workers
        ("workers/training/__init__.py", "import sqlalchemy", "workers.training -> sqlalchemy"),
        ("workers/training/__init__.py", "import celery.app", "workers.training -> celery"),
        ("workers/training/__init__.py", "from workers import lifecycle", "workers.training -> workers.lifecycle"),
        ("workers/training/__init__.py", "import rarefit", "workers.training -> rarefit"),
        # the workers: web packages, directly or through a service module, and the web layer itself
        ("workers/lifecycle.py", "import starlette.requests", "workers.lifecycle -> starlette"),
        ("service/config.py", "import uvicorn", "service.config -> uvicorn"),
        ("workers/lifecycle.py", "import service.api", "workers.lifecycle -> service.api"),
        ("workers/lifecycle.py", "import launch", "workers.lifecycle -> launch"),
        # the service, the shared package and its decision rule (a numpy-only leaf)
        ("service/config.py", "import workers.lifecycle", "service.config -> workers.lifecycle"),
        ("service/api/__init__.py", "import launch", "service.api -> launch"),
        ("rarefit/decision.py", "import scipy.special", "rarefit.decision -> scipy"),
        ("rarefit/decision.py", "from rarefit import calibration", "rarefit.decision -> rarefit.calibration"),
        ("rarefit/calibration.py", "import service.config", "rarefit.calibration -> service.config"),
        ("rarefit/client.py", "import service.config", "rarefit.client -> service.config"),
        ("rarefit/client.py", "from service import schemas", "rarefit.client -> service.schemas"),
    ],
)
def test_each_rule_is_enforced(stand_in: Path, module: str, line: str, shown: str) -> None:
    path = stand_in / module
    path.write_text(path.read_text(encoding="utf-8") + line + "\n", encoding="utf-8")
    result = lint_imports(stand_in)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 broken" in result.stdout and shown in result.stdout, result.stdout
