"""``CheckpointWriter``: off-thread, atomic, newest-wins, rate-limited, rotated, failures surfaced;
``TrainingState.snapshot``: untouched by the training that follows it."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from torch import nn

from service.storage import LocalBlobStore
from workers.lifecycle.checkpoints import CheckpointWriter
from workers.training.checkpoint import load_checkpoint
from workers.training.optim import LrSchedule
from workers.training.state import EpochRecord, Snapshot, TrainingState


def _writer(store, recorded, *, held=True, gate=None, lost=None, min_interval=0.0, entered=None):
    def record(key, sha256, epoch):
        if entered is not None:
            entered.set()
        if gate is not None:
            gate.wait(5)
        recorded.append((key, sha256, epoch))
        return held

    return CheckpointWriter(
        job_id="j1",
        attempt=1,
        store=store,
        staging=store.root.parent / "staging",
        record=record,
        current_key=None,
        on_lease_lost=lost or (lambda: None),
        min_interval=min_interval,
    )


def _snapshot(epoch, *, weight=1.0, scheduler=None):
    return Snapshot(
        epoch=epoch,
        model={"w": torch.full((3,), weight)},
        optimizer={"state": {}, "param_groups": []},
        scheduler=scheduler or {},
        best_state=None,
        best_score=0.0,
        best_epoch=0,
        epochs_without_improvement=0,
        history=(),
    )


def _wait_for(condition, what):
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_each_checkpoint_is_recorded_after_its_file_is_complete_and_the_old_one_is_dropped(tmp_path):
    store, recorded = LocalBlobStore(tmp_path / "blobs"), []
    writer = _writer(store, recorded)
    writer.submit(_snapshot(1))
    writer.close()
    writer = CheckpointWriter(
        job_id="j1",
        attempt=1,
        store=store,
        staging=tmp_path / "staging",
        current_key=recorded[0][0],
        record=lambda k, s, e: recorded.append((k, s, e)) or True,
        on_lease_lost=lambda: None,
    )
    writer.submit(_snapshot(2, weight=2.0))
    writer.close()
    (first, _, _), (second, sha, epoch) = recorded
    loaded = load_checkpoint(store.local_path(second), sha256=sha)
    assert epoch == 2 and loaded["epoch"] == 2 and loaded["model"]["w"].tolist() == [2.0] * 3
    assert not store.exists(first)


def test_a_newer_snapshot_replaces_one_still_waiting(tmp_path):
    store, recorded, gate, entered = LocalBlobStore(tmp_path / "blobs"), [], threading.Event(), threading.Event()
    writer = _writer(store, recorded, gate=gate, entered=entered)
    writer.submit(_snapshot(1))
    assert entered.wait(10)  # epoch 1 is being written (blocked in record) ...
    for epoch in (2, 3):  # ... while 2 waits and is replaced by 3
        writer.submit(_snapshot(epoch))
    gate.set()
    writer.close()
    assert [epoch for _, _, epoch in recorded] == [1, 3]


def test_a_lost_lease_is_reported_and_a_write_failure_reaches_the_trainer(tmp_path):
    lost = threading.Event()
    writer = _writer(LocalBlobStore(tmp_path / "blobs"), [], held=False, lost=lost.set)
    writer.submit(_snapshot(1))
    writer.close()
    assert lost.is_set()
    writer = _writer(LocalBlobStore(tmp_path / "blobs"), [])
    writer.submit(_snapshot(1, scheduler={"bad": object()}))  # not weights_only-safe: save refuses it
    with pytest.raises(TypeError, match="object"):
        writer.close()


def test_within_the_interval_only_the_newest_snapshot_waits_and_closing_writes_it(tmp_path):
    recorded = []
    writer = _writer(LocalBlobStore(tmp_path / "blobs"), recorded, min_interval=600.0)
    writer.submit(_snapshot(1))  # the first one is written at once
    _wait_for(lambda: len(recorded) == 1, "the first checkpoint")
    writer.submit(_snapshot(2))
    writer.submit(_snapshot(3))
    time.sleep(0.3)
    assert [epoch for _, _, epoch in recorded] == [1]  # held back by the interval
    writer.close()  # a hand-back: the newest finished epoch is written now
    assert [epoch for _, _, epoch in recorded] == [1, 3]


def test_a_finished_run_closes_without_writing_the_waiting_snapshot(tmp_path):
    recorded = []
    writer = _writer(LocalBlobStore(tmp_path / "blobs"), recorded, min_interval=600.0)
    writer.submit(_snapshot(1))
    _wait_for(lambda: len(recorded) == 1, "the first checkpoint")
    writer.submit(_snapshot(2))
    writer.close(write_pending=False)
    assert [epoch for _, _, epoch in recorded] == [1]


def test_a_snapshot_keeps_the_state_it_was_taken_at():
    model = nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    state = TrainingState(
        model=model,
        optimizer=optimizer,
        scheduler=LrSchedule(
            "plateau", optimizer, epochs=2, steps_per_epoch=1, warmup_epochs=0, milestones=(), step_gamma=0.1
        ),
        epoch=1,
        history=[EpochRecord(1, 0.5, None, None, 0.1, 1.0, 10.0)],
    )
    before = {key: value.clone() for key, value in model.state_dict().items()}
    moment = optimizer.state[model.weight]["exp_avg"].clone()
    snapshot = state.snapshot()
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()  # training goes on: weights and moments change in place
    state.epoch = 2
    state.history.append(EpochRecord(2, 0.4, None, None, 0.1, 1.0, 10.0))
    saved = snapshot.to_checkpoint()
    assert saved["epoch"] == 1 and [record["epoch"] for record in saved["history"]] == [1]
    for key, value in before.items():
        torch.testing.assert_close(saved["model"][key], value)
    torch.testing.assert_close(saved["optimizer"]["state"][0]["exp_avg"], moment)
    assert not torch.equal(saved["model"]["weight"], model.weight.detach())
