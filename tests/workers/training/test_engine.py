"""The training engine on tiny synthetic data (CPU): learning, selection, stopping, resume, determinism."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch
from metric_blocks import METRIC_BLOCK_KEYS

from workers.training.augment import BatchAugment
from workers.training.checkpoint import load_checkpoint, save_checkpoint
from workers.training.data import BatchSource, Split
from workers.training.engine import FitResult, StopReason, evaluate, fit, steps_per_epoch
from workers.training.long_tail import LongTailCriterion, posthoc_adjustment
from workers.training.losses import Criterion, class_weights
from workers.training.metrics import metric_block, selection_score
from workers.training.mixing import BatchMixer
from workers.training.networks import build_network
from workers.training.optim import make_optimizer, make_scheduler
from workers.training.samplers import make_sampler

CPU = torch.device("cpu")
CLASSES = ["common", "rare"]


def _split(n_common: int, n_rare: int, *, seed: int, flip: bool = False) -> Split:
    """Class 0 is bright at the top, class 1 bright at the bottom (8×8, one channel, noisy)."""
    rng = np.random.default_rng(seed)
    labels = np.array([0] * n_common + [1] * n_rare)
    images = rng.integers(0, 90, size=(len(labels), 8, 8, 1)).astype(np.uint8)
    images[labels == 0, :4] += 120
    images[labels == 1, 4:] += 120
    order = rng.permutation(len(labels))
    labels = 1 - labels if flip else labels
    return Split(images=images[order], labels=labels[order])


TRAIN, VAL, TEST = _split(48, 16, seed=0), _split(24, 8, seed=1), _split(24, 8, seed=2)
FLIPPED_VAL = _split(24, 8, seed=1, flip=True)  # training makes this split *worse*


def _parts(
    *,
    epochs: int,
    batch_size: int = 16,
    sampler: str = "random",
    scheduler: str = "cosine",
    lr: float = 1e-2,
    seed: int = 0,
    loss: str = "cross_entropy",
):
    torch.manual_seed(seed)
    model = build_network("simple_cnn", num_classes=2, in_channels=1, input_size=(8, 8), mean=[0.4], std=[0.25])
    optimizer = make_optimizer("adamw", model.parameters(), lr=lr, weight_decay=1e-4)
    sampler_ = make_sampler(sampler, labels=TRAIN.labels, seed=seed, device=CPU)
    schedule = make_scheduler(
        scheduler, optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch(sampler_.epoch_length, batch_size)
    )
    return {
        "model": model,
        "optimizer": optimizer,
        "scheduler": schedule,
        "sampler": sampler_,
        "criterion": Criterion(kind=loss),
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
    }


def _fit(*, val=VAL, test=TEST, parts=None, **kwargs) -> FitResult:
    parts = parts or _parts(epochs=kwargs.pop("epochs", 3))
    return fit(train=TRAIN, val=val, test=test, class_names=CLASSES, device=CPU, **parts, **kwargs)


def _timeless(history) -> list[dict]:
    return [{k: v for k, v in asdict(r).items() if k not in ("seconds", "images_per_second")} for r in history]


def _recorder(snapshots: dict):
    """An ``on_epoch_end`` that keeps a copy of the weights after every epoch."""

    def record(record, state) -> None:
        snapshots[record.epoch] = {k: v.clone() for k, v in state.model.state_dict().items()}

    return record


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_steps_per_epoch_drops_the_partial_batch_only_when_a_full_one_exists():
    assert steps_per_epoch(64, 16) == 4 and steps_per_epoch(70, 16) == 4 and steps_per_epoch(5, 16) == 1
    with pytest.raises(ValueError, match="at least 2"):
        steps_per_epoch(1, 16)


def test_loss_decreases_and_the_model_separates_the_classes():
    result = _fit(epochs=6)
    losses = [r.train_loss for r in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.stopped == "completed" and len(result.history) == 6
    assert result.val["balanced_accuracy"] > 0.9 and result.test["balanced_accuracy"] > 0.9
    assert not result.model.training and next(result.model.parameters()).device == CPU
    assert all(r.images_per_second > 0 and r.lr >= 0 for r in result.history)


def test_returned_model_is_the_best_epoch_and_scores_what_that_epoch_scored():
    snapshots = {}
    result = _fit(epochs=4, val=FLIPPED_VAL, on_epoch_end=_recorder(snapshots))
    scores = [r.val["balanced_accuracy"] for r in result.history]
    assert result.best_score == max(scores) and result.best_epoch == scores.index(max(scores)) + 1
    assert result.best_epoch < 4  # the flipped split makes later epochs worse
    _assert_same_weights(result.model.state_dict(), snapshots[result.best_epoch])
    probs, _ = evaluate(result.model, BatchSource.create(FLIPPED_VAL, device=CPU), batch_size=7, device=CPU)
    block = metric_block(
        probs,
        FLIPPED_VAL.labels.numpy(),
        class_names=CLASSES,
        threshold=result.threshold,
        positive_class=result.positive_class,
        minority_class=1,
    )
    assert selection_score(block, "balanced_accuracy") == result.best_score


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    result = _fit(epochs=10, val=FLIPPED_VAL, early_stopping_patience=2)
    assert result.stopped == "early_stopped"
    assert len(result.history) == result.best_epoch + 2 < 10


def test_should_stop_discards_the_partial_epoch_and_keeps_the_best_model():
    calls = []

    def cancel_in_epoch_two() -> str | None:
        calls.append(1)
        return "cancelled" if len(calls) == 6 else None  # 4 batches per epoch: 2nd batch of epoch 2

    snapshots = {}
    result = _fit(epochs=5, should_stop=cancel_in_epoch_two, on_epoch_end=_recorder(snapshots))
    assert result.stopped == "cancelled" and [r.epoch for r in result.history] == [1]
    assert result.best_epoch == 1 and result.test is None and result.val == result.history[0].val
    _assert_same_weights(result.model.state_dict(), snapshots[1])


def test_an_outside_stop_skips_the_final_evaluation_and_keeps_the_best_epoch():
    calls = iter(range(1000))
    result = _fit(epochs=5, should_stop=lambda: "deadline" if next(calls) == 9 else None)
    assert result.stopped == "deadline" and len(result.history) == 2
    best = next(r for r in result.history if r.epoch == result.best_epoch)
    assert result.test is None and result.val == best.val


def test_stop_reasons_are_a_closed_set():
    assert {reason.value for reason in StopReason if not reason.finished} == {
        "cancelled",
        "deadline",
        "shutdown",
        "lease_lost",
    }
    with pytest.raises(ValueError, match="should_stop returned 'worker lost'; supported stop reasons: cancelled"):
        _fit(epochs=2, should_stop=lambda: "worker lost")
    with pytest.raises(ValueError, match="should_stop returned 'completed'"):
        _fit(epochs=2, should_stop=lambda: StopReason.completed)


def test_resume_from_a_checkpoint_reproduces_the_uninterrupted_run(tmp_path):
    straight = _fit(parts=_parts(epochs=4, scheduler="onecycle"))

    saved = {}

    def checkpoint(record, state):
        saved["sha"] = save_checkpoint(tmp_path / "last.pt", state.to_checkpoint())

    calls = iter(range(1000))
    crashed = _fit(
        parts=_parts(epochs=4, scheduler="onecycle"),
        on_epoch_end=checkpoint,
        should_stop=lambda: "shutdown" if next(calls) == 9 else None,  # stops in epoch 3
    )
    assert crashed.stopped == "shutdown" and len(crashed.history) == 2
    state = load_checkpoint(tmp_path / "last.pt", sha256=saved["sha"])
    assert state["epoch"] == 2
    resumed = _fit(parts=_parts(epochs=4, scheduler="onecycle", seed=0), resume=state)
    assert _timeless(resumed.history) == _timeless(straight.history)
    assert (resumed.best_epoch, resumed.best_score, resumed.threshold) == (
        straight.best_epoch,
        straight.best_score,
        straight.threshold,
    )
    _assert_same_weights(resumed.model.state_dict(), straight.model.state_dict())
    assert resumed.test == straight.test


def test_same_seed_gives_identical_runs_with_augmentation_and_mixing():
    def run():
        return _fit(
            parts=_parts(epochs=2),
            augment=BatchAugment(hflip=True, rotation=10.0, brightness=0.2),
            mixer=BatchMixer(mode="mixup_cutmix", num_classes=2),
        )

    first, second = run(), run()
    assert _timeless(first.history) == _timeless(second.history)
    _assert_same_weights(first.model.state_dict(), second.model.state_dict())


def test_frozen_backbone_is_unchanged_until_unfrozen():
    snapshots = {}
    parts = _parts(epochs=3)
    initial = {k: v.clone() for k, v in parts["model"].state_dict().items()}
    result = _fit(parts=parts, freeze_backbone_epochs=2, on_epoch_end=_recorder(snapshots))
    backbone = [k for k in initial if k.startswith("backbone.")]
    for epoch in (1, 2):
        _assert_same_weights({k: snapshots[epoch][k] for k in backbone}, {k: initial[k] for k in backbone})
        assert not torch.equal(snapshots[epoch]["head.weight"], initial["head.weight"])
    assert not torch.equal(snapshots[3]["backbone.0.weight"], initial["backbone.0.weight"])
    assert all(p.requires_grad for p in result.model.parameters())


def test_every_technique_at_once_completes_with_all_metric_keys(tmp_path):
    counts = TRAIN.class_counts(2)
    parts = _parts(epochs=2, sampler="weighted", scheduler="plateau")
    parts["criterion"] = Criterion(
        kind="focal", gamma=2.0, alpha=0.25, weight=torch.tensor([1.0, 3.0]), reweight_from_epoch=2
    )
    checkpoints = []

    def checkpoint(record, state) -> None:
        checkpoints.append(save_checkpoint(tmp_path / "c.pt", state.to_checkpoint()))

    augment = BatchAugment(hflip=True, rotation=15.0, scale=(0.9, 1.1), augment_classes=torch.tensor([False, True]))
    result = _fit(
        parts=parts,
        mixer=BatchMixer(mode="cutmix", num_classes=2),
        augment=augment,
        threshold_strategy="max_f1",
        selection_metric="average_precision",
        early_stopping_patience=5,
        on_epoch_end=checkpoint,
    )
    assert counts == [48, 16] and result.stopped == "completed" and len(checkpoints) == 2
    assert result.positive_class == 1 and result.threshold is not None
    for block in (result.val, result.test, result.history[-1].val):
        assert METRIC_BLOCK_KEYS <= block.keys()
    assert result.test["threshold"] == result.threshold
    restored = load_checkpoint(tmp_path / "c.pt", sha256=checkpoints[-1])
    assert set(restored) >= {"model", "optimizer", "scheduler", "best_state", "history", "epoch"}


def test_without_val_the_lowest_train_loss_is_selected():
    result = _fit(val=None, epochs=3)
    losses = [r.train_loss for r in result.history]
    assert result.best_score == -min(losses) and result.best_epoch == losses.index(min(losses)) + 1
    assert result.val is None and result.threshold is None and result.test is not None
    assert all(r.val is None and r.val_loss is None for r in result.history)


def test_fit_rejects_a_scheduler_built_for_another_epoch_length():
    parts = _parts(epochs=2, batch_size=16)
    parts["batch_size"] = 8
    with pytest.raises(ValueError, match="steps per epoch"):
        _fit(parts=parts)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"selection_metric": "f2"}, "unknown selection_metric 'f2'"),
        ({"threshold_strategy": "youden"}, "unknown threshold_strategy 'youden'"),
        ({"threshold_strategy": "recall_at_least"}, "needs threshold_value"),
        ({"threshold_strategy": "precision_at_least", "threshold_value": 0.0}, "needs threshold_value"),
        ({"threshold_strategy": "max_f1", "threshold_class": 2}, "threshold_class must be a class index"),
        ({"early_stopping_patience": 0}, "early_stopping_patience"),
    ],
)
def test_fit_rejects_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _fit(epochs=1, **kwargs)


def test_posthoc_logit_adjustment_scores_adjusted_logits_and_is_folded_into_the_model():
    adjustment = posthoc_adjustment(TRAIN.class_counts(2), tau=1.0)
    plain = _fit(parts=_parts(epochs=2))
    adjusted = _fit(parts=_parts(epochs=2), logit_adjustment=adjustment)
    # Training is untouched; only the head's bias differs, by exactly τ·log π.
    for key, value in plain.model.state_dict().items():
        expected = value - adjustment if key == "head.bias" else value
        torch.testing.assert_close(adjusted.model.state_dict()[key], expected, msg=key)
    source = BatchSource.create(VAL, device=CPU)
    probs_plain, _ = evaluate(plain.model, source, batch_size=64, device=CPU)
    probs_adjusted, _ = evaluate(adjusted.model, source, batch_size=64, device=CPU)
    by_hand = torch.softmax(torch.log(torch.tensor(probs_plain)) - adjustment.double(), dim=1).numpy()
    np.testing.assert_allclose(probs_adjusted, by_hand, rtol=1e-5, atol=1e-7)
    block = metric_block(probs_adjusted, VAL.labels.numpy(), class_names=CLASSES, threshold=None, positive_class=1)
    assert adjusted.val["auroc"] == pytest.approx(block["auroc"])


@pytest.mark.parametrize("mode", ["balanced_mixup", "remix"])
def test_minority_mixing_with_ldam_drw_trains_reproducibly(mode):
    counts = TRAIN.class_counts(2)

    def run():
        parts = _parts(epochs=2)
        parts["criterion"] = LongTailCriterion(
            kind="ldam",
            counts=counts,
            weight=class_weights("effective_number", counts=counts, beta=0.9999),
            reweight_from_epoch=2,
        )
        mixer = BatchMixer(mode=mode, num_classes=2, alpha=0.5, train_labels=TRAIN.labels)
        return _fit(parts=parts, mixer=mixer, augment=BatchAugment(hflip=True), threshold_strategy="max_f1")

    first, second = run(), run()
    assert first.stopped == "completed" and first.test is not None
    assert _timeless(first.history) == _timeless(second.history)
    _assert_same_weights(first.model.state_dict(), second.model.state_dict())
