"""The threshold policy: how a job spec (or a model's ``PATCH``) asks for its operating point.

Shared by the job spec (``service.spec``), the registry's re-fit of a stored
model and the worker's fit after training (``service.operating_points``).
A class is named by its name or its index (``ClassRef``, ``resolve_class``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# A class by name or by index; strict, so a boolean is not class 1.
ClassRef = Annotated[str, Field(strict=True, min_length=1, max_length=200)] | Annotated[int, Field(strict=True, ge=0)]
THRESHOLD_STRATEGIES = ("none", "max_f1", "recall_at_least", "precision_at_least", "cost", "target_recall")


class ThresholdSpec(BaseModel):
    """The operating point: a policy fitted on val, verified on test, stored on the model card.

    ``recall_at_least`` / ``precision_at_least`` take ``value`` for ``class`` (a
    name or index; default: the positive class), one-vs-rest on multi-class
    data; ``cost`` is a K×K matrix ``cost[true][predicted]`` (the Bayes
    decision on calibrated probabilities). ``target_recall`` (with
    ``target_recall``) is kept as an alias of ``recall_at_least`` on the
    positive class. ``guarantee`` chooses the threshold so that the
    Clopper–Pearson lower bound at ``confidence`` (not the point estimate)
    meets ``value`` on val.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        strict=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )
    strategy: Literal[THRESHOLD_STRATEGIES] = "max_f1"  # type: ignore[valid-type]
    value: float | None = Field(
        default=None, gt=0.0, le=1.0, strict=True, description="the recall or precision to reach"
    )
    class_: ClassRef | None = Field(
        default=None, alias="class", description="class name or index (default: the positive class)"
    )
    cost: list[list[Annotated[float, Field(ge=0.0, le=1e9)]]] | None = Field(
        default=None, max_length=1000, description="cost[true][predicted], K×K, for strategy 'cost'"
    )
    target_recall: float | None = Field(default=None, gt=0.0, le=1.0)
    confidence: float = Field(default=0.95, ge=0.5, lt=1.0, strict=True, description="level of the lower bounds")
    guarantee: bool = Field(default=False, strict=True)

    @model_validator(mode="after")
    def _arguments_given(self) -> ThresholdSpec:
        needs = {"target_recall": "target_recall", "recall_at_least": "value", "precision_at_least": "value"}
        name = needs.get(self.strategy)
        if name is not None and getattr(self, name) is None:
            raise ValueError(f"threshold.{name} is required when strategy is {self.strategy!r}")
        if (self.strategy == "cost") != (self.cost is not None):
            raise ValueError("threshold.cost is given exactly when strategy is 'cost'")
        if self.guarantee and self.strategy not in ("recall_at_least", "precision_at_least", "target_recall"):
            raise ValueError("threshold.guarantee needs strategy 'recall_at_least' or 'precision_at_least'")
        return self

    def canonical(self) -> ThresholdSpec:
        """``target_recall`` spelled as the ``recall_at_least`` it is an alias of."""
        if self.strategy != "target_recall":
            return self
        return self.model_copy(
            update={"strategy": "recall_at_least", "value": self.target_recall, "target_recall": None}
        )


def resolve_class(value: str | int, class_names: Sequence[str]) -> int | None:
    """A class given by name or index as its index; ``None`` when there is no such class.

    A string is a class name first, then a decimal index (class names are strings).
    """
    if isinstance(value, str):
        if value in class_names:
            return class_names.index(value)
        value = int(value) if value.isdecimal() else -1
    return value if 0 <= value < len(class_names) else None
