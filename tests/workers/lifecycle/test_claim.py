"""``run_job`` in-process on SQLite, the local blob store and a tiny synthetic data set (simple_cnn, CPU)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import timedelta

import numpy as np
import pytest
import torch
import torchvision
from job_rows import add_stored_dataset, add_tenant
from safetensors.torch import load_file, save_file
from sqlalchemy import select

from service.db import make_engine, make_session_factory, transaction
from service.ingest import DecodedDataset, load_canonical, store_canonical
from service.migrate import upgrade_head
from service.model_card import ModelCard, checkpoint_key
from service.models import Artifact, EpochMetrics, Job, JobStatus, Model, Tenant, utcnow
from service.operating_points import read_scores_npz
from service.queue import make_celery
from service.spec import JobSpec
from service.storage import LocalBlobStore
from workers.lifecycle.claim import run_job
from workers.lifecycle.failures import classify_error, readable
from workers.lifecycle.plan import build_training
from workers.training.checkpoint import save_checkpoint
from workers.training.engine import fit
from workers.training.networks import build_network

SPEC = {
    "model": {"arch": "simple_cnn"},
    "epochs": 2,
    "batch_size": 16,
    "augment": {"rotation": 0, "scale": None},
    "optim": {"lr": 0.01},
}


def synthetic(counts, *, seed):
    """Class 1 images are brighter: learnable in a couple of epochs."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c, dtype=np.int64) for c, n in enumerate(counts)])
    images = rng.integers(0, 120, size=(len(labels), 8, 8, 1)) + 100 * labels[:, None, None, None]
    return images.astype(np.uint8), labels


@pytest.fixture
def settings(sqlite_settings):
    return sqlite_settings(heartbeat_seconds=0.1, lease_seconds=5, device="cpu")


@pytest.fixture
def env(settings):
    upgrade_head(settings.sqlalchemy_url)
    engine = make_engine(settings.sqlalchemy_url)
    factory = make_session_factory(engine)
    store = LocalBlobStore(settings.blob_dir)
    with transaction(factory) as session:
        tenant = add_tenant(session, name="acme")
        decoded = DecodedDataset(
            format="npz",
            class_names=["normal", "rare"],
            image_shape=(8, 8, 1),
            splits={
                "train": synthetic((64, 16), seed=0),
                "val": synthetic((16, 8), seed=1),
                "test": synthetic((16, 8), seed=2),
            },
        )
        dataset = add_stored_dataset(
            session,
            decoded,
            tenant_id=tenant.id,
            name="tiny",
            imbalance_ratio=4.0,
            store=store,
            scratch=settings.scratch_path,
        )
        ids = {"tenant": tenant.id, "dataset": dataset.id}
    yield {"factory": factory, "store": store, **ids}
    engine.dispose()


def make_job(env, overrides=None, **values) -> str:
    spec = JobSpec.model_validate({"dataset_id": env["dataset"], **SPEC, **(overrides or {})})
    with transaction(env["factory"]) as session:
        job = Job(
            tenant_id=env["tenant"],
            dataset_id=env["dataset"],
            spec=spec.model_dump(mode="json"),
            epochs=spec.epochs,
            **values,
        )
        session.add(job)
        session.flush()
        return job.id


def run(env, settings, job_id, worker="w1"):
    return run_job(job_id, settings=settings, worker_id=worker, session_factory=env["factory"], store=env["store"])


def job_row(env, job_id) -> Job:
    with env["factory"]() as session:
        return session.get(Job, job_id)


def epochs_recorded(env, job_id) -> list[int]:
    with env["factory"]() as session:
        query = select(EpochMetrics.epoch).where(EpochMetrics.job_id == job_id).order_by(EpochMetrics.epoch)
        return list(session.scalars(query))


