"""A staging folder left by a worker killed with SIGKILL is swept; one still in use, or not a job's, never is.

The owners are real processes holding real ``flock`` locks (``workers.staging``
imports no torch, so they start in well under a second).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.staging import job_staging, sweep

REPO_ROOT = Path(__file__).resolve().parents[2]
OWNER = """
import sys, time
from pathlib import Path
from workers.staging import job_staging
with job_staging(Path(sys.argv[1]), job_id=sys.argv[2]) as folder:
    (folder / "dataset.npy").write_bytes(b"x" * 4096)
    print(folder, flush=True)
    time.sleep(120)
"""


@pytest.fixture
def start_owner(tmp_path: Path) -> Iterator:
    processes: list[subprocess.Popen] = []

    def start(scratch: Path, job_id: str) -> tuple[subprocess.Popen, Path]:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        process = subprocess.Popen(
            [sys.executable, "-c", OWNER, str(scratch), job_id], stdout=subprocess.PIPE, text=True, env=env
        )
        processes.append(process)
        folder = Path(process.stdout.readline().strip())
        assert folder.parent == scratch and (folder / "dataset.npy").is_file(), folder
        return process, folder

    yield start
    for process in processes:
        process.kill()
        process.wait(timeout=10)
        process.stdout.close()


def test_a_sigkilled_owners_folder_is_swept_at_the_next_job_and_a_live_ones_is_kept(tmp_path, start_owner) -> None:
    scratch = tmp_path / "scratch"
    killed, dead_folder = start_owner(scratch, "killed")
    alive, live_folder = start_owner(scratch, "alive")
    upload = scratch / "upload-0123"  # what the API stages: no lock file, never a sweep's business
    upload.write_bytes(b"zip")
    unlocked = scratch / "job-old-abc"  # a folder without its lock file: no way to know it is dead, so kept
    unlocked.mkdir()
    os.kill(killed.pid, signal.SIGKILL)
    assert killed.wait(timeout=10) == -signal.SIGKILL
    assert (dead_folder / "dataset.npy").is_file()  # SIGKILL ran no clean-up

    with job_staging(scratch, job_id="next") as mine:
        assert not dead_folder.exists() and not dead_folder.with_name(dead_folder.name + ".lock").exists()
        assert (live_folder / "dataset.npy").is_file() and live_folder.with_name(live_folder.name + ".lock").exists()
        assert mine.is_dir() and mine.name.startswith("job-next-")
        assert sweep(scratch) == []  # its own folder and the live owner's are both in use
    assert not mine.exists()
    assert upload.is_file() and unlocked.is_dir()

    alive.kill()
    alive.wait(timeout=10)
    assert sweep(scratch) == [live_folder]
    assert sorted(path.name for path in scratch.iterdir()) == ["job-old-abc", "upload-0123"]
