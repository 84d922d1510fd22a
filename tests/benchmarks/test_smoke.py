"""The benchmarks cannot rot: each script's ``--quick`` variant runs and writes a well-formed section.

Scripts run as subprocesses (``python -m benchmarks.<name> --quick --results
<tmp>``), exactly as ``make bench`` runs them, so the committed
``benchmarks/RESULTS.md`` is never touched. No timing is asserted: the
numbers only have to exist, be finite and be positive (or lie in [0, 1] for
metrics). The independent metrics of ``benchmarks.metrics`` are checked
against scikit-learn, and ``write_results`` against its section contract.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, balanced_accuracy_score, f1_score, roc_auc_score

from benchmarks import common, metrics

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_quick(module: str, results: Path, npz: Path, *extra: str, timeout: float = 400) -> None:
    command = [sys.executable, "-m", module, "--quick", "--data", str(npz), "--results", str(results), *extra]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"


def section_tables(results: Path, name: str) -> list[list[dict[str, str]]]:
    """Every markdown table of section ``name`` (a section may hold several)."""
    body = common.read_section(name, path=results)
    assert body is not None, f"section {name} missing from {results}:\n{results.read_text()}"
    assert "- command: `python -m benchmarks." in body and "- machine: " in body
    tables, current = [], []
    for line in body.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(common.parse_markdown_table("\n".join(current)))
            current = []
    return tables


def positive(cell: str) -> float:
    value = float(cell.split()[0].rstrip("×"))
    assert math.isfinite(value) and value > 0, cell
    return value


def unit_interval(cell: str) -> float:
    mean = float(cell.split("±")[0])
    assert 0.0 <= mean <= 1.0, cell
    if "±" in cell:
        std = float(cell.split("±")[1])
        assert math.isfinite(std) and std >= 0.0, cell
    return mean


def test_throughput_and_scale_quick(tmp_path: Path, pneumonia_npz: Path) -> None:
    results = tmp_path / "RESULTS.md"
    run_quick("benchmarks.throughput", results, pneumonia_npz)
    (throughput,) = section_tables(results, "throughput-cpu")
    assert [row["case"].split()[0] for row in throughput] == ["simple_cnn", "resnet18", "resnet18"]
    assert "synthetic" in throughput[2]["case"]
    for row in throughput:
        for column in ("job img/s", "bare img/s", "ratio", "job train-only img/s"):
            positive(row[column])
        assert row["target ≥0.95"] in ("yes", "no")
    (scale,) = section_tables(results, "scale-cpu")
    assert [row["train set"] for row in scale] == ["1×", "4×"]
    assert [int(row["train images"]) for row in scale] == [64, 256]
    for row in scale:
        for column in ("median epoch s", "timed epochs", "ms per 1k images", "peak RSS MB"):
            positive(row[column])
    assert "growth is" in common.read_section("scale-cpu", path=results)


def test_medmnist_recipe_and_imbalance_quick(tmp_path: Path, pneumonia_npz: Path) -> None:
    results = tmp_path / "RESULTS.md"
    run_quick("benchmarks.medmnist", results, pneumonia_npz, "--recipe", "medmnist_resnet18_28", "--seeds", "0")
    runs, references = section_tables(results, "medmnist-medmnist-resnet18-28-cpu")
    assert [row["run"] for row in runs] == ["seed 0", "**mean ± std (1 seeds)**"]
    for row in runs:
        for column in ("test AUC", "test ACC", "balanced acc", "minority recall", "macro-F1", "PR-AUC (minority)"):
            unit_interval(row[column])
    assert [row["reference"] for row in references][-1] == "Google AutoML Vision"

    run_quick("benchmarks.medmnist", results, pneumonia_npz, "--imbalanced", "--seeds", "0")
    (strategies,) = section_tables(results, "imbalanced-cpu")
    assert [row["strategy"] for row in strategies] == [
        "plain CE",
        "focal (γ=2)",
        "weighted sampler",
        "CutMix",
        "focal + weighted + CutMix",
    ]
    for row in strategies:
        for column in ("minority recall", "balanced acc", "macro-F1", "PR-AUC (minority)", "test AUC"):
            unit_interval(row[column])
    assert "Best imbalance-aware strategy" in common.read_section("imbalanced-cpu", path=results)
    # The first section survived the second script's write.
    assert common.read_section("medmnist-medmnist-resnet18-28-cpu", path=results) is not None


@pytest.mark.e2e
@pytest.mark.integration
def test_inference_quick(tmp_path: Path, pneumonia_npz: Path, postgres_url: str) -> None:
    del postgres_url  # only a gate: skipped locally / failing in CI without PostgreSQL; the script makes its own
    results = tmp_path / "RESULTS.md"
    run_quick("benchmarks.inference", results, pneumonia_npz)
    targets, predict, around, polling, overhead = section_tables(results, "inference-cpu")
    assert {row["met"] for row in targets} <= {"yes", "no"}
    assert any("vs GET job p50 + forward" in row["check"] for row in targets)
    servers = ("rarefit onnxruntime", "rarefit torch", "floor")
    keys = {(r["server"], r["model"], r["encoding"], r["concurrency"]) for r in predict}
    assert keys == {(s, "simple_cnn", e, c) for s in servers for e in ("multipart", "json") for c in ("1", "16")}
    assert {(row["server"], row["request"].split(",")[0]) for row in around} == {
        *((s, r) for s in servers[:2] for r in ("GET /healthz", "GET /v1/jobs/{id}")),
        *((runtime, "simple_cnn forward") for runtime in ("onnxruntime", "torch")),
    }
    for row in around:
        positive(row["p50 ms"])
    for row in predict:
        assert row["errors"] == "0"
        for column in ("p50 ms", "p99 ms", "req/s"):
            positive(row[column])
    assert [(row["database"], row["load"].split(",")[0]) for row in polling] == [
        (database, load)
        for database in ("SQLite (embedded serve)", "PostgreSQL (rarefit api)")
        for load in ("closed loop", "open loop")
    ]
    for row in polling:
        assert row["errors"] == "0"
        positive(row["answered req/s"])
    assert overhead[-1]["run"] == "median"
    for column in ("POST → claimed s", "POST → first step s (epoch row)", "last epoch → succeeded s"):
        positive(overhead[-1][column])


@pytest.mark.e2e
def test_job_wall_quick(tmp_path: Path, pneumonia_npz: Path) -> None:
    """``rarefit serve`` → upload → warm-up job → timed job → one row with finite numbers."""
    results = tmp_path / "RESULTS.md"
    run_quick("benchmarks.job_wall", results, pneumonia_npz)
    (table,) = section_tables(results, "job-wall-cpu")
    (row,) = table
    for column in ("submit → succeeded s", "server started → finished s", "sum of epoch s", "median epoch s"):
        positive(row[column])
    for column in ("test AUC", "test ACC", "test balanced acc"):
        unit_interval(row[column])


@pytest.mark.e2e
def test_api_memory_quick(tmp_path: Path, pneumonia_npz: Path) -> None:
    results = tmp_path / "RESULTS.md"
    run_quick("benchmarks.api_memory", results, pneumonia_npz)
    (table,) = section_tables(results, "api-memory-cpu")
    (row,) = table
    assert row["cached models"] == "2"
    for column in ("API RSS before models MB", "API RSS after MB", "API peak RSS MB"):
        positive(row[column])


def test_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=300)
    scores = np.round(rng.random(300) * 0.6 + 0.4 * labels, 2)  # rounded: many ties
    probs = np.stack([1 - scores, scores], axis=1)
    assert metrics.binary_auroc(scores, labels == 1) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert metrics.average_precision(probs[:, 0], labels == 0) == pytest.approx(
        average_precision_score(labels == 0, probs[:, 0]), abs=1e-12
    )
    row = metrics.summary(probs, labels, threshold=0.3, positive_class=0, minority=0)
    predicted = np.where(probs[:, 0] >= 0.3, 0, 1)
    assert row["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted), abs=1e-12)
    assert row["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro"), abs=1e-12)
    assert row["minority_recall"] == pytest.approx(np.mean(predicted[labels == 0] == 0), abs=1e-12)


def test_write_results_rewrites_only_its_section(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    common.write_results("a-cpu", "| x |\n|---|\n| 1 |", "python -m benchmarks.a", path=path)
    common.write_results("b-gpu", "| y |\n|---|\n| 2 |", "python -m benchmarks.b", path=path)
    common.write_results("a-cpu", "| x |\n|---|\n| 3 |", "python -m benchmarks.a --again", path=path)
    text = path.read_text()
    assert text.count("<!-- BEGIN a-cpu -->") == 1 and text.count("<!-- END b-gpu -->") == 1
    assert common.parse_markdown_table(common.read_section("a-cpu", path=path)) == [{"x": "3"}]
    assert common.parse_markdown_table(common.read_section("b-gpu", path=path)) == [{"y": "2"}]
    assert "--again" in common.read_section("a-cpu", path=path)
    with pytest.raises(ValueError, match="section name"):
        common.write_results("Bad Name", "", "cmd", path=path)


def test_merge_results_copies_sections_verbatim(tmp_path: Path) -> None:
    gpu, main = tmp_path / "gpu.md", tmp_path / "RESULTS.md"
    common.write_results("throughput-gpu", "| x |\n|---|\n| 9 |", "python -m benchmarks.throughput", path=gpu)
    common.write_results("throughput-cpu", "| x |\n|---|\n| 1 |", "python -m benchmarks.throughput", path=main)
    common.write_results("throughput-gpu", "| x |\n|---|\n| 0 |", "old", path=main)
    assert common.merge_results(gpu, path=main) == ["throughput-gpu"]
    assert common.read_section("throughput-gpu", path=main) == common.read_section("throughput-gpu", path=gpu)
    assert common.parse_markdown_table(common.read_section("throughput-cpu", path=main)) == [{"x": "1"}]


def test_experiment_overhead_quick(tmp_path: Path, pneumonia_npz: Path) -> None:
    results = tmp_path / "RESULTS.md"
    run_quick("benchmarks.experiments", results, pneumonia_npz, "--overhead", timeout=600)
    [table] = section_tables(results, "experiments-overhead-cpu")
    [row] = table
    wall, job_walls, epochs = (positive(row[key]) for key in ("wall s", "sum of job wall s", "sum of epoch s"))
    # Epochs happen inside jobs, jobs one at a time inside the experiment. Job walls are the worker's
    # wall-clock timestamps, the experiment's wall the client's monotonic clock, and a VM's wall clock is
    # slewed against the monotonic one (0.5 % on a CI machine: a 21.2 s sum in a 21.1 s wall), so 2 %.
    assert epochs <= job_walls <= 1.02 * wall


def test_techniques_quick(tmp_path: Path, pneumonia_npz: Path) -> None:
    results = tmp_path / "RESULTS.md"
    run_quick("benchmarks.techniques", results, pneumonia_npz)
    (table,) = section_tables(results, "techniques-pneumonia-cpu")
    assert [row["strategy"] for row in table] == ["plain CE", "LDAM-DRW", "Balanced-MixUp (α=0.2)", "cRT Tomek"]
    for row in table:
        for column in ("minority recall", "balanced acc", "macro-F1", "PR-AUC (minority)", "test AUC"):
            unit_interval(row[column])


def test_copy_paste_quick(tmp_path: Path, pneumonia_npz: Path) -> None:
    results = tmp_path / "RESULTS.md"
    run_quick("benchmarks.copy_paste", results, pneumonia_npz)  # synthetic data: --data is ignored
    (table,) = section_tables(results, "copy-paste-cpu")
    assert [row["strategy"] for row in table] == ["plain CE", "class-balanced sampler", "copy-paste (p=0.5)"]
    for row in table:
        unit_interval(row["minority recall"])
    assert "Copy-paste vs plain CE, minority recall:" in common.read_section("copy-paste-cpu", path=results)


def test_the_synthetic_copy_paste_set_masks_exactly_its_rare_discs() -> None:
    from benchmarks.copy_paste import synthetic_set

    arrays, masks = synthetic_set(counts={"train": (30, 6)}, seed=1)
    images, labels = arrays["train"]
    assert images.shape == (36, 32, 32, 1) and np.bincount(labels).tolist() == [30, 6]
    has_object = masks["train"].reshape(36, -1).any(axis=1)
    assert np.array_equal(has_object, labels == 1)  # only the rare class carries a masked object
    assert np.all(images[..., 0][masks["train"] == 1] >= 190)  # the disc is drawn where its mask is


def test_pixel_smote_keeps_the_train_images_and_adds_interpolated_minority_ones() -> None:
    from benchmarks.techniques import pixel_smote

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(26, 4, 4, 1), dtype=np.uint8)
    labels = np.array([0] * 6 + [1] * 20, dtype=np.int64)
    out = pixel_smote({"train": (images, labels)}, seed=0)
    new_images, new_labels = out["train"]
    assert new_images.dtype == np.uint8 and new_images.shape == (40, 4, 4, 1)
    assert np.bincount(new_labels).tolist() == [20, 20]
    assert np.array_equal(new_images[:26], images)  # imbalanced-learn appends its synthetic samples
    minority = images[:6].reshape(6, -1).astype(int)
    synthetic = new_images[26:].reshape(14, -1).astype(int)
    # Every synthetic image lies inside the minority images' pixel range (a segment between two of them).
    assert np.all(synthetic >= minority.min(axis=0)) and np.all(synthetic <= minority.max(axis=0))