def test_job_succeeds_with_metrics_artifacts_and_model_then_skips_a_duplicate(env, settings):
    job_id = make_job(env)
    assert run(env, settings, job_id) == "succeeded"
    job = job_row(env, job_id)
    assert (job.status, job.attempts, job.progress_epoch, job.error_type) == (JobStatus.succeeded, 1, 2, None)
    assert epochs_recorded(env, job_id) == [1, 2] and job.best_epoch in (1, 2)
    assert job.test_metrics["confusion_matrix"] and job.lease_expires_at is None
    with env["factory"]() as session:
        artifacts = {a.name: a for a in session.scalars(select(Artifact).where(Artifact.job_id == job_id))}
        model = session.get(Model, job.model_id)
    assert sorted(artifacts) == [
        "metrics.json",
        "model.onnx",
        "model.pt2",
        "model_card.json",
        "scores.npz",
        "weights.safetensors",
    ]
    store = env["store"]
    for artifact in artifacts.values():
        assert store.size(artifact.blob_key) == artifact.size > 0
    assert (model.job_id, model.tenant_id, model.arch, model.input_shape) == (
        job_id,
        env["tenant"],
        "simple_cnn",
        [8, 8, 1],
    )
    assert model.class_names == ["normal", "rare"] and model.positive_class == 1
    card = ModelCard.model_validate_json(store.local_path(artifacts["model_card.json"].blob_key).read_text())
    assert card.input.model_dump() == {
        "height": 8,
        "width": 8,
        "channels": 1,
        "layout": "NCHW",
        "dtype": "float32",
        "range": (0, 1),
        "pixel_bits": 8,
    }
    assert (card.job_id, card.threshold, card.positive_class) == (job_id, model.threshold, 1)
    assert set(card.files) <= set(artifacts) and card.class_names == model.class_names
    # Calibrated on val (temperature in the program), operating point verified on test with bounds.
    assert card.calibration.method == "temperature" and card.calibration.temperature > 0
    calibration = card.metrics["calibration"]
    assert calibration["temperature"] == card.calibration.temperature
    assert sum(b["count"] for b in calibration["reliability_after"]) == sum(
        r["support"] for r in card.metrics["per_class"]
    )
    for entry in card.metrics["per_class"]:
        assert entry["recall_lower_bound"] is None or 0 <= entry["recall_lower_bound"] <= entry["recall"]
    scores = read_scores_npz(store.local_path(artifacts["scores.npz"].blob_key).read_bytes())
    assert set(scores) == {"val", "test"} and scores["test"].probs.shape == (len(scores["test"].labels), 2)
    assert "model.pt2" in card.files and card.onnx.file == "model.onnx" and "model.onnx" in card.files
    assert card.onnx.max_abs_diff is not None and 0 <= card.onnx.max_abs_diff < 1e-3 and card.onnx.error is None
    assert torch.__version__.startswith(card.versions["torch"]) and card.versions["onnxruntime"]
    metrics = json.loads(store.local_path(artifacts["metrics.json"].blob_key).read_text())
    assert [r["epoch"] for r in metrics["history"]] == [1, 2] and metrics["best_epoch"] == job.best_epoch
    program = torch.export.load(str(store.local_path(artifacts["model.pt2"].blob_key))).module()
    images, _ = load_canonical(store, f"datasets/{env['dataset']}", staging=settings.scratch_path / "t")["test"]
    batch = torch.from_numpy(np.array(images[:5])).permute(0, 3, 1, 2).float() / 255
    assert program(batch).shape == (5, 2)
    # A second delivery of the same message trains nothing.
    assert run(env, settings, job_id, worker="w2") == "skipped"
    assert job_row(env, job_id).attempts == 1 and epochs_recorded(env, job_id) == [1, 2]


def test_cancel_flag_cancels_the_running_job(env, settings):
    job_id = make_job(env, {"epochs": 50}, cancel_requested=True)
    assert run(env, settings, job_id) == "cancelled"
    job = job_row(env, job_id)
    assert job.status == JobStatus.cancelled and job.progress_epoch < 50 and job.model_id is None


