"""Decoupled classifier re-training in the core: embeddings, the new head, backbone + new head re-scored."""

from __future__ import annotations

import copy

import numpy as np
import torch

from workers.training.data import Split
from workers.training.decoupled import embed, refit_head, train_head
from workers.training.engine import fit, steps_per_epoch
from workers.training.losses import Criterion
from workers.training.networks import build_network
from workers.training.optim import make_optimizer, make_scheduler
from workers.training.samplers import make_sampler

CPU = torch.device("cpu")


def _split(n0: int, n1: int, *, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    labels = np.array([0] * n0 + [1] * n1)
    images = rng.integers(0, 90, size=(len(labels), 8, 8, 1)).astype(np.uint8)
    images[labels == 1, 4:] += 120
    return Split(images=images, labels=labels)


TRAIN, VAL, TEST = _split(40, 8, seed=0), _split(16, 8, seed=1), _split(16, 8, seed=2)


def _stage1():
    torch.manual_seed(0)
    model = build_network("simple_cnn", num_classes=2, in_channels=1, input_size=(8, 8), mean=[0.4], std=[0.25])
    optimizer = make_optimizer("adamw", model.parameters(), lr=1e-2)
    sampler = make_sampler("random", labels=TRAIN.labels, seed=0, device=CPU)
    scheduler = make_scheduler("none", optimizer, epochs=1, steps_per_epoch=steps_per_epoch(sampler.epoch_length, 16))
    return fit(
        model=model,
        train=TRAIN,
        val=VAL,
        test=TEST,
        class_names=["a", "b"],
        criterion=Criterion(kind="cross_entropy"),
        optimizer=optimizer,
        scheduler=scheduler,
        sampler=sampler,
        epochs=1,
        batch_size=16,
        seed=0,
        device=CPU,
        threshold_strategy="max_f1",
    )


def test_embed_gives_the_penultimate_features_in_split_order():
    result = _stage1()
    features = embed(result.model, TRAIN, batch_size=7, device=CPU)
    images = torch.from_numpy(TRAIN.images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        expected = result.model.eval().features(images)
    assert features.shape == (48, 128) and features.dtype == np.float32
    np.testing.assert_allclose(features, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_train_head_separates_separable_features_and_is_seeded():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 30)
    features = (np.eye(3)[labels] * 4 + rng.normal(size=(90, 3))).astype(np.float32)
    kwargs = {"num_classes": 3, "epochs": 30, "batch_size": 16, "lr": 0.05, "weight_decay": 0.0, "seed": 3}
    head = train_head(features, labels, device=CPU, **kwargs)
    accuracy = float((head(torch.from_numpy(features)).argmax(1).numpy() == labels).mean())
    assert accuracy > 0.9
    again = train_head(features, labels, device=CPU, **kwargs)
    torch.testing.assert_close(head.weight, again.weight, rtol=0, atol=0)


def _stage2_head(result, *, epochs: int):
    """A new head trained on the stage-1 backbone's train embeddings."""
    features = embed(result.model, TRAIN, batch_size=16, device=CPU)
    return train_head(
        features,
        TRAIN.labels.numpy(),
        num_classes=2,
        epochs=epochs,
        batch_size=16,
        lr=1e-2,
        weight_decay=0.0,
        seed=0,
        device=CPU,
    )


def test_refit_head_exports_backbone_with_the_new_head_and_rescores():
    result = _stage1()
    head = _stage2_head(result, epochs=3)
    backbone_before = {k: v.clone() for k, v in result.model.state_dict().items() if k.startswith("backbone.")}
    final = refit_head(
        result,
        head=head,
        train=TRAIN,
        val=VAL,
        test=TEST,
        class_names=["a", "b"],
        selection_metric="auroc",
        threshold_strategy="max_f1",
        batch_size=32,
        device=CPU,
    )
    assert final.model.head is head and final.history == result.history
    for key, value in final.model.state_dict().items():
        if key.startswith("backbone."):
            torch.testing.assert_close(value, backbone_before[key], rtol=0, atol=0)
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(final.model(x), head(final.model.features(x)))
    assert final.val is not None and final.test is not None and final.threshold is not None
    assert final.test["threshold"] == final.threshold


def test_refit_head_folds_a_posthoc_adjustment_into_the_new_head():
    result = _stage1()
    head = _stage2_head(result, epochs=2)
    trained = copy.deepcopy(head)
    adjustment = torch.tensor([0.4, -0.7])
    final = refit_head(
        result,
        head=head,
        train=TRAIN,
        val=VAL,
        test=TEST,
        class_names=["a", "b"],
        selection_metric="auroc",
        threshold_strategy="none",
        batch_size=32,
        device=CPU,
        logit_adjustment=adjustment,
    )
    images = torch.from_numpy(VAL.images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        adjusted = trained(final.model.features(images)) - adjustment
        torch.testing.assert_close(final.model(images), adjusted)
    # val is scored with the adjusted logits, as stage 1 scores with them
    np.testing.assert_allclose(final.val_probs, torch.softmax(adjusted, dim=1).numpy(), rtol=1e-5, atol=1e-6)
