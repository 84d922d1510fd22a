"""Every training technique is reachable from a job spec submitted over HTTP.

Each case POSTs a spec fragment to ``/v1/jobs`` (202), reads the stored spec
back, and builds the training-core arguments from it exactly as a worker does,
checking that the technique landed in the component that implements it.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision
from torch.optim.lr_scheduler import ReduceLROnPlateau

from service.spec import RESAMPLE_METHODS, JobSpec
from workers.lifecycle.plan import build_training
from workers.lifecycle.resample import decoupled_stage
from workers.training.engine import fit
from workers.training.networks import CosineHead

COUNTS = (40, 8)


def _arrays(counts, seed):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c, dtype=np.int64) for c, n in enumerate(counts)])
    return rng.integers(0, 256, size=(len(labels), 12, 12, 1), dtype=np.uint8), labels


DATA = {"train": _arrays(COUNTS, 0), "val": _arrays((6, 4), 1), "test": _arrays((6, 4), 2)}


def _is_torchvision_arch(model, arch: str) -> bool:
    """``model`` is torchvision's ``arch`` with a 1-channel stem and a 2-class head.

    Every backbone parameter has the name and shape of the reference network's,
    except the first convolution's weight (1 input channel, small-input stem)
    and the classifier layer, which became ``head``: features -> 2 classes.
    """
    reference = {name: p.shape for name, p in getattr(torchvision.models, arch)(weights=None).named_parameters()}
    ours = {name: p.shape for name, p in model.backbone.named_parameters()}
    stem = next(name for name, shape in reference.items() if len(shape) == 4)
    head = model.tv_head_key
    differing = {name for name, shape in reference.items() if ours.get(name) != shape}
    return (
        model.arch == arch
        and set(ours) <= set(reference)
        and differing == {stem, f"{head}.weight", f"{head}.bias"}
        and ours[stem][1] == 1
        and (model.head.in_features, model.head.out_features) == (reference[f"{head}.weight"][1], 2)
    )


def _is_plateau(kwargs) -> bool:
    """The documented ReduceLROnPlateau (maximising the score, ×0.1 after 3 flat epochs) after the warm-up."""
    schedule, inner = kwargs["scheduler"], kwargs["scheduler"].inner
    return (
        schedule.name == "plateau"
        and isinstance(inner, ReduceLROnPlateau)
        and inner.optimizer is kwargs["optimizer"]
        and (inner.mode, inner.factor, inner.patience) == ("max", 0.1, 3)
        and schedule.warmup_steps == 2 * schedule.steps_per_epoch  # the default 2-epoch warm-up
    )


CASES = {
    "cross_entropy": ({"loss": {"type": "cross_entropy"}}, lambda k: k["criterion"].kind == "cross_entropy"),
    "focal_scalar_alpha": (
        {"loss": {"type": "focal", "gamma": 2, "alpha": 0.25}},
        lambda k: k["criterion"].kind == "focal" and k["criterion"].gamma == 2,
    ),
    "focal_alpha_list": (
        {"loss": {"type": "focal", "alpha": [0.3, 0.7]}},
        lambda k: torch.allclose(k["criterion"].alpha_per_class, torch.tensor([0.3, 0.7])),
    ),
    "focal_alpha_balanced": (
        {"loss": {"type": "focal", "alpha": "balanced"}},
        lambda k: k["criterion"].alpha_per_class is not None,
    ),
    "sigmoid_focal": (
        {"loss": {"type": "focal", "variant": "sigmoid"}},
        lambda k: k["criterion"].kind == "sigmoid_focal",
    ),
    "class_weights_balanced": ({"loss": {"class_weights": "balanced"}}, lambda k: k["criterion"].weight is not None),
    "class_weights_effective_number": (
        {"loss": {"class_weights": "effective_number", "effective_number_beta": 0.99}},
        lambda k: k["criterion"].weight is not None,
    ),
    "class_weights_list": (
        {"loss": {"class_weights": [1.0, 5.0]}},
        lambda k: torch.allclose(k["criterion"].weight, torch.tensor([1.0, 5.0])),
    ),
    "label_smoothing": ({"loss": {"label_smoothing": 0.1}}, lambda k: k["criterion"].label_smoothing == 0.1),
    "deferred_reweighting": (
        {"loss": {"class_weights": "balanced", "reweight_from_epoch": 3}},
        lambda k: k["criterion"].reweight_from_epoch == 3,
    ),
    "mixup": ({"mixing": {"mode": "mixup", "alpha": 0.4}}, lambda k: k["mixer"].mode == "mixup"),
    "cutmix": ({"mixing": {"mode": "cutmix", "prob": 0.5}}, lambda k: k["mixer"].mode == "cutmix"),
    "mixup_cutmix": (
        {"mixing": {"mode": "mixup_cutmix", "switch_prob": 0.3}},
        lambda k: k["mixer"].mode == "mixup_cutmix",
    ),
    **{
        f"sampler_{kind}": ({"sampler": {"type": kind}}, lambda k, kind=kind: k["sampler"].kind == kind)
        for kind in ("random", "weighted", "sqrt", "oversample", "undersample")
    },
    "augment_all": (
        {
            "augment": {
                "hflip": True,
                "vflip": True,
                "rotation": 20,
                "scale": [0.8, 1.2],
                "translate": 0.1,
                "brightness": 0.2,
                "contrast": 0.2,
            }
        },
        lambda k: not k["augment"].is_identity,
    ),
    "augment_minority_only": (
        {"augment": {"minority_only": True, "minority_threshold": 0.5}},
        lambda k: k["augment"].augment_classes.tolist() == [False, True],
    ),
    **{
        f"arch_{arch}": ({"model": {"arch": arch}}, lambda k, arch=arch: _is_torchvision_arch(k["model"], arch))
        for arch in ("resnet18", "resnet34", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny")
    },
    "image_size_upsampling": (
        {"model": {"arch": "simple_cnn", "image_size": 32}},
        lambda k: k["model"].image_size == 32,
    ),
    "freeze_backbone": ({"model": {"freeze_backbone_epochs": 2}}, lambda k: k["freeze_backbone_epochs"] == 2),
    "sgd_onecycle": (
        {"optim": {"name": "sgd", "momentum": 0.9, "scheduler": "onecycle"}},
        lambda k: isinstance(k["optimizer"], torch.optim.SGD),
    ),
    "adamw_cosine_warmup": (
        {"optim": {"name": "adamw", "scheduler": "cosine", "warmup_epochs": 1}},
        lambda k: isinstance(k["optimizer"], torch.optim.AdamW),
    ),
    "adam_step": (
        {"optim": {"name": "adam", "scheduler": "step", "milestones": [0.5, 0.75]}},
        lambda k: isinstance(k["optimizer"], torch.optim.Adam),
    ),
    "plateau": ({"optim": {"scheduler": "plateau"}}, _is_plateau),
    "early_stopping": ({"early_stopping": {"patience": 3}}, lambda k: k["early_stopping_patience"] == 3),
    "selection_auroc": ({"selection_metric": "auroc"}, lambda k: k["selection_metric"] == "auroc"),
    "threshold_target_recall": (
        {"threshold": {"strategy": "target_recall", "target_recall": 0.9}},
        lambda k: (k["threshold_strategy"], k["target_recall"]) == ("target_recall", 0.9),
    ),
    "compile_flag": ({"compile": True}, lambda k: k["compile"] is True),
    "ldam_drw": (
        {
            "model": {"head": "linear"},
            "loss": {
                "type": "ldam",
                "ldam_max_margin": 0.4,
                "ldam_scale": 20,
                "class_weights": "effective_number",
                "reweight_from_epoch": 2,
            },
        },
        lambda k: (
            (k["criterion"].kind, k["criterion"].scale, k["criterion"].reweight_from_epoch) == ("ldam", 20, 2)
            and float(k["criterion"].margins.max()) == pytest.approx(0.4)
        ),
    ),
    "ldam_cosine_head": (
        {"model": {"arch": "resnet32", "cosine_scale": 20}, "loss": {"type": "ldam", "ldam_max_margin": 0.4}},
        lambda k: (
            isinstance(k["model"].head, CosineHead)
            and (k["model"].arch, k["model"].head.scale, k["criterion"].scale) == ("resnet32", 20.0, 1.0)
            and float(k["criterion"].margins.max()) == pytest.approx(0.4 * 20)
        ),
    ),
    "cosine_head_cross_entropy": (
        {"model": {"head": "cosine"}, "loss": {"type": "cross_entropy"}},
        lambda k: isinstance(k["model"].head, CosineHead) and k["criterion"].kind == "cross_entropy",
    ),
    "logit_adjusted": (
        {"loss": {"type": "logit_adjusted", "tau": 1.5}},
        lambda k: (k["criterion"].kind, k["criterion"].tau) == ("logit_adjusted", 1.5),
    ),
    "balanced_softmax": (
        {"loss": {"type": "balanced_softmax"}},
        lambda k: torch.allclose(k["criterion"].offset, torch.log(torch.tensor([40.0, 8.0]))),
    ),
    "posthoc_tau": (
        {"loss": {"posthoc_tau": 0.5}},
        lambda k: torch.allclose(k["logit_adjustment"], 0.5 * torch.log(torch.tensor([40 / 48, 8 / 48]))),
    ),
    "balanced_mixup": (
        {"mixing": {"mode": "balanced_mixup", "alpha": 0.2}},
        lambda k: k["mixer"].mode == "balanced_mixup" and k["mixer"].members.counts.tolist() == [40, 8],
    ),
    "remix": (
        {"mixing": {"mode": "remix", "kappa": 2, "tau": 0.4}},
        lambda k: (k["mixer"].mode, k["mixer"].kappa, k["mixer"].tau) == ("remix", 2.0, 0.4),
    ),
    "backbone_lr_scale": (
        {"optim": {"lr": 0.01, "backbone_lr_scale": 0.1, "scheduler": "none", "warmup_epochs": 0}},
        lambda k: [g["lr"] for g in k["optimizer"].param_groups] == pytest.approx([0.001, 0.01]),
    ),
}

BAD_VALUES = {
    "resample.method": {"resample": {"method": "smotenc"}},
    "resample.sampling_strategy": {"resample": {"method": "smote", "sampling_strategy": "majority"}},
    "resample.k_neighbors": {"resample": {"method": "smote", "k_neighbors": 0}},
    "resample.head_epochs": {"resample": {"method": "tomek", "head_epochs": True}},
    "optim.backbone_lr_scale": {"optim": {"backbone_lr_scale": 0}},
    "loss.type": {"loss": {"type": "ldam_drw"}},
    "loss.tau": {"loss": {"type": "logit_adjusted", "tau": -1}},
    "loss.ldam_scale": {"loss": {"type": "ldam", "ldam_scale": 0}},
    "loss.ldam_max_margin": {"loss": {"ldam_max_margin": True}},
    "loss.posthoc_tau": {"loss": {"posthoc_tau": "1"}},
    "model.head": {"model": {"head": "normed"}},
    "model.cosine_scale": {"model": {"cosine_scale": 0}},
    "mixing.mode": {"mixing": {"mode": "balanced"}},
    "mixing.kappa": {"mixing": {"mode": "remix", "kappa": 0.5}},
    "mixing.tau": {"mixing": {"mode": "remix", "tau": 1.5}},
}


def _submit(api_client, headers, dataset_id, fragment) -> dict:
    response = api_client.post("/v1/jobs", json={"dataset_id": dataset_id, **fragment}, headers=headers)
    assert response.status_code == 202, response.text
    stored = api_client.get(f"/v1/jobs/{response.json()['id']}", headers=headers).json()["spec"]
    return stored


def _plan(api_client, headers, dataset_id, fragment):
    """The stored spec for ``fragment`` and the training plan a worker builds from it."""
    spec = JobSpec.model_validate(_submit(api_client, headers, dataset_id, fragment))
    plan = build_training(spec, dataset_arrays=DATA, class_names=["common", "rare"], device="cpu", init_state=None)
    return spec, plan


def _assert_trains_two_epochs(api_client, headers, dataset_id, fragment) -> None:
    _, plan = _plan(api_client, headers, dataset_id, fragment)
    result = fit(**plan.fit_arguments())
    assert [record.epoch for record in result.history] == [1, 2]
    assert result.test is not None and result.threshold is not None


@pytest.mark.parametrize("name", sorted(CASES))
def test_technique_reaches_the_training_core(api_client, alpha, new_dataset, name):
    fragment, landed = CASES[name]
    _, plan = _plan(api_client, alpha, new_dataset(alpha), {"epochs": 2, "batch_size": 8, **fragment})
    kwargs = plan.fit_arguments()
    assert landed(kwargs), f"{name}: {fragment} did not reach the core"


def test_kitchen_sink_spec_trains(api_client, alpha, new_dataset):
    """All techniques at once still train end to end through the core."""
    fragment = {
        "model": {"arch": "simple_cnn"},
        "loss": {
            "type": "focal",
            "gamma": 2,
            "alpha": "balanced",
            "class_weights": "effective_number",
            "label_smoothing": 0.05,
            "reweight_from_epoch": 2,
        },
        "mixing": {"mode": "mixup_cutmix"},
        "sampler": {"type": "weighted"},
        "augment": {"vflip": True, "translate": 0.1, "brightness": 0.1, "contrast": 0.1, "minority_only": True},
        "optim": {"name": "sgd", "scheduler": "cosine", "warmup_epochs": 1},
        "early_stopping": {"patience": 5},
        "threshold": {"strategy": "target_recall", "target_recall": 0.8},
        "epochs": 2,
        "batch_size": 8,
    }
    _assert_trains_two_epochs(api_client, alpha, new_dataset(alpha), fragment)


@pytest.mark.parametrize("field", sorted(BAD_VALUES))
def test_bad_technique_values_are_422_naming_the_field(api_client, alpha, new_dataset, field):
    body = {"dataset_id": new_dataset(alpha), **BAD_VALUES[field]}
    response = api_client.post("/v1/jobs", json=body, headers=alpha)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(field), response.json()


def test_long_tail_kitchen_sink_trains(api_client, alpha, new_dataset):
    """The new techniques together with a sampler, thresholds and augmentation train end to end."""
    fragment = {
        "model": {"arch": "simple_cnn"},
        "loss": {"type": "ldam", "class_weights": "effective_number", "reweight_from_epoch": 2, "posthoc_tau": 1.0},
        "mixing": {"mode": "balanced_mixup", "alpha": 0.3},
        "sampler": {"type": "sqrt"},
        "threshold": {"strategy": "target_recall", "target_recall": 0.8},
        "epochs": 2,
        "batch_size": 8,
    }
    _assert_trains_two_epochs(api_client, alpha, new_dataset(alpha), fragment)


@pytest.mark.parametrize("method", RESAMPLE_METHODS)
def test_each_resample_method_runs_from_a_spec_submitted_over_http(api_client, alpha, new_dataset, method):
    fragment = {
        "model": {"arch": "simple_cnn"},
        "epochs": 1,
        "batch_size": 8,
        "resample": {"method": method, "k_neighbors": 3, "head_epochs": 2},
    }
    spec, plan = _plan(api_client, alpha, new_dataset(alpha), fragment)
    stage1 = plan.fit()
    try:
        final, report, files = decoupled_stage(spec, result=stage1, plan=plan, device=torch.device("cpu"))
    except ValueError as exc:  # random 12 px images: ADASYN may find no majority neighbour, and says so
        assert method == "adasyn" and "ADASYN is not suited" in str(exc)
        return
    assert report["resample"]["method"] == method and final.test is not None
    assert ("cleaned.json" in files) == (method in ("tomek", "enn"))


def test_a_second_ldam_scale_on_a_cosine_head_is_422_naming_it(api_client, alpha, new_dataset):
    body = {"dataset_id": new_dataset(alpha), "loss": {"type": "ldam", "ldam_scale": 20}}
    response = api_client.post("/v1/jobs", json=body, headers=alpha)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "loss", "ldam_scale"]
    assert "cosine" in response.json()["detail"]


def test_stage_two_applies_posthoc_adjustment_with_the_resampled_prior(api_client, alpha, new_dataset):
    fragment = {
        "model": {"arch": "simple_cnn"},
        "loss": {"posthoc_tau": 1.0},
        "epochs": 1,
        "batch_size": 8,
        "resample": {"method": "random_under", "sampling_strategy": "auto", "head_epochs": 2},
    }
    spec, plan = _plan(api_client, alpha, new_dataset(alpha), fragment)
    stage1 = plan.fit()
    unadjusted = spec.model_copy(update={"loss": spec.loss.model_copy(update={"posthoc_tau": 0.0})})
    device = torch.device("cpu")
    final, report, _ = decoupled_stage(spec, result=copy.deepcopy(stage1), plan=plan, device=device)
    plain, _, _ = decoupled_stage(unadjusted, result=copy.deepcopy(stage1), plan=plan, device=device)
    after = torch.tensor(list(report["resample"]["counts_after"].values()), dtype=torch.float32)
    shift = final.model.head.bias - plain.model.head.bias
    torch.testing.assert_close(shift, -torch.log(after / after.sum()))  # τ = 1, the prior the head learnt


def test_a_resampling_ratio_needs_a_binary_dataset(api_client, alpha, new_dataset):
    body = {"dataset_id": new_dataset(alpha, num_classes=3), "resample": {"method": "smote", "sampling_strategy": 0.5}}
    response = api_client.post("/v1/jobs", json=body, headers=alpha)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "resample", "sampling_strategy"]