def test_resume_continues_from_the_checkpoint_with_each_epoch_once(env, settings):
    overrides = {"epochs": 3, "seed": 5}
    crashed, uninterrupted = make_job(env, overrides), make_job(env, overrides)
    spec = JobSpec.model_validate({"dataset_id": env["dataset"], **SPEC, **overrides})
    arrays = load_canonical(env["store"], f"datasets/{env['dataset']}", staging=settings.scratch_path / "t")
    kwargs = build_training(
        spec, dataset_arrays=arrays, class_names=["normal", "rare"], device="cpu", init_state=None
    ).fit_arguments()
    key = checkpoint_key(crashed)
    saved = {}

    def checkpoint(record, state):
        saved["sha"] = save_checkpoint(env["store"].local_path(key), state.to_checkpoint())
        saved["record"] = record

    fit(**{**kwargs, "epochs": 1}, on_epoch_end=checkpoint)
    with transaction(env["factory"]) as session:  # what the crashed worker had committed
        job = session.get(Job, crashed)
        job.checkpoint_key, job.checkpoint_sha256, job.checkpoint_epoch, job.attempts = key, saved["sha"], 1, 1
        session.add(EpochMetrics(job_id=crashed, epoch=1, train_loss=saved["record"].train_loss, lr=0.0, seconds=1.0))
    assert run(env, settings, crashed) == "succeeded"
    assert run(env, settings, uninterrupted) == "succeeded"
    assert epochs_recorded(env, crashed) == [1, 2, 3] and job_row(env, crashed).attempts == 2
    history = {job_id: _history(env, job_id) for job_id in (crashed, uninterrupted)}
    assert [r["epoch"] for r in history[crashed]] == [1, 2, 3]
    assert history[crashed][0]["train_loss"] == pytest.approx(saved["record"].train_loss)
    # Resuming reproduces the uninterrupted run (per-epoch randomness is a function of (seed, epoch)).
    losses = [[r["train_loss"] for r in history[job_id]] for job_id in (crashed, uninterrupted)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def _history(env, job_id):
    with env["factory"]() as session:
        key = session.scalar(
            select(Artifact.blob_key).where(Artifact.job_id == job_id, Artifact.name == "metrics.json")
        )
    return json.loads(env["store"].local_path(key).read_text())["history"]


def test_corrupt_checkpoint_starts_over_and_drops_stale_epochs(env, settings):
    job_id = make_job(env)
    key = checkpoint_key(job_id)
    env["store"].write(key, b"not a checkpoint")
    with transaction(env["factory"]) as session:
        job = session.get(Job, job_id)
        job.checkpoint_key, job.checkpoint_sha256, job.checkpoint_epoch = key, "0" * 64, 2
        for epoch in (1, 2, 3):  # a stale row past this run's end must not survive
            session.add(EpochMetrics(job_id=job_id, epoch=epoch, train_loss=9.0, lr=0.0, seconds=1.0))
    assert run(env, settings, job_id) == "succeeded"
    assert epochs_recorded(env, job_id) == [1, 2]
    assert all(r["train_loss"] != 9.0 for r in _history(env, job_id))


@pytest.mark.parametrize(
    ("overrides", "error_type", "fragment"),
    [
        ({"loss": {"type": "focal", "alpha": [0.1, 0.2, 0.7]}}, "ValueError", "alpha"),
        ({"model": {"arch": "simple_cnn", "init": "job:" + "0" * 32}}, "InitNotFound", "init job not found"),
        ({"model": {"arch": "simple_cnn", "init": "weights:absent.safetensors"}}, "InitNotFound", "not found"),
    ],
)
def test_impossible_jobs_fail_at_once_with_a_readable_message(env, settings, overrides, error_type, fragment):
    job_id = make_job(env, overrides)
    assert run(env, settings, job_id) == "failed"
    job = job_row(env, job_id)
    assert (job.status, job.error_type, job.attempts) == (JobStatus.failed, error_type, 1)
    assert fragment in job.error_message and str(settings.data_dir) not in job.error_message


def test_deadline_fails_the_job_with_time_limit_exceeded(env, settings):
    job_id = make_job(env, {"epochs": 50, "max_runtime_seconds": 60}, started_at=utcnow() - timedelta(hours=1))
    assert run(env, settings, job_id) == "failed"
    job = job_row(env, job_id)
    assert job.error_type == "TimeLimitExceeded" and "time limit of 60 s" in job.error_message


def test_transfer_learning_from_a_job_and_from_operator_weights(env, settings):
    source = make_job(env, {"epochs": 1})
    assert run(env, settings, source) == "succeeded"
    settings.operator_weights_dir.mkdir(parents=True)
    with env["factory"]() as session:
        prefix = session.scalar(select(Model.blob_prefix).where(Model.job_id == source))
    weights = env["store"].local_path(f"{prefix}/weights.safetensors")
    save_file(load_file(str(weights)), str(settings.operator_weights_dir / "mine.safetensors"))
    for init in (f"job:{source}", "weights:mine"):
        job_id = make_job(env, {"epochs": 1, "model": {"arch": "simple_cnn", "init": init}})
        assert run(env, settings, job_id) == "succeeded", job_row(env, job_id).error_message
    with transaction(env["factory"]) as session:  # another tenant cannot start from this tenant's job
        other = Tenant(name="other")
        session.add(other)
        session.flush()
        session.get(Model, job_row(env, source).model_id).tenant_id = other.id
    job_id = make_job(env, {"epochs": 1, "model": {"arch": "simple_cnn", "init": f"job:{source}"}})
    assert run(env, settings, job_id) == "failed" and "init job not found" in job_row(env, job_id).error_message


def test_init_from_a_cosine_head_job_keeps_the_backbone_and_leaves_a_linear_head_new(env, settings):
    """A cosine head's weight has a linear head's shape, so only the head kinds tell that it does not fit."""
    source = make_job(env, {"epochs": 1, "model": {"arch": "simple_cnn"}, "loss": {"type": "ldam"}})
    assert run(env, settings, source) == "succeeded", job_row(env, source).error_message

    def adapted(overrides):
        job_id = make_job(env, {"epochs": 1, "model": {"arch": "simple_cnn", "init": f"job:{source}"}, **overrides})
        assert run(env, settings, job_id) == "succeeded", job_row(env, job_id).error_message
        metrics = json.loads(env["store"].local_path(f"jobs/{job_id}/artifacts/metrics.json").read_text())
        return metrics["init"]["adapted"]

    linear = adapted({"loss": {"type": "cross_entropy"}})
    assert "head.weight: not loaded (the init job's cosine head does not fit this job's linear head)" in linear
    assert "head.bias: not loaded (the init job's cosine head does not fit this job's linear head)" in linear
    assert adapted({"loss": {"type": "ldam"}}) == []  # the same kind of head is loaded as it was trained


def test_sigterm_hands_the_job_back_to_the_queue_with_its_checkpoint(env, settings):
    job_id = make_job(env, {"epochs": 200})
    fired = threading.Event()

    def terminate_after_first_epoch():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not fired.is_set():
            if job_row(env, job_id).progress_epoch >= 1:
                os.kill(os.getpid(), signal.SIGTERM)
                fired.set()
            time.sleep(0.01)

    safety = signal.signal(signal.SIGTERM, lambda *_: None)  # a late signal must not kill pytest
    thread = threading.Thread(target=terminate_after_first_epoch, daemon=True)
    try:
        thread.start()
        outcome = run(env, settings, job_id)
    finally:
        fired.set()
        thread.join()
        signal.signal(signal.SIGTERM, safety)
    assert outcome == "released"
    job = job_row(env, job_id)
    assert (job.status, job.attempts, job.worker_id) == (JobStatus.queued, 0, None)
    assert job.checkpoint_epoch >= 1 and env["store"].exists(job.checkpoint_key)
    with make_celery(settings).connection_for_read() as connection, connection.SimpleQueue("train") as queue:
        message = queue.get(timeout=2)
        assert message.payload[0] == [job_id]
        message.ack()


def test_error_classification_and_readable_messages():
    assert classify_error(torch.OutOfMemoryError("CUDA out of memory"), device="cuda")[0] == "OutOfMemory"
    assert "smaller batch_size" in classify_error(RuntimeError("CUDA error: out of memory"))[1]
    assert classify_error(ValueError("bad /srv/data/x.npy here")) == ("ValueError", "bad <path> here")
    assert classify_error(KeyError("x"))[1].startswith("internal error")
    assert (
        readable("a\n  b") == "a b" and readable("see https://errors.example/v/x") == "see https://errors.example/v/x"
    )


def test_imagenet_layout_weights_train_on_small_grayscale_and_the_job_reports_the_adaptation(env, settings):
    """An operator drops a torchvision ResNet-18 state dict (3 channels, 1000 classes) in the weights directory."""
    settings.operator_weights_dir.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), settings.operator_weights_dir / "resnet18.pth")
    overrides = {
        "model": {"arch": "resnet18", "init": "weights:resnet18", "freeze_backbone_epochs": 1},
        "optim": {"backbone_lr_scale": 0.1},
    }
    job_id = make_job(env, overrides)
    assert run(env, settings, job_id) == "succeeded", job_row(env, job_id).error_message
    metrics = json.loads(env["store"].local_path(f"jobs/{job_id}/artifacts/metrics.json").read_text())
    assert metrics["init"]["source"] == "weights:resnet18"
    adapted = "\n".join(metrics["init"]["adapted"])
    assert "backbone.conv1.weight: 3 -> 1 input channels (summed over RGB)" in adapted
    assert "backbone.conv1.weight: pretrained 7x7 kernel kept at stride 1" in adapted
    assert "head.weight: not loaded (new head)" in adapted


