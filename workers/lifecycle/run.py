"""One claimed job's steps: load, build, resume, train with progress callbacks, conclude.

Used by ``workers.lifecycle.claim.run_job``, which claims the job, runs the heartbeat
and turns exceptions into outcomes. Every database write here is conditional
on this worker's lease and retried through short outages (``retry_db``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from celery import Celery
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.db import aware, transaction
from service.ingest import load_canonical, load_masks
from service.models import Job, JobStatus, utcnow
from service.queue import enqueue_job, make_celery
from service.repository import datasets, leases
from service.spec import JobSpec, effective_head
from service.storage import BlobStore
from workers.lifecycle.artifacts import export_artifacts
from workers.lifecycle.checkpoints import resume_point
from workers.lifecycle.dbretry import retry_db
from workers.lifecycle.heartbeat import Heartbeat
from workers.lifecycle.init_weights import (
    job_head,
    job_weights_key,
    load_init_state,
    load_job_weights,
    without_foreign_head,
)
from workers.lifecycle.outcome import Outcome
from workers.lifecycle.plan import build_training
from workers.lifecycle.progress import Progress
from workers.lifecycle.pruning import EpochAdvance
from workers.lifecycle.registration import register_success
from workers.lifecycle.resample import decoupled_stage
from workers.training.engine import FitResult
from workers.training.state import StopReason

logger = logging.getLogger(__name__)
T = TypeVar("T")


class LeaseLost(Exception):
    """This worker no longer holds the job's lease: stop without writing."""


@dataclass(frozen=True)
class DatasetInfo:
    blob_prefix: str
    class_names: list[str]


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU. Call only in the task child (CUDA is first touched here)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"this worker is configured for device {name!r} but CUDA is not available")
    return device


