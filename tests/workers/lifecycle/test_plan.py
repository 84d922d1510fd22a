"""``build_training``: every spec field lands in the right field of the ``TrainingPlan`` (a ``fit`` argument)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.spec import JobSpec, LossSpec, effective_warmup_epochs
from workers.lifecycle.criterion import criterion_kind, make_criterion
from workers.lifecycle.plan import build_training
from workers.training.data import channel_stats
from workers.training.engine import fit
from workers.training.networks import CosineHead, build_network

COUNTS = (30, 6)  # class 1 is the minority


def arrays(counts=COUNTS, *, shape=(8, 8, 1), seed=0):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c, dtype=np.int64) for c, n in enumerate(counts)])
    images = rng.integers(0, 256, size=(len(labels), *shape), dtype=np.uint8)
    return images, labels


def dataset(counts=COUNTS, **kwargs):
    return {"train": arrays(counts, **kwargs), "val": arrays((5, 3), seed=1), "test": arrays((5, 3), seed=2)}


def build(overrides: dict | None = None, *, data=None, class_names=("normal", "rare"), init_state=None):
    spec = JobSpec.model_validate({"dataset_id": "d1", "model": {"arch": "simple_cnn"}, **(overrides or {})})
    return build_training(
        spec, dataset_arrays=data or dataset(), class_names=list(class_names), device="cpu", init_state=init_state
    )


def test_defaults_map_to_core_arguments():
    plan = build({"epochs": 4, "batch_size": 8, "seed": 7})
    assert (plan.epochs, plan.batch_size, plan.seed) == (4, 8, 7)
    assert plan.class_names == ["normal", "rare"] and plan.device == torch.device("cpu")
    assert len(plan.train) == 36 and len(plan.val) == 8 and len(plan.test) == 8
    assert plan.criterion.kind == "cross_entropy" and plan.criterion.weight is None
    assert plan.mixer is None and plan.sampler.kind == "weighted"
    assert plan.selection_metric == "auroc" and plan.threshold_strategy == "max_f1"
    assert plan.early_stopping_patience is None and plan.compile is False
    # The network normalises with the train split's channel statistics.
    mean, std = channel_stats(plan.train.images)
    assert torch.allclose(plan.model.mean.flatten(), torch.tensor(mean))
    assert torch.allclose(plan.model.std.flatten(), torch.tensor(std))


def test_balanced_class_weights_and_alpha_come_from_train_counts():
    plan = build(
        {
            "loss": {
                "type": "focal",
                "gamma": 1.5,
                "alpha": "balanced",
                "class_weights": "balanced",
                "label_smoothing": 0.1,
                "reweight_from_epoch": 3,
            }
        }
    )
    criterion = plan.criterion
    n, k = sum(COUNTS), len(COUNTS)
    expected = torch.tensor([n / (k * c) for c in COUNTS])  # sklearn's "balanced": n / (K n_c)
    assert criterion.kind == "focal" and criterion.gamma == 1.5
    assert torch.allclose(criterion.weight, expected) and torch.allclose(criterion.alpha_per_class, expected)
    assert criterion.label_smoothing == 0.1 and criterion.reweight_from_epoch == 3


def test_effective_number_weights_and_scalar_alpha():
    plan = build(
        {"loss": {"type": "focal", "alpha": 0.25, "class_weights": "effective_number", "effective_number_beta": 0.9}}
    )
    raw = torch.tensor([(1 - 0.9) / (1 - 0.9**c) for c in COUNTS])
    assert torch.allclose(plan.criterion.weight, raw * (2 / raw.sum()))
    # Alpha-balanced on the positive class (the train minority, class 1): 0.25 for it, 0.75 for the other.
    assert torch.allclose(plan.criterion.alpha_per_class, torch.tensor([0.75, 0.25]))
    named = build({"positive_class": "normal", "loss": {"type": "focal", "alpha": 0.25}})
    assert torch.allclose(named.criterion.alpha_per_class, torch.tensor([0.25, 0.75]))
    assert named.positive_class == 0


def test_sigmoid_variant_selects_sigmoid_focal():
    spec = JobSpec.model_validate({"dataset_id": "d", "loss": {"type": "focal", "variant": "sigmoid"}})
    assert criterion_kind(spec.loss) == "sigmoid_focal"
    assert build({"loss": {"type": "focal", "variant": "sigmoid"}}).criterion.kind == "sigmoid_focal"


@pytest.mark.parametrize(
    ("kind", "length"),
    [("random", 36), ("weighted", 36), ("sqrt", 36), ("oversample", 60), ("undersample", 12)],
)
def test_sampler_kind_and_scheduler_steps_follow_the_epoch_length(kind, length):
    plan = build(
        {
            "sampler": {"type": kind},
            "batch_size": 5,
            "epochs": 3,
            "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.5, "scheduler": "step", "warmup_epochs": 1},
        }
    )
    sampler, scheduler, optimizer = plan.sampler, plan.scheduler, plan.optimizer
    assert sampler.kind == kind and sampler.epoch_length == length
    assert scheduler.steps_per_epoch == length // 5 and scheduler.name == "step"
    assert scheduler.warmup_steps == length // 5
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.5


def test_mixing_fields_reach_the_mixer():
    mixer = build(
        {"mixing": {"mode": "mixup_cutmix", "alpha": 0.4, "cutmix_alpha": 0.8, "prob": 0.7, "switch_prob": 0.3}}
    ).mixer
    assert (mixer.mode, mixer.num_classes, mixer.alpha, mixer.cutmix_alpha) == ("mixup_cutmix", 2, 0.4, 0.8)
    assert (mixer.prob, mixer.switch_prob, mixer.label_smoothing) == (0.7, 0.3, 0.0)


def test_augment_fields_and_minority_mask():
    aug = build(
        {
            "augment": {
                "hflip": False,
                "vflip": True,
                "rotation": 20,
                "scale": [0.8, 1.2],
                "translate": 0.1,
                "brightness": 0.2,
                "contrast": 0.3,
                "minority_only": True,
                "minority_threshold": 0.5,
            }
        }
    ).augment
    assert (aug.hflip, aug.vflip, aug.rotation, aug.scale) == (False, True, 20.0, (0.8, 1.2))
    assert (aug.translate, aug.brightness, aug.contrast) == (0.1, 0.2, 0.3)
    assert aug.augment_classes.tolist() == [False, True]  # 6 < 0.5 * 30
    assert build().augment.augment_classes is None


def test_selection_threshold_early_stopping_freeze_compile():
    plan = build(
        {
            "selection_metric": "auroc",
            "threshold": {"strategy": "target_recall", "target_recall": 0.9},
            "early_stopping": {"patience": 2, "min_delta": 0.01},
            "compile": True,
            "model": {"arch": "simple_cnn", "freeze_backbone_epochs": 1, "image_size": 16},
        }
    )
    assert plan.selection_metric == "auroc"
    assert (plan.threshold_strategy, plan.threshold_value, plan.threshold_bound) == ("recall_at_least", 0.9, None)
    assert (plan.early_stopping_patience, plan.early_stopping_min_delta) == (2, 0.01)
    assert plan.freeze_backbone_epochs == 1 and plan.compile is True
    assert plan.model.image_size == 16


def test_seed_makes_initial_weights_reproducible_and_init_state_loads():
    first, second = build({"seed": 3}).model, build({"seed": 3}).model
    other = build({"seed": 4}).model
    weights = lambda m: torch.cat([p.flatten() for p in m.parameters()])  # noqa: E731
    assert torch.equal(weights(first), weights(second)) and not torch.equal(weights(first), weights(other))
    loaded = build({"seed": 4}, init_state=first.state_dict()).model
    assert torch.equal(weights(loaded), weights(first))


def test_bad_data_raises_value_error_naming_it():
    with pytest.raises(ValueError, match="reach class 2 but the dataset names 2 classes"):
        build(data={"train": arrays((5, 5, 5))})
    with pytest.raises(ValueError, match="no train split"):
        build(data={"val": arrays()})


def test_the_plan_trains_with_fit():
    plan = build(
        {
            "epochs": 1,
            "batch_size": 12,
            "loss": {"type": "focal", "alpha": "balanced"},
            "mixing": {"mode": "mixup"},
            "sampler": {"type": "weighted"},
        }
    )
    result = fit(**plan.fit_arguments())
    assert [record.epoch for record in result.history] == [1] and result.test is not None


def test_the_spec_defaults_are_the_benchmarked_recipe():
    """A spec with only ``dataset_id`` trains ``rarefit_default`` of benchmarks/RESULTS.md, plus the
    default val-tuned binary threshold (the benchmark reports argmax decisions)."""
    from benchmarks.medmnist import RECIPES

    recipe = {**RECIPES["rarefit_default"], "threshold": {"strategy": "max_f1"}}
    assert JobSpec(dataset_id="d1") == JobSpec.model_validate({"dataset_id": "d1", **recipe})


def test_a_warmup_longer_than_the_run_is_capped_and_survives_the_stored_round_trip():
    """The API stores ``model_dump(mode="json")`` (every default spelled out); the worker must accept it."""
    stored = JobSpec(dataset_id="d1", epochs=1, optim={"warmup_epochs": 5}).model_dump(mode="json")
    spec = JobSpec.model_validate(stored)
    assert spec.optim.warmup_epochs == 5 and effective_warmup_epochs(spec) == 1
    assert build({"epochs": 1, "batch_size": 8, "optim": {"warmup_epochs": 5}}).scheduler is not None


def test_the_spec_and_the_core_name_the_same_choices():
    """``service`` may not import the core, so the spec keeps its own copies of these lists."""
    from service import spec
    from workers.training import metrics, networks

    assert spec.ARCHS == networks.ARCHS and spec.SELECTION_METRICS == metrics.SELECTION_METRICS
    assert spec.HEADS == networks.HEADS


def test_backbone_lr_scale_gives_the_backbone_its_own_learning_rate():
    optimizer = build(
        {"optim": {"lr": 0.01, "backbone_lr_scale": 0.1, "warmup_epochs": 0, "scheduler": "none"}}
    ).optimizer
    backbone, head = optimizer.param_groups
    assert (backbone["lr"], head["lr"]) == pytest.approx((0.001, 0.01))
    assert len(head["params"]) == 2  # the head's weight and bias
    assert len(build().optimizer.param_groups) == 1


def test_init_adaptations_are_reported():
    donor = build_network("simple_cnn", num_classes=5, in_channels=3, input_size=(8, 8), mean=[0.0] * 3, std=[1.0] * 3)
    adapted: list[str] = []
    spec = JobSpec.model_validate({"dataset_id": "d1", "model": {"arch": "simple_cnn"}})
    build_training(
        spec,
        dataset_arrays=dataset(),
        class_names=["normal", "rare"],
        device="cpu",
        init_state=donor.state_dict(),
        adaptations=adapted,
    )
    assert adapted == [
        "backbone.0.weight: 3 -> 1 input channels (summed over RGB)",
        "head.weight: not loaded (new head)",
        "head.bias: not loaded (new head)",
    ]


def test_copy_paste_pool_is_the_masked_images_of_the_minority_and_trains():
    data = dataset()
    images, labels = data["train"]
    masks = np.zeros(images.shape[:3], dtype=np.uint8)
    rare = np.flatnonzero(labels == 1)
    masks[rare[:4], 2:5, 2:5] = 1  # four of the six rare images have an object
    masks[0, 0, 0] = 1 if labels[0] == 0 else 0  # a masked common image is not in the minority pool
    spec = JobSpec.model_validate(
        {"dataset_id": "d1", "model": {"arch": "simple_cnn"}, "augment": {"copy_paste": {"prob": 1.0}}, "epochs": 1}
    )
    plan = build_training(
        spec, dataset_arrays=data, class_names=["normal", "rare"], device="cpu", init_state=None, masks={"train": masks}
    )
    paste = plan.copy_paste
    assert paste.labels.tolist() == [1, 1, 1, 1]
    torch.testing.assert_close(paste.images, torch.from_numpy(images[rare[:4]]).permute(0, 3, 1, 2))
    assert fit(**plan.fit_arguments()).stopped == "completed"
    with pytest.raises(ValueError, match="needs segmentation masks"):
        build_training(spec, dataset_arrays=data, class_names=["normal", "rare"], device="cpu", init_state=None)


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        ({"strategy": "max_f1"}, ("max_f1", None, 1, False)),
        ({"strategy": "none"}, ("none", None, 1, False)),
        ({"strategy": "precision_at_least", "value": 0.8}, ("precision_at_least", 0.8, 1, False)),
        ({"strategy": "recall_at_least", "class": "normal", "value": 0.7}, ("recall_at_least", 0.7, 0, False)),
        ({"strategy": "recall_at_least", "value": 0.9, "guarantee": True}, ("recall_at_least", 0.9, 1, True)),
        # the Bayes decision needs calibrated probabilities, fitted after training: epochs use the arg-max
        ({"strategy": "cost", "cost": [[0, 1], [5, 0]]}, ("none", None, None, False)),
    ],
)
def test_each_epoch_is_scored_with_the_threshold_policy(threshold, expected):
    plan = build({"threshold": threshold})
    got = (plan.threshold_strategy, plan.threshold_value, plan.threshold_class, plan.threshold_bound is not None)
    assert got == expected


def test_a_guaranteed_epoch_threshold_uses_the_policy_confidence_and_a_multi_class_target():
    names = ("a", "b", "rare")
    data = {split: arrays((20, 12, 6), seed=i) for i, split in enumerate(("train", "val", "test"))}
    plan = build(
        {"threshold": {"strategy": "recall_at_least", "value": 0.9, "guarantee": True, "confidence": 0.8}},
        data=data,
        class_names=names,
    )
    assert (plan.threshold_class, plan.positive_class) == (2, None)  # the train minority, one-vs-rest
    assert plan.threshold_bound(np.array([10]), np.array([10])) == pytest.approx(0.2**0.1)
    with pytest.raises(ValueError, match="threshold.class 'nope' is not one of the classes"):
        build({"threshold": {"strategy": "recall_at_least", "value": 0.9, "class": "nope"}})


@pytest.mark.parametrize(
    ("overrides", "cosine"),
    [
        ({"loss": {"type": "ldam"}}, True),  # auto: LDAM trains on Cao et al.'s cosine head
        ({"loss": {"type": "ldam"}, "model": {"arch": "simple_cnn", "head": "linear"}}, False),
        ({"loss": {"type": "cross_entropy"}}, False),
        ({"model": {"arch": "simple_cnn", "head": "cosine", "cosine_scale": 16.0}}, True),
    ],
)
def test_the_head_follows_model_head_and_auto_picks_cosine_for_ldam(overrides, cosine):
    plan = build({"epochs": 1, "batch_size": 12, **overrides})
    assert isinstance(plan.model.head, CosineHead) == cosine
    if cosine:
        assert plan.model.head.scale == overrides.get("model", {}).get("cosine_scale", 30.0)
        result = fit(**plan.fit_arguments())  # one short epoch: the head trains, evaluates and scores
        assert result.test is not None and np.isfinite(result.best_score)


def test_ldam_on_the_cosine_head_is_the_reference_loss_on_its_cosines():
    """Cao et al.: cross-entropy on ``s·(cos − m_y e_y)``; the head gives ``s·cos``, the criterion the margin."""
    counts = [500, 120, 30, 5]
    generator = torch.Generator().manual_seed(0)
    cosines = torch.rand(16, 4, generator=generator) * 2 - 1
    labels = torch.randint(4, (16,), generator=generator)
    margins = 1.0 / np.sqrt(np.sqrt(counts))
    margins = torch.tensor(margins * (0.5 / margins.max()), dtype=torch.float32)
    reference = torch.nn.functional.cross_entropy(
        30.0 * (cosines - margins[labels, None] * torch.eye(4)[labels]), labels
    )
    criterion = make_criterion(LossSpec(type="ldam"), counts=counts, cosine_scale=30.0)
    one_hot = torch.nn.functional.one_hot(labels, 4).float()
    torch.testing.assert_close(criterion(30.0 * cosines, one_hot), reference)
    linear = make_criterion(LossSpec(type="ldam", ldam_scale=20.0), counts=counts)
    assert (linear.scale, float(linear.margins.max())) == (20.0, pytest.approx(0.5))