@pytest.mark.parametrize(
    "method",
    ["smote", "borderline_smote", "random_over", "random_under", "tomek", "enn", "smote_tomek", "smote_enn"],
)
def test_a_job_with_each_resample_method_exports_backbone_and_new_head(env, settings, method):
    overrides = {"epochs": 1, "resample": {"method": method, "k_neighbors": 3, "head_epochs": 2}}
    job_id = make_job(env, overrides)
    assert run(env, settings, job_id) == "succeeded", job_row(env, job_id).error_message
    store = env["store"]
    metrics = json.loads(store.local_path(f"jobs/{job_id}/artifacts/metrics.json").read_text())
    assert metrics["resample"]["method"] == method and metrics["resample"]["counts_before"] == {
        "normal": 64,
        "rare": 16,
    }
    assert set(metrics["stage1"]) == {"best_epoch", "threshold", "val", "test"} and metrics["stage1"]["test"]
    assert metrics["test"] and metrics["test"] != metrics["stage1"]["test"]
    with env["factory"]() as session:
        names = set(session.scalars(select(Artifact.name).where(Artifact.job_id == job_id)))
    assert ("cleaned.json" in names) == (method in ("tomek", "enn"))
    if method in ("tomek", "enn"):
        cleaned = json.loads(store.local_path(f"jobs/{job_id}/artifacts/cleaned.json").read_text())
        dropped = 64 - metrics["resample"]["counts_after"]["normal"]
        assert cleaned["count"] == dropped == len(cleaned["dropped"])
        assert all(item["class"] == "normal" for item in cleaned["dropped"])
    # The exported program is the stage-1 backbone with the stage-2 head (logits over the card's temperature).
    program = torch.export.load(str(store.local_path(f"jobs/{job_id}/artifacts/model.pt2"))).module()
    card = ModelCard.model_validate_json(store.local_path(f"jobs/{job_id}/artifacts/model_card.json").read_text())
    weights = load_file(str(store.local_path(f"jobs/{job_id}/artifacts/weights.safetensors")))
    images, _ = load_canonical(store, f"datasets/{env['dataset']}", staging=settings.scratch_path / "t")["test"]
    batch = torch.from_numpy(np.array(images[:4])).permute(0, 3, 1, 2).float() / 255
    model = build_network("simple_cnn", num_classes=2, in_channels=1, input_size=(8, 8), mean=[0.0], std=[1.0])
    model.load_state_dict(weights)
    expected = model.eval()(batch) / card.calibration.temperature
    torch.testing.assert_close(program(batch), expected, rtol=1e-4, atol=1e-4)