class JobRun:
    def __init__(
        self,
        *,
        job: Job,
        settings: Settings,
        worker_id: str,
        session_factory: sessionmaker[Session],
        store: BlobStore,
        celery_app: Celery | None,
    ) -> None:
        self.job_id, self.tenant_id, self.dataset_id = job.id, job.tenant_id, job.dataset_id
        self.experiment_id = job.experiment_id
        self.spec_data = job.spec
        self.checkpoint = (job.checkpoint_key, job.checkpoint_sha256)
        self.attempt = job.attempts
        self.times = {
            "created": job.created_at,
            "enqueued": job.enqueued_at,
            "started": job.started_at,
            "claimed": utcnow(),
        }
        self.settings, self.worker_id, self.session_factory = settings, worker_id, session_factory
        self.store, self.celery_app = store, celery_app
        self.device_type = "device"

    # --- database ---------------------------------------------------------
    def write(self, action: Callable[[Session], T], what: str) -> T:
        def attempt() -> T:
            with transaction(self.session_factory) as session:
                return action(session)

        return retry_db(attempt, budget_seconds=self.settings.lease_seconds, what=f"{what} (job {self.job_id})")

    # --- steps ------------------------------------------------------------
    def execute(self, *, heartbeat: Heartbeat, shutdown: threading.Event, staging: Path) -> Outcome:
        """Train the job; ``staging`` is this run's own folder for the copies of its blobs (the caller
        removes it)."""
        self.staging = staging
        spec = parse_spec(self.spec_data)
        dataset = self.write(self._dataset, "read the dataset")
        arrays = load_canonical(self.store, dataset.blob_prefix, staging=staging / "dataset", mmap=True)
        device = resolve_device(self.settings.device)
        self.device_type = device.type
        masks = None
        if spec.augment.copy_paste is not None:
            masks = load_masks(self.store, dataset.blob_prefix, staging=staging / "dataset", mmap=True)
        adapted: list[str] = []
        plan = build_training(
            spec,
            dataset_arrays=arrays,
            class_names=dataset.class_names,
            device=device,
            init_state=self._init_state(spec, notes=adapted),
            adaptations=adapted,
            masks=masks,
        )
        report = {"init": {"source": spec.model.init, "adapted": adapted}}
        resume = resume_point(self.store, checkpoint=self.checkpoint, staging=staging, job_id=self.job_id)
        start_epoch = int(resume["epoch"]) if resume else 0
        self._held(
            self.write(
                lambda s: leases.clear_epochs_after(s, job_id=self.job_id, worker_id=self.worker_id, epoch=start_epoch),
                "reset progress",
            )
        )
        progress = Progress(
            self,
            heartbeat=heartbeat,
            shutdown=shutdown,
            deadline=self._deadline(spec),
            advance=self.epoch_advance(),
        )
        result = None
        try:
            result = plan.fit(on_epoch_end=progress.on_epoch_end, should_stop=progress.should_stop, resume=resume)
        finally:
            # Only a job handed back resumes: its last finished epoch goes on disk and on the row.
            progress.checkpoints.close(write_pending=result is not None and result.stopped == StopReason.shutdown)
        extra_files: dict[str, Any] = {}
        if spec.resample is not None and result.stopped.finished:
            result, stage_report, extra_files = decoupled_stage(spec, result=result, plan=plan, device=device)
            report.update(stage_report)
        labels = {name: split.label_tensor.numpy() for name, split in (("val", plan.val), ("test", plan.test)) if split}
        return self._conclude(
            result,
            spec=spec,
            class_names=dataset.class_names,
            image_shape=plan.train.image_shape,
            pixel_bits=plan.train.pixel_bits,
            labels=labels,
            report=report,
            extra_files=extra_files,
        )

    def _dataset(self, session: Session) -> DatasetInfo:
        row = datasets.get_dataset(session, tenant_id=self.tenant_id, dataset_id=self.dataset_id)
        if row is None:
            raise ValueError(f"dataset {self.dataset_id} no longer exists")
        return DatasetInfo(blob_prefix=row.blob_prefix, class_names=[str(n) for n in row.class_names])

    def epoch_advance(self) -> EpochAdvance | None:
        """What asks the job's experiment to advance after each epoch; None unless the experiment prunes."""
        if self.experiment_id is None:
            return None
        app = self.celery_app or make_celery(self.settings)
        return self.write(
            lambda s: EpochAdvance.for_job(s, experiment_id=self.experiment_id, celery_app=app),
            "read whether the job's experiment prunes",
        )

    def _init_state(self, spec: JobSpec, *, notes: list[str]) -> dict[str, torch.Tensor] | None:
        """``model.init``'s state dict; a line in ``notes`` per tensor left out of it."""
        source = spec.model.init_source
        if source is None:
            return None
        state = load_init_state(source, weights_dir=self.settings.operator_weights_dir, job_weights=self._job_weights)
        if source.kind != "job":
            return state
        source_head = self.write(
            lambda s: job_head(s, tenant_id=self.tenant_id, job_id=source.name), "read the init job's head"
        )
        state, dropped = without_foreign_head(state, source_head=source_head, head=effective_head(spec))
        notes.extend(dropped)
        return state

    def _job_weights(self, job_id: str) -> dict[str, torch.Tensor]:
        key = self.write(lambda s: job_weights_key(s, tenant_id=self.tenant_id, job_id=job_id), "find the init model")
        return load_job_weights(self.store, key, dest=self.staging / "init.safetensors", job_id=job_id)

    def time_limit(self, spec: JobSpec) -> int:
        """Seconds from the job's first start: its own limit, capped by the server's."""
        return min(spec.max_runtime_seconds or self.settings.max_job_seconds, self.settings.max_job_seconds)

    def _deadline(self, spec: JobSpec) -> datetime:
        started = aware(self.times["started"] or self.times["claimed"])
        return started + timedelta(seconds=self.time_limit(spec))

    def log_first_step(self) -> None:
        now = utcnow()
        since = {name: (now - aware(moment)).total_seconds() for name, moment in self.times.items() if moment}
        logger.info(
            "job %s: first training step %s",
            self.job_id,
            ", ".join(f"{seconds:.3f} s after {name}" for name, seconds in since.items()),
        )

    # --- endings ----------------------------------------------------------
    def _conclude(
        self,
        result: FitResult,
        *,
        spec: JobSpec,
        class_names: list[str],
        image_shape: tuple[int, int, int],
        pixel_bits: int,
        labels: dict[str, np.ndarray],
        report: dict[str, Any],
        extra_files: dict[str, Any],
    ) -> Outcome:
        if result.stopped == StopReason.lease_lost:
            raise LeaseLost(self.job_id)
        if result.stopped == StopReason.shutdown:
            return self._release()
        if result.stopped == StopReason.cancelled:
            self._finish(status=JobStatus.cancelled, best_epoch=result.best_epoch or None)
            return Outcome.cancelled
        if result.stopped == StopReason.deadline:
            message = (
                f"the job exceeded its time limit of {self.time_limit(spec)} s after {len(result.history)} "
                "completed epoch(s); raise max_runtime_seconds or train fewer epochs"
            )
            return self.fail(error_type="TimeLimitExceeded", message=message)
        exported = export_artifacts(
            result,
            store=self.store,
            staging=self.staging,
            job_id=self.job_id,
            spec=spec,
            class_names=class_names,
            image_shape=image_shape,
            pixel_bits=pixel_bits,
            labels=labels,
            report=report,
            extra_files=extra_files,
        )

        def register(session: Session) -> None:
            self._held(  # raised inside the transaction: a lost lease registers nothing
                register_success(
                    session,
                    job_id=self.job_id,
                    tenant_id=self.tenant_id,
                    worker_id=self.worker_id,
                    best_epoch=result.best_epoch,
                    exported=exported,
                    arch=spec.model.arch,
                    image_shape=image_shape,
                )
            )

        self.write(register, "register the model")
        logger.info("job %s: succeeded (best epoch %d)", self.job_id, result.best_epoch)
        return Outcome.succeeded

    def _release(self) -> Outcome:
        self._held(
            self.write(lambda s: leases.release_job(s, job_id=self.job_id, worker_id=self.worker_id), "release the job")
        )
        try:
            enqueue_job(self.celery_app or make_celery(self.settings), self.job_id)
        except Exception:  # the reaper re-sends queued jobs whose message was lost
            logger.warning("job %s: released but not re-sent; the reaper will re-send it", self.job_id, exc_info=True)
        logger.info("job %s: handed back to the queue at shutdown", self.job_id)
        return Outcome.released

    def fail(self, *, error_type: str, message: str) -> Outcome:
        self._finish(status=JobStatus.failed, error_type=error_type, error_message=message)
        return Outcome.failed

    def record_checkpoint(self, key: str, sha256: str, epoch: int) -> bool:
        """Point the job row at a written checkpoint; False when this worker lost the lease."""
        return self.write(
            lambda s: leases.record_checkpoint(
                s, job_id=self.job_id, worker_id=self.worker_id, key=key, sha256=sha256, epoch=epoch
            ),
            f"record the checkpoint of epoch {epoch}",
        )

    def _finish(self, **values: Any) -> None:
        self._held(
            self.write(
                lambda s: leases.finish_job(s, job_id=self.job_id, worker_id=self.worker_id, **values),
                f"finish the job ({values['status'].value})",
            )
        )

    def _held(self, held: bool) -> None:
        if not held:
            raise LeaseLost(self.job_id)


def parse_spec(data: dict) -> JobSpec:
    """The stored spec as a ``JobSpec``; ``ValueError`` listing the problems if this worker cannot read it."""
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"the stored job spec is not valid for this worker: {problems}") from None
