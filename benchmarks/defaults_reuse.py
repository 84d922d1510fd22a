"""The defaults study's old-recipe columns taken from a section it published, instead of training them again.

The old recipe (``JobSpec``'s own defaults) does not change when the rule in
``service.defaults`` does, and a CPU run of it is deterministic per seed, so
re-measuring it for every new rule costs hours (ResNet-18, 40 epochs, three
seeds) and measures nothing new. ``--reuse-old SECTION`` takes a case's old
columns (mean ± std, seconds) from an earlier section of this study when:

- the section ran the same seeds and epochs, and
- nothing that trains the old recipe or builds the cases (``OLD_RECIPE_CODE``)
  differs from the commit the columns were measured at (``git diff``, the
  working tree included); otherwise the study refuses.

The new section names where each reused column was measured, and that line
travels on when a reused section is reused again.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import common

OLD_RECIPE_CODE = (
    "workers",
    "service/spec.py",
    "service/threshold_spec.py",
    "benchmarks/common.py",
    "benchmarks/techniques.py",
    "benchmarks/imbalance.py",
    "benchmarks/medmnist.py",
)
_MEASURED = re.compile(
    r"^- (?P<case>\S+): old-recipe columns measured (?P<where>.+?) at commit `(?P<commit>[0-9a-f]+)`", re.M
)
_HEADER = re.compile(r"^- date: (?P<date>.+)$\n^- machine: (?P<machine>.+)$", re.M)
_COMMIT = re.compile(r"^- commit: `(?P<commit>[0-9a-f]+)`", re.M)


@dataclass(frozen=True)
class ReusedOld:
    """One case's old-recipe columns from a published section: ``stats[metric] = (mean, std)``."""

    stats: dict[str, tuple[float, float]]
    seconds: float
    commit: str
    where: str
    section: str

    def line(self, case: str) -> str:
        return (
            f"- {case}: old-recipe columns measured {self.where} at commit `{self.commit}` (section "
            f"`{self.section}`), not trained again: the old recipe's code ({', '.join(OLD_RECIPE_CODE)}) is "
            "unchanged since."
        )


def reused_old(
    case: str, *, sections: Sequence[str], columns: Sequence[tuple[str, str]], runs: str, results: Path
) -> ReusedOld | None:
    """``case``'s old columns from the first of ``sections`` that has them; ``runs`` is the seeds-and-epochs
    sentence both studies must share. Raises ``ValueError`` where the old recipe's code changed since."""
    for section in sections:
        text = common.read_section(section, path=results)
        row = _row(text, case) if text is not None and runs in text else None
        if text is None or row is None:
            continue
        earlier = {match["case"]: match for match in _MEASURED.finditer(text)}.get(case)
        header, commit = _HEADER.search(text), _COMMIT.search(text)
        if earlier is None and (header is None or commit is None):
            continue
        where = earlier["where"] if earlier else f"{header['date']} on {header['machine']}"  # type: ignore[index]
        measured_at = earlier["commit"] if earlier else commit["commit"]  # type: ignore[index]
        _check_unchanged(measured_at, section=section)
        stats = {key: _mean_std(row[f"{label} old"]) for key, label in columns}
        seconds = float(row["s per run old / new"].split("/")[0])
        return ReusedOld(stats=stats, seconds=seconds, commit=measured_at, where=where, section=section)
    return None


def _row(text: str, case: str) -> dict[str, str] | None:
    row = next((r for r in common.parse_markdown_table(text) if r.get("case") == case), None)
    return None if row is None or "not run" in row.get("new defaults change", "") else row


def _mean_std(cell: str) -> tuple[float, float]:
    mean, _, std = cell.partition("±")
    return float(mean), float(std)


def _check_unchanged(commit: str, *, section: str) -> None:
    done = subprocess.run(["git", "diff", "--quiet", commit, "--", *OLD_RECIPE_CODE], cwd=common.REPO_ROOT, check=False)
    if done.returncode == 1:
        raise ValueError(f"--reuse-old {section}: the old recipe's code changed since `{commit}`; train it again")
    if done.returncode != 0:
        raise ValueError(f"--reuse-old {section}: cannot compare with commit `{commit}` (git diff failed)")