def test_adasyn_on_separable_embeddings_fails_the_job_with_imbalanced_learns_reason(env, settings):
    # The classes here are separable: no minority sample has a majority neighbour, so ADASYN has no
    # density to weigh by (it succeeds on overlapping classes: tests/workers/lifecycle/test_resample.py).
    job_id = make_job(env, {"epochs": 1, "resample": {"method": "adasyn", "k_neighbors": 3, "head_epochs": 1}})
    assert run(env, settings, job_id) == "failed"
    job = job_row(env, job_id)
    assert "resample adasyn failed on the train embeddings" in job.error_message
    assert "ADASYN is not suited" in job.error_message


def test_a_copy_paste_job_reads_the_stored_masks(env, settings):
    images, labels = synthetic((64, 16), seed=0)
    masks = np.zeros(images.shape[:3], dtype=np.uint8)
    masks[labels == 1, 2:6, 2:6] = 1
    decoded = DecodedDataset(
        format="npz",
        class_names=["normal", "rare"],
        image_shape=(8, 8, 1),
        splits={"train": (images, labels), "val": synthetic((16, 8), seed=1), "test": synthetic((16, 8), seed=2)},
        masks={"train": masks},
    )
    store_canonical(decoded, store=env["store"], prefix=f"datasets/{env['dataset']}", scratch=settings.scratch_path)
    job_id = make_job(env, {"augment": {"copy_paste": {"prob": 0.5}}})
    assert run(env, settings, job_id) == "succeeded", job_row(env, job_id).error_message
    plain = make_job(env, {"augment": {"copy_paste": {"classes": ["normal"]}}})  # no normal image has a mask
    assert run(env, settings, plain) == "failed"
    assert "no masked train image of the chosen classes" in job_row(env, plain).error_message
