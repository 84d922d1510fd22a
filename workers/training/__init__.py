"""The rarefit training core: tensors and keyword arguments in, a model and metrics out.

Imports only torch, torchvision, numpy, safetensors, the standard library and,
of ours, ``rarefit.decision`` (an import-linter allow list in ``pyproject.toml``),
so it runs alike in a test, a notebook, a benchmark or a worker. Entry point:
:func:`fit`; the sampler, mixer and augmenter it takes are any objects matching
the :class:`Sampler`, :class:`Mixer` and :class:`Augmenter` protocols.
"""

from rarefit.decision import confusion_matrix
from workers.training.augment import (
    PADDING_MODES,
    Augmenter,
    AugmentParams,
    BatchAugment,
    affine_matrices,
    minority_class_mask,
)
from workers.training.beta import sample_beta
from workers.training.checkpoint import check_weights_only_safe, file_sha256, load_checkpoint, save_checkpoint
from workers.training.data import BatchSource, ResidentBatchSource, Split, StreamingBatchSource, channel_stats
from workers.training.engine import FitResult, StopReason, evaluate, fit, steps_per_epoch
from workers.training.export import (
    MAX_EXPORT_BATCH,
    export_program,
    load_program,
    load_weights,
    save_weights,
    weights_state,
)
from workers.training.losses import (
    CLASS_WEIGHT_KINDS,
    CRITERION_KINDS,
    Criterion,
    binary_logits_to_sigmoid,
    class_weights,
    focal_loss,
    resolve_alpha,
    sigmoid_focal_loss,
    soft_cross_entropy,
)
from workers.training.metrics import (
    SELECTION_METRICS,
    average_precision,
    binary_auroc,
    expected_calibration_error,
    metric_block,
    pr_curve,
    predict_labels,
    roc_curve,
    selection_score,
)
from workers.training.mixing import (
    MIX_MODES,
    BatchMixer,
    ClassMembers,
    Mixer,
    MixParams,
    apply_balanced_mix,
    apply_mix,
    remix_target_lam,
    sample_balanced_params,
    sample_mix_params,
)
from workers.training.networks import (
    ARCHS,
    HEADS,
    Classifier,
    CosineHead,
    build_network,
    load_init_state,
    set_backbone_trainable,
)
from workers.training.optim import OPTIMIZERS, SCHEDULERS, LrSchedule, make_optimizer, make_scheduler
from workers.training.samplers import (
    SAMPLER_KINDS,
    ClassWeightedSampler,
    EpochSampler,
    OverSampler,
    Sampler,
    UnderSampler,
    make_sampler,
)
from workers.training.seeding import derive_seed, make_generator, seed_everything
from workers.training.state import EpochRecord, TrainingState
from workers.training.thresholds import THRESHOLD_STRATEGIES, tune_rule

__all__ = [
    # data
    "BatchSource",
    "ResidentBatchSource",
    "Split",
    "StreamingBatchSource",
    "channel_stats",
    # networks
    "ARCHS",
    "HEADS",
    "Classifier",
    "CosineHead",
    "build_network",
    "load_init_state",
    "set_backbone_trainable",
    # losses
    "CLASS_WEIGHT_KINDS",
    "CRITERION_KINDS",
    "Criterion",
    "binary_logits_to_sigmoid",
    "class_weights",
    "focal_loss",
    "resolve_alpha",
    "sigmoid_focal_loss",
    "soft_cross_entropy",
    # mixing and augmentation
    "MIX_MODES",
    "BatchMixer",
    "ClassMembers",
    "Mixer",
    "MixParams",
    "apply_balanced_mix",
    "apply_mix",
    "remix_target_lam",
    "sample_balanced_params",
    "sample_beta",
    "sample_mix_params",
    "PADDING_MODES",
    "Augmenter",
    "AugmentParams",
    "BatchAugment",
    "affine_matrices",
    "minority_class_mask",
    # samplers
    "SAMPLER_KINDS",
    "ClassWeightedSampler",
    "EpochSampler",
    "OverSampler",
    "Sampler",
    "UnderSampler",
    "make_sampler",
    # optimisation
    "OPTIMIZERS",
    "SCHEDULERS",
    "LrSchedule",
    "make_optimizer",
    "make_scheduler",
    # metrics and thresholds
    "SELECTION_METRICS",
    "average_precision",
    "binary_auroc",
    "confusion_matrix",
    "expected_calibration_error",
    "metric_block",
    "pr_curve",
    "predict_labels",
    "roc_curve",
    "selection_score",
    "THRESHOLD_STRATEGIES",
    "tune_rule",
    # engine
    "EpochRecord",
    "FitResult",
    "StopReason",
    "TrainingState",
    "evaluate",
    "fit",
    "steps_per_epoch",
    # checkpoints, export, seeding
    "check_weights_only_safe",
    "file_sha256",
    "load_checkpoint",
    "save_checkpoint",
    "MAX_EXPORT_BATCH",
    "export_program",
    "load_program",
    "load_weights",
    "save_weights",
    "weights_state",
    "derive_seed",
    "make_generator",
    "seed_everything",
]
