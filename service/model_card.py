"""The trained-model contract: one typed model card, the artefact file names and their blob keys.

Web-free: the worker writes the card (``workers/artifacts.py``), hosted
inference and the registry read it (``service/inference/artifact.py``,
``service/registry.py``), the database row only indexes it. The card is the
one source of truth for class names, the positive class, calibration and the
operating point (the decision rule predict applies). A re-fitted operating
point (``PATCH /v1/models/{id}``) publishes a new card with ``revision + 1``
under a key of its own (``card_key``); the row's ``revision`` says which card
is current.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rarefit.decision import DecisionRule

PROGRAM_FILE = "model.pt2"
ONNX_FILE = "model.onnx"
WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "model_card.json"
METRICS_FILE = "metrics.json"
SCORES_FILE = "scores.npz"
FORMAT_VERSION: Final = 2


def artifacts_prefix(job_id: str) -> str:
    """The blob folder of a job's artefacts (the registered model's ``blob_prefix``)."""
    return f"jobs/{job_id}/artifacts"


def artifact_key(job_id: str, name: str) -> str:
    return f"{artifacts_prefix(job_id)}/{name}"


def card_key(blob_prefix: str, *, revision: int) -> str:
    """The blob key of card ``revision`` under a model's ``blob_prefix``: the trained card (revision 0) is
    ``model_card.json``, each re-fitted one a new key (``model_card.r1.json``, …) written once, before the
    row names it. A revision is never written over the card a committed row points at, so a re-fit whose
    commit fails leaves only an unread file behind (the next re-fit of that revision writes it again)."""
    if revision == 0:
        return f"{blob_prefix}/{CARD_FILE}"
    stem, _, suffix = CARD_FILE.rpartition(".")
    return f"{blob_prefix}/{stem}.r{int(revision)}.{suffix}"


def checkpoint_key(job_id: str, *, attempt: int = 0, epoch: int = 0) -> str:
    """A new file per (attempt, epoch): writing the next checkpoint never touches the one the job row
    points at, so a crash or database outage between the file and the row costs one epoch, not the
    whole run, and a worker that lost its lease never overwrites its successor's file."""
    return f"jobs/{job_id}/checkpoints/a{int(attempt)}-e{int(epoch):05d}.pt"


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class InputSpec(_Part):
    """What the exported program takes: float32 ``(B, C, H, W)`` in ``[0, 1]``, each pixel ``x / (2**bits - 1)``
    of its own image's depth (docs/images.md), so a 16-bit image keeps all 16 bits and an 8-bit one equals
    itself widened by 257."""

    height: int = Field(ge=1)
    width: int = Field(ge=1)
    channels: Literal[1, 3]
    layout: Literal["NCHW"] = "NCHW"
    dtype: Literal["float32"] = "float32"
    range: tuple[float, float] = (0.0, 1.0)
    pixel_bits: Literal[8, 16] = Field(
        default=8, description="the training images' depth (the dataset's pixel_bits); 8 on cards written before it"
    )


class Normalization(_Part):
    """Channel statistics of the train split; applied inside the program (informational)."""

    mean: list[float]
    std: list[float]


class Calibration(_Part):
    """``temperature`` divides the logits inside the exported program, so its softmax is calibrated."""

    method: Literal["none", "temperature"] = "none"
    temperature: float = Field(default=1.0, gt=0.0)


