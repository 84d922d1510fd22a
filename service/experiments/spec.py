"""The experiment request: one frozen pydantic model, validated once by the API and stored on the row.

Like the job spec (``service.spec``) it forbids unknown keys and non-finite
numbers, and its types are strict (no boolean, string or fractional float
where an integer belongs). What needs the dataset or the job spec (space keys, class names,
every trial being a valid job) is checked in ``service.experiments.space``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator

from service.spec import SELECTION_METRICS

GLOBAL_METRICS = SELECTION_METRICS
CLASS_METRICS = ("recall", "precision", "f1")
MAX_TRIALS = 500
MAX_SEEDS = 10
DEFAULT_TRIALS = 12

Choice = StrictBool | StrictInt | StrictFloat | StrictStr | None | list[Any] | dict[str, Any]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


class Range(_Part):
    """A numeric range: integers when both ends are integers, floats otherwise; ``log`` samples log-uniformly."""

    low: StrictInt | StrictFloat
    high: StrictInt | StrictFloat
    log: bool = False
    step: StrictInt | StrictFloat | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low must be <= high, got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log ranges need low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ValueError("a log range takes no step")
        return self

    @property
    def is_int(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and not isinstance(self.step, float)


Dimension = Annotated[list[Choice], Field(min_length=1, max_length=64)] | Range


class SearchSpec(_Part):
    strategy: Literal["grid", "random", "tpe", "auto"] = "auto"
    space: dict[Annotated[str, Field(min_length=1, max_length=200)], Dimension] | None = Field(
        default=None, max_length=32, description="dotted job-spec path -> list of choices or {low, high[, log]}"
    )
    trials: int | None = Field(default=None, ge=1, le=MAX_TRIALS, description="default: the grid size, else 12")

    @model_validator(mode="after")
    def _space_fits_strategy(self) -> SearchSpec:
        if self.strategy == "auto" and self.space is not None:
            raise ValueError("strategy 'auto' builds its own space from the dataset; leave search.space out")
        if self.strategy != "auto" and not self.space:
            raise ValueError(f"strategy {self.strategy!r} needs a non-empty search.space")
        if self.strategy == "grid":
            ranges = [key for key, dim in (self.space or {}).items() if isinstance(dim, Range)]
            if ranges:
                raise ValueError(f"grid search needs a list of choices for every key; ranges at {ranges}")
        return self


class Constraint(_Part):
    precision_at_least: float = Field(gt=0.0, le=1.0)


class ObjectiveSpec(_Part):
    """What the search maximises on val: a global metric, or one class's recall/precision/F1.

    With ``constraint``, a trial whose precision on that class is below the bound
    scores ``precision - bound - 1`` (always below any trial that meets it, and
    closer to feasible ranks higher); one that meets it scores its metric.
    """

    model_config = ConfigDict(populate_by_name=True)
    metric: Literal[GLOBAL_METRICS + CLASS_METRICS] = "balanced_accuracy"  # type: ignore[valid-type]
    class_: StrictStr | None = Field(default=None, alias="class", description="class name, for recall/precision/f1")
    constraint: Constraint | None = None

    @model_validator(mode="after")
    def _class_when_needed(self) -> ObjectiveSpec:
        per_class = self.metric in CLASS_METRICS
        if per_class and self.class_ is None:
            raise ValueError(f"objective.class is required for metric {self.metric!r}")
        if not per_class and self.class_ is not None:
            raise ValueError(f"objective.class applies only to {list(CLASS_METRICS)}")
        if self.constraint is not None and not per_class:
            raise ValueError("objective.constraint needs a per-class metric (recall, precision or f1) and its class")
        return self


class BudgetSpec(_Part):
    max_parallel: int = Field(default=2, ge=1, le=64, description="trials running at once (each runs every seed)")
    max_epochs_total: int | None = Field(default=None, ge=1, le=10_000_000)


class ExperimentRequest(_Part):
    dataset_id: str = Field(min_length=1, max_length=64)
    name: str = Field(default="", max_length=200)
    base: dict[str, Any] = Field(default_factory=dict, description="job-spec fields every trial shares")
    search: SearchSpec = SearchSpec()
    seeds: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] = Field(
        default=[0, 1, 2], min_length=1, max_length=MAX_SEEDS
    )
    objective: ObjectiveSpec = ObjectiveSpec()
    budget: BudgetSpec = BudgetSpec()
    pruning: Literal["none", "asha"] = "none"

    @model_validator(mode="after")
    def _distinct_seeds(self) -> ExperimentRequest:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        for key in ("dataset_id", "seed"):
            if key in self.base:
                raise ValueError(f"base.{key} is set by the experiment; leave it out")
        return self
