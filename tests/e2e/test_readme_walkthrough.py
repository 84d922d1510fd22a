"""The README walkthrough, run as written against a real ``rarefit serve`` (address, key and paths swapped)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]


def walkthrough() -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Walkthrough with the `rarefit` command", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the README lost its walkthrough"
    return block.group(1)


def test_the_readme_walkthrough_runs(start_server, pneumonia_npz, tmp_path):
    server = start_server()
    script = (
        walkthrough()
        .replace("http://127.0.0.1:8000", server.base_url)
        .replace("RAREFIT_API_KEY=dev-key", f"RAREFIT_API_KEY={server.api_key}")
        .replace('"$PWD/.venv/bin', f'"{Path(sys.executable).parent}')
        .replace("../shared/data/pneumoniamnist.npz", str(pneumonia_npz))
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAREFIT_")}
    env.update(PYTHONPATH=str(REPO_ROOT), COLUMNS="160")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "[1214, 3494]" in done.stdout.replace("\n", "").replace(" ", "").replace("[1214,3494]", "[1214, 3494]")
    assert "succeeded" in done.stderr and "2/2" in done.stderr  # the progress bar's last state
    assert (tmp_path / "model.pt2").stat().st_size > 0
    predictions = [line for line in done.stdout.splitlines() if line.split("\t")[0] in ("0", "1")]
    assert len(predictions) == 3, done.stdout
