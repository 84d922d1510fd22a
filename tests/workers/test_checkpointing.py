"""``CheckpointWriter``: off-thread, atomic, newest-wins, rotated, failures surfaced."""

from __future__ import annotations

import threading

import pytest
import torch

from service.storage import LocalBlobStore
from workers.checkpointing import CheckpointWriter
from workers.training.checkpoint import load_checkpoint


def _writer(store, recorded, *, held=True, gate=None, lost=None):
    def record(key, sha256, epoch):
        if gate is not None:
            gate.wait(5)
        recorded.append((key, sha256, epoch))
        return held

    return CheckpointWriter(job_id="j1", attempt=1, store=store, record=record, current_key=None,
                            on_lease_lost=lost or (lambda: None))


def test_each_checkpoint_is_recorded_after_its_file_is_complete_and_the_old_one_is_dropped(tmp_path):
    store, recorded = LocalBlobStore(tmp_path), []
    writer = _writer(store, recorded)
    writer.submit(1, {"epoch": 1, "w": torch.ones(3)})
    writer.close()
    writer = CheckpointWriter(job_id="j1", attempt=1, store=store, current_key=recorded[0][0],
                              record=lambda k, s, e: recorded.append((k, s, e)) or True, on_lease_lost=lambda: None)
    writer.submit(2, {"epoch": 2, "w": torch.full((3,), 2.0)})
    writer.close()
    (first, _, _), (second, sha, epoch) = recorded
    assert epoch == 2 and load_checkpoint(store.local_path(second), sha256=sha)["epoch"] == 2
    assert not store.exists(first)


def test_a_newer_snapshot_replaces_one_still_waiting(tmp_path):
    store, recorded, gate = LocalBlobStore(tmp_path), [], threading.Event()
    writer = _writer(store, recorded, gate=gate)
    for epoch in (1, 2, 3):  # epoch 1 is being written (blocked in record); 2 is replaced by 3
        writer.submit(epoch, {"epoch": epoch})
    gate.set()
    writer.close()
    assert [epoch for _, _, epoch in recorded] in ([1, 3], [3])


def test_a_lost_lease_is_reported_and_a_write_failure_reaches_the_trainer(tmp_path):
    lost = threading.Event()
    writer = _writer(LocalBlobStore(tmp_path), [], held=False, lost=lost.set)
    writer.submit(1, {"epoch": 1})
    writer.close()
    assert lost.is_set()
    writer = _writer(LocalBlobStore(tmp_path), [])
    writer.submit(1, {"epoch": 1, "bad": object()})  # not weights_only-safe: save refuses it
    with pytest.raises(TypeError, match="object"):
        writer.close()
