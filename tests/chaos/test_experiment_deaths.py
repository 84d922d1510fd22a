"""An experiment survives its processes dying: every trial runs once, every seed's job trains once.

``rarefit serve`` (embedded) runs a 2-trial × 2-seed grid. Mid-way the
training pool child is SIGKILLed (its lease expires, the reaper re-queues the
job, it resumes from its checkpoint) and the control worker's whole process
group too (serve restarts it; the reaper's next pass re-sends the step).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import optuna
import pytest
from chaos_support import descendants, wait_for
from sqlalchemy import select

from service.experiments.study import storage, study_name
from service.models import Experiment, ExperimentStatus, ExperimentTrial, Job, JobStatus

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(420)]
EPOCHS = 6
BODY = {
    "base": {
        "model": {"arch": "simple_cnn"},
        "epochs": EPOCHS,
        "batch_size": 32,
        "augment": {"rotation": 0, "scale": None},
        "optim": {"lr": 0.01},
    },
    "search": {"strategy": "grid", "space": {"loss.type": ["cross_entropy", "focal"]}},
    "seeds": [0, 1],
    "budget": {"max_parallel": 2},
}


def _control_worker_pid(serve_pid: int) -> int | None:
    for pid, _started in descendants(serve_pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"control" in argv and b"worker" in argv:
            return pid
    return None


def test_a_worker_killed_mid_experiment_loses_nothing_and_repeats_nothing(cluster):
    world = cluster(embedded=True)
    serve = world.start_serve()
    response = world.http.post("/v1/experiments", json={**BODY, "dataset_id": world.upload(train=(240, 60))})
    assert response.status_code == 202, response.text
    experiment_id = response.json()["id"]

    def running_job() -> Job | None:
        with world.factory() as session:
            query = select(Job).where(Job.experiment_id == experiment_id, Job.status == JobStatus.running)
            return next((job for job in session.scalars(query) if job.checkpoint_epoch >= 1), None)

    victim = wait_for(running_job, timeout=120, what="a trial job with a checkpoint", logs=world.logs)
    os.kill(int(victim.worker_id.rsplit(":", 1)[1]), signal.SIGKILL)  # the training child, mid-epoch
    control = wait_for(lambda: _control_worker_pid(serve.pid), timeout=30, what="the control worker", logs=world.logs)
    os.killpg(os.getpgid(control), signal.SIGKILL)  # the control worker and its whole group

    def finished() -> Experiment | None:
        with world.factory() as session:
            row = session.get(Experiment, experiment_id)
            return row if ExperimentStatus(row.status).is_terminal else None

    row = wait_for(finished, timeout=300, what="the experiment to finish", logs=world.logs, interval=0.5)
    assert row.status == ExperimentStatus.succeeded, (row.status, row.error_message, world.logs())
    with world.factory() as session:
        trials = list(session.scalars(select(ExperimentTrial).where(ExperimentTrial.experiment_id == experiment_id)))
        jobs = list(session.scalars(select(Job).where(Job.experiment_id == experiment_id)))
    assert sorted(t.number for t in trials) == [0, 1] and {t.state for t in trials} == {"complete"}
    assert sorted((job.trial, job.spec["seed"]) for job in jobs) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for job in jobs:
        world.assert_trained_once(job.id, epochs=EPOCHS)
    assert world.row(victim.id).attempts == 2  # the killed one ran again, resumed, and only it
    study = optuna.load_study(
        study_name=study_name(experiment_id), storage=storage(f"sqlite:///{world.data_dir / 'optuna.db'}")
    )
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert {tuple(t.params.items()) for t in study.trials} == {
        (("loss.type", "cross_entropy"),),
        (("loss.type", "focal"),),
    }
    assert "worker exited with code" in serve.log()