class OperatingPoint(_Part):
    """The decision rule predict applies (``rarefit.decision``), fitted on val scores by ``policy``."""

    rule: Literal["argmax", "threshold", "cost"] = "argmax"
    thresholds: dict[int, float] = Field(default_factory=dict, description="class index -> threshold on its p")
    cost: list[list[float]] | None = None
    policy: dict[str, Any] = Field(default_factory=lambda: {"strategy": "none"})
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    guarantee: bool = False
    guarantee_met: bool | None = None
    warnings: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _valid_rule(self) -> OperatingPoint:
        self.decision_rule()  # raises ValueError for an inconsistent rule
        return self

    def decision_rule(self) -> DecisionRule:
        if self.rule == "threshold":
            return DecisionRule.one_vs_rest(self.thresholds)
        if self.rule == "cost":
            return DecisionRule.bayes(self.cost or [])
        return DecisionRule.argmax()

    @classmethod
    def from_rule(cls, rule: DecisionRule, **details: Any) -> OperatingPoint:
        cost = None if rule.cost is None else [list(row) for row in rule.cost]
        return cls(rule=rule.kind, thresholds=dict(rule.thresholds), cost=cost, **details)

    def threshold_for(self, positive_class: int | None) -> float | None:
        """The binary threshold on ``positive_class``, when the rule is exactly that."""
        if self.rule != "threshold" or positive_class is None or set(self.thresholds) != {positive_class}:
            return None
        return self.thresholds[positive_class]


class OnnxExport(_Part):
    """The ONNX graph beside the ``torch.export`` program: ``file`` when it exported and ONNX Runtime
    reproduced PyTorch's logits within tolerance (hosted inference then serves it), else ``error``
    says why the model is served with PyTorch."""

    file: str | None = None
    max_abs_diff: float | None = Field(default=None, ge=0.0, description="largest |ONNX - PyTorch| logit on probes")
    error: str | None = None


class ModelCard(_Part):
    """``model_card.json``: everything needed to run and trust the model without rarefit's training code."""

    format_version: Literal[2] = FORMAT_VERSION
    revision: int = Field(default=0, ge=0, description="+1 for each re-fitted operating point")
    arch: str
    class_names: list[str] = Field(min_length=2)
    positive_class: int | None = Field(default=None, ge=0, description="binary: the class thresholds refer to")
    files: list[str] = Field(description="the artefact's files, beside this card")
    input: InputSpec
    normalization: Normalization
    calibration: Calibration = Calibration()
    operating_point: OperatingPoint = OperatingPoint()
    metrics: dict[str, Any] = Field(default_factory=dict, description="test metric block at the operating point")
    best_epoch: int | None = None
    job_id: str
    spec: dict[str, Any] = Field(default_factory=dict)
    onnx: OnnxExport = OnnxExport(error="not exported (a card written before ONNX export)")
    versions: dict[str, str | None] = Field(
        default_factory=dict, description="rarefit, torch, onnx, onnxscript, onnxruntime that wrote the programs"
    )

    @model_validator(mode="before")
    @classmethod
    def _upgrade_version_1(cls, data: Any) -> Any:
        """Cards of models trained before format 2 keep serving: their binary threshold becomes the
        operating point and their file list is the one every format-1 artefact had."""
        if not isinstance(data, dict) or data.get("format_version") != 1:
            return data
        card = {key: value for key, value in data.items() if key != "threshold"}
        threshold, positive = data.get("threshold"), data.get("positive_class")
        if threshold is not None and positive is not None:
            card["operating_point"] = {
                "rule": "threshold",
                "thresholds": {int(positive): float(threshold)},
                "policy": {"strategy": data.get("spec", {}).get("threshold", {}).get("strategy", "max_f1")},
            }
        card["files"] = [PROGRAM_FILE, WEIGHTS_FILE, CARD_FILE, METRICS_FILE]
        card["format_version"] = FORMAT_VERSION
        return card

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        if self.onnx.file is not None and self.onnx.file not in self.files:
            raise ValueError(f"onnx.file {self.onnx.file!r} is not among the card's files")
        k = len(self.class_names)
        if self.positive_class is not None and self.positive_class >= k:
            raise ValueError(f"positive_class {self.positive_class} is not a class index below {k}")
        self.operating_point.decision_rule().check_classes(k)
        return self

    @property
    def threshold(self) -> float | None:
        return self.operating_point.threshold_for(self.positive_class)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)
