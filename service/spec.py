"""The job spec: one frozen, versioned pydantic model, validated once by the API.

It is stored on the job row as JSON and turned into training-core keyword
arguments by ``workers/lifecycle/plan.py``; no core function ever sees it.
Every number is finite (NaN/inf rejected) and bounded; unknown keys are errors.
Types are strict: a boolean, a string or a float where an integer belongs (or
a boolean or string where a float belongs) is refused rather than coerced, so
``"epochs": true`` is an error, not 1; an integer is a valid float.

The defaults are the recipe benchmarked in ``benchmarks/RESULTS.md``
(``rarefit_default``: ResNet-18, cross-entropy, class-balanced sampler, light
flips/rotation/scale/translation, AdamW with a 2-epoch warm-up and cosine
decay, 40 epochs, model chosen by validation AUROC), so a spec holding only
``dataset_id`` trains the documented default. One difference: binary models
also get a decision threshold tuned on val (``max_f1``), where the benchmark
reports argmax accuracy; AUROC and PR-AUC do not depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_validator

from service.threshold_spec import ClassRef, ThresholdSpec

ARCHS = (
    "simple_cnn",
    "resnet32",
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "convnext_tiny",
)
HEADS = ("linear", "cosine")
HEAD_CHOICES = ("auto", *HEADS)
SELECTION_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "auroc",
    "average_precision",
    "minority_recall",
)

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
ScaleFactor = Annotated[float, Strict(), Field(gt=0.0, le=4.0)]
INIT_PATTERN = r"^(job:[0-9a-f]{32}|weights:[A-Za-z0-9][A-Za-z0-9._-]{0,127})$"


@dataclass(frozen=True)
class InitSource:
    """A parsed ``model.init``: ``kind`` ``"job"`` (``name`` is a job id) or ``"weights"`` (a file name)."""

    kind: Literal["job", "weights"]
    name: str


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


class ModelSpec(_Part):
    arch: Literal[ARCHS] = "resnet18"  # type: ignore[valid-type]
    init: str | None = Field(
        default=None,
        pattern=INIT_PATTERN,
        description="null (random), 'job:<job_id>' (fine-tune an earlier job's model) "
        "or 'weights:<name>' (operator-provided file in the weights directory)",
    )
    image_size: int | None = Field(
        default=None, ge=8, le=1024, description="upsample inputs to this size inside the network"
    )
    freeze_backbone_epochs: int = Field(default=0, ge=0, le=10_000)
    head: Literal[HEAD_CHOICES] = Field(  # type: ignore[valid-type]
        default="auto",
        description="the classifier layer: 'linear', 'cosine' (normalised features and weights, times "
        "cosine_scale; Cao et al.'s LDAM head) or 'auto' (cosine for loss.type 'ldam', else linear)",
    )
    cosine_scale: float = Field(strict=True, default=30.0, gt=0.0, le=100.0, description="cosine head: logit scale s")

    @property
    def init_source(self) -> InitSource | None:
        """``init`` parsed (the one place that reads its ``kind:name`` form; ``INIT_PATTERN`` checked it)."""
        if self.init is None:
            return None
        kind, _, name = self.init.partition(":")
        return InitSource(kind="job" if kind == "job" else "weights", name=name)


class LossSpec(_Part):
    type: Literal["cross_entropy", "focal", "ldam", "logit_adjusted", "balanced_softmax"] = "cross_entropy"
    variant: Literal["softmax", "sigmoid"] = Field(
        default="softmax", description="'sigmoid' (binary only) matches torchvision sigmoid_focal_loss"
    )
    gamma: float = Field(default=2.0, ge=0.0, le=10.0)
    alpha: Probability | list[Probability] | Literal["balanced"] | None = Field(
        default=None,
        description="focal α: a number (binary only: α for the positive class, 1 - α for the other, "
        "as torchvision sigmoid_focal_loss), one value per class, or 'balanced'",
    )
    class_weights: Literal["none", "balanced", "effective_number"] | list[Annotated[float, Field(gt=0.0, le=1e6)]] = (
        "none"
    )
    effective_number_beta: float = Field(default=0.999, gt=0.0, lt=1.0)
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    reweight_from_epoch: int | None = Field(
        default=None, ge=1, description="deferred re-weighting (Cao et al. 2019): weights on from this epoch"
    )
    tau: float = Field(strict=True, default=1.0, ge=0.0, le=10.0, description="logit_adjusted: τ in z + τ·log π")
    ldam_max_margin: float = Field(
        strict=True, default=0.5, gt=0.0, le=10.0, description="ldam: the rarest class's margin"
    )
    ldam_scale: float = Field(
        strict=True,
        default=30.0,
        gt=0.0,
        le=100.0,
        description="ldam on a linear head: logit scale s (a cosine head scales by model.cosine_scale)",
    )
    posthoc_tau: float = Field(
        strict=True,
        default=0.0,
        ge=0.0,
        le=10.0,
        description="post-hoc logit adjustment z - τ·log π at evaluation and inference",
    )


class MixingSpec(_Part):
    mode: Literal["none", "mixup", "cutmix", "mixup_cutmix", "balanced_mixup", "remix"] = "none"
    alpha: float = Field(
        default=1.0, gt=0.0, le=100.0, description="Beta(α, α) for MixUp and ReMix, Beta(α, 1) for balanced_mixup"
    )
    cutmix_alpha: float = Field(default=1.0, gt=0.0, le=100.0, description="Beta(α, α) for CutMix")
    prob: Probability = 1.0
    switch_prob: Probability = Field(default=0.5, description="mixup_cutmix: chance of CutMix")
    kappa: float = Field(strict=True, default=3.0, ge=1.0, le=1e6, description="remix: class-count ratio κ")
    tau: float = Field(strict=True, default=0.5, ge=0.0, le=1.0, description="remix: mixing-weight threshold τ")


class SamplerSpec(_Part):
    type: Literal["random", "weighted", "sqrt", "oversample", "undersample"] = "weighted"


class CopyPasteSpec(_Part):
    """Copy-paste oversampling from segmentation masks (Ghiasi et al. 2021); the dataset needs masks."""

    prob: Probability = Field(default=0.5, description="chance that a batch row receives a pasted object")
    classes: Literal["minority"] | list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default="minority", description="'minority' (augment.minority_threshold) or class names"
    )
    scale: tuple[ScaleFactor, ScaleFactor] = Field(default=(0.8, 1.2), strict=False)
    blend: Literal["gaussian", "none"] = "gaussian"

    @field_validator("scale")
    @classmethod
    def _ordered(cls, value):
        if value[0] > value[1]:
            raise ValueError(f"scale must be [low, high] with low <= high, got {list(value)}")
        return value

    @field_validator("classes")
    @classmethod
    def _some_classes(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("classes must name at least one class (or be 'minority')")
        return value


class AugmentSpec(_Part):
    hflip: bool = True
    vflip: bool = False
    rotation: float = Field(default=10.0, ge=0.0, le=180.0, description="max degrees either way")
    # Strict mode takes only a tuple from Python (a stored spec holds a JSON list), so the pair is lax
    # about its container and strict about its numbers.
    scale: tuple[ScaleFactor, ScaleFactor] | None = Field(default=(0.9, 1.1), strict=False)
    translate: float = Field(default=0.05, ge=0.0, le=0.5, description="max shift, fraction of size")
    brightness: float = Field(default=0.0, ge=0.0, le=1.0)
    contrast: float = Field(default=0.0, ge=0.0, le=1.0)
    minority_only: bool = False
    minority_threshold: float = Field(
        default=0.5, gt=0.0, le=1.0, description="minority: count below this fraction of the largest class"
    )
    copy_paste: CopyPasteSpec | None = None

    @field_validator("scale")
    @classmethod
    def _ordered(cls, value):
        if value is not None and value[0] > value[1]:
            raise ValueError(f"scale must be [low, high] with low <= high, got {list(value)}")
        return value


class OptimSpec(_Part):
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(default=1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(default=5e-4, ge=0.0, le=1.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    scheduler: Literal["none", "cosine", "onecycle", "plateau", "step"] = "cosine"
    warmup_epochs: int = Field(default=2, ge=0, le=1000, description="linear warm-up, capped at `epochs`")
    milestones: list[Annotated[float, Field(gt=0.0, lt=1.0)]] = Field(
        default=[0.5, 0.75], max_length=16, description="'step': fractions of the epochs"
    )
    step_gamma: float = Field(default=0.1, gt=0.0, le=1.0)
    backbone_lr_scale: float = Field(
        strict=True, default=1.0, gt=0.0, le=10.0, description="the backbone's lr is lr × this (the head's is lr)"
    )


class EarlyStoppingSpec(_Part):
    patience: int | None = Field(default=None, ge=1, le=10_000)
    min_delta: float = Field(default=0.0, ge=0.0, le=1.0)


class CalibrationSpec(_Part):
    method: Literal["temperature", "none"] = Field(
        default="temperature", description="temperature scaling fitted on val NLL (Guo et al. 2017)"
    )


RESAMPLE_OVER = ("smote", "adasyn", "borderline_smote", "random_over", "smote_tomek", "smote_enn")
RESAMPLE_UNDER = ("random_under",)
RESAMPLE_CLEAN = ("tomek", "enn")
RESAMPLE_METHODS = RESAMPLE_OVER + RESAMPLE_UNDER + RESAMPLE_CLEAN
# imbalanced-learn's sampling_strategy strings, per kind of sampler.
_STRATEGIES = {
    "over": ("auto", "minority", "not minority", "not majority", "all"),
    "under": ("auto", "majority", "not minority", "not majority", "all"),
}


class ResampleSpec(_Part):
    """Decoupled classifier re-training (Kang et al. 2020) on resampled penultimate embeddings."""

    method: Literal[RESAMPLE_METHODS]  # type: ignore[valid-type]
    k_neighbors: int = Field(default=5, ge=1, le=100, description="SMOTE-family k_neighbors, ADASYN n_neighbors")
    sampling_strategy: str | Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        default="auto", description="imbalanced-learn's: a string, or a float ratio (binary datasets)"
    )
    head_epochs: int = Field(default=20, ge=1, le=1000, description="epochs of stage-2 head training")

    @field_validator("sampling_strategy")
    @classmethod
    def _strategy_fits_method(cls, value, info):
        method = info.data.get("method")
        if method is None:
            return value
        kind = "over" if method in RESAMPLE_OVER else "under"
        if isinstance(value, str) and value not in _STRATEGIES[kind]:
            raise ValueError(f"{value!r} is not a strategy of {method}; use one of {', '.join(_STRATEGIES[kind])}")
        if not isinstance(value, str) and method in RESAMPLE_CLEAN:
            raise ValueError(f"{method} cleans by neighbourhoods and takes no ratio; use a string strategy")
        return value


def effective_head(spec: JobSpec) -> str:
    """The head a job builds: ``model.head``, with ``auto`` the cosine head for LDAM (the network Cao et
    al. train it on) and the linear one otherwise."""
    if spec.model.head != "auto":
        return spec.model.head
    return "cosine" if spec.loss.type == "ldam" else "linear"


def effective_warmup_epochs(spec: JobSpec) -> int:
    """The warm-up a job runs: ``optim.warmup_epochs`` capped at ``epochs`` (a run shorter than the
    default 2-epoch warm-up warms up throughout, rather than being refused)."""
    return min(spec.optim.warmup_epochs, spec.epochs)


class JobSpec(_Part):
    spec_version: Literal[1] = 1
    dataset_id: str = Field(min_length=1, max_length=64)
    model: ModelSpec = ModelSpec()
    loss: LossSpec = LossSpec()
    mixing: MixingSpec = MixingSpec()
    sampler: SamplerSpec = SamplerSpec()
    augment: AugmentSpec = AugmentSpec()
    optim: OptimSpec = OptimSpec()
    epochs: int = Field(default=40, ge=1, le=10_000)
    batch_size: int = Field(default=128, ge=2, le=65_536)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    early_stopping: EarlyStoppingSpec = EarlyStoppingSpec()
    selection_metric: Literal[SELECTION_METRICS] = "auroc"  # type: ignore[valid-type]
    threshold: ThresholdSpec = ThresholdSpec()
    calibration: CalibrationSpec = CalibrationSpec()
    positive_class: ClassRef | None = Field(
        default=None,
        description="class name or index the thresholds, PR curve and bounds refer to; default: train minority",
    )
    compile: bool = Field(default=False, description="torch.compile the network (GPU workers)")
    max_runtime_seconds: int | None = Field(default=None, ge=1, le=30 * 24 * 3600)
    resample: ResampleSpec | None = Field(
        default=None, description="stage 2: re-train the head on resampled train embeddings (imbalanced-learn)"
    )

    @field_validator("spec_version", mode="before")
    @classmethod
    def _version_not_bool(cls, value: object) -> object:
        # A Literal compares by equality and True == 1; strict mode does not reach literals.
        if isinstance(value, bool):
            raise ValueError(f"spec_version must be the integer 1, got {value!r}")
        return value

    @model_validator(mode="after")
    def _sigmoid_needs_focal(self) -> JobSpec:
        if self.loss.variant == "sigmoid" and self.loss.type != "focal":
            raise ValueError("loss.variant 'sigmoid' is only defined for loss.type 'focal'")
        return self
