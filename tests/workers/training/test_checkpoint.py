"""Checkpoints: round trip, sha256 verification, atomic replacement and weights-only safety."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from workers.training.checkpoint import load_checkpoint, save_checkpoint


def _state(value: float = 1.0) -> dict:
    return {
        "epoch": 3,
        "model": {"w": torch.full((2, 3), value), "n": torch.tensor(7)},
        "history": [{"epoch": 1, "val": {"accuracy": 0.5, "per_class": [1, 2]}, "note": None}],
        "betas": (0.9, 0.999),
        "best_score": float("-inf"),
    }


def test_round_trip_and_digest(tmp_path):
    path = tmp_path / "ckpt" / "last.pt"
    digest = save_checkpoint(path, _state())
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = load_checkpoint(path, sha256=digest)
    torch.testing.assert_close(loaded["model"]["w"], torch.ones(2, 3))
    assert loaded["history"] == _state()["history"] and loaded["betas"] == (0.9, 0.999)
    assert loaded["best_score"] == float("-inf")


def test_tampered_file_is_refused(tmp_path):
    path = tmp_path / "last.pt"
    digest = save_checkpoint(path, _state())
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256.*tampered"):
        load_checkpoint(path, sha256=digest)


def test_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    digest = save_checkpoint(path, _state(1.0))

    def torn_write(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a zip")  # a crash mid-write (disk full, killed process)
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", torn_write)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, _state(2.0))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left behind
    torch.testing.assert_close(load_checkpoint(path, sha256=digest)["model"]["w"], torch.ones(2, 3))
    assert save_checkpoint(path, _state(2.0)) != digest


def test_load_never_unpickles_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"payload": _Unsafe()}, path)
    with pytest.raises(Exception, match="(?i)weights.only"):
        load_checkpoint(path)


class _Unsafe:
    pass


@pytest.mark.parametrize(
    ("state", "where"),
    [
        ({"x": np.float64(1.0)}, r"state\['x'\].*numpy"),
        ({"h": [{"a": object()}]}, r"state\['h'\]\[0\]\['a'\]"),
        ({1.5: 1}, "key of type float"),
    ],
)
def test_save_names_values_weights_only_loading_would_refuse(tmp_path, state, where):
    with pytest.raises(TypeError, match=where):
        save_checkpoint(tmp_path / "x.pt", state)
    assert not list(tmp_path.iterdir())
