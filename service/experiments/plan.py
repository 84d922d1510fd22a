"""An experiment's resolved plan: the request, the base spec and the space every trial draws from.

For ``strategy: auto`` the base and space come from the dataset
(``service.experiments.auto``); the plan is stored on the experiment row, so
every later step reads the same space even if the auto rules change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.config import Settings
from service.experiments.auto import auto_space
from service.experiments.space import Problem, apply, check_trial, grid_size, points_to_check
from service.experiments.spec import DEFAULT_TRIALS, ExperimentRequest, Range
from service.ingest import stored_dataset_violations
from service.models import Dataset
from service.spec import JobSpec
from service.violations import limit_violations


@dataclass(frozen=True)
class Plan:
    request: ExperimentRequest
    base: dict[str, Any]
    space: dict[str, Any]  # dotted path -> list of choices | Range
    reasons: tuple[str, ...] = ()

    @property
    def trials_total(self) -> int:
        wanted = self.request.search.trials
        if self.request.search.strategy == "grid":
            return min(wanted or grid_size(self.space), grid_size(self.space))
        return wanted or DEFAULT_TRIALS

    def to_stored(self) -> dict[str, Any]:
        space = {key: dim.model_dump() if isinstance(dim, Range) else dim for key, dim in self.space.items()}
        return {
            "request": self.request.model_dump(mode="json", by_alias=True),
            "base": self.base,
            "space": space,
            "reasons": list(self.reasons),
        }

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> Plan:
        space = {key: Range(**dim) if isinstance(dim, dict) else dim for key, dim in stored["space"].items()}
        return cls(
            request=ExperimentRequest.model_validate(stored["request"]),
            base=stored["base"],
            space=space,
            reasons=tuple(stored.get("reasons", ())),
        )

    def trial_specs(
        self, params: dict[str, Any], *, settings: Settings, dataset: Dataset
    ) -> tuple[list[JobSpec], list[Problem]]:
        """One validated job spec per seed, or the problems of this trial's params."""
        specs: list[JobSpec] = []
        for seed in self.request.seeds:
            body = apply(self.base, params, dataset_id=self.request.dataset_id, seed=seed)
            spec, problems = check_trial(body, params=params, extra_checks=spec_checks(settings, dataset))
            if problems or spec is None:
                return [], problems
            specs.append(spec)
        return specs, []

    def problems(self, *, settings: Settings, dataset: Dataset) -> list[Problem]:
        """Every trial this plan can draw, checked as full job specs before anything is queued,
        and a ``budget.max_epochs_total`` that at least one of them fits in."""
        if self.request.search.strategy == "grid" and grid_size(self.space) > 10_000:
            return [(("search", "space"), f"the grid has {grid_size(self.space)} points; at most 10000")]
        fewest: int | None = None
        for params in points_to_check(self.space):
            try:
                specs, problems = self.trial_specs(params, settings=settings, dataset=dataset)
            except ValueError as exc:
                return [(("search", "space"), str(exc))]
            if problems:
                return problems
            epochs = sum(spec.epochs for spec in specs)
            fewest = epochs if fewest is None else min(fewest, epochs)
        budget = self.request.budget.max_epochs_total
        if budget is not None and fewest is not None and fewest > budget:
            message = f"{budget} is below the {fewest} epochs of the smallest trial (its epochs × the seeds)"
            return [(("budget", "max_epochs_total"), message)]
        return []


def spec_checks(settings: Settings, dataset: Dataset):
    """The server-limit and dataset checks the jobs route applies, for trial specs."""

    def checks(spec: JobSpec) -> list[Problem]:
        limits = limit_violations(
            spec,
            max_epochs=settings.max_epochs,
            max_batch_size=settings.max_batch_size,
            max_image_size=settings.max_image_size,
            max_job_seconds=settings.max_job_seconds,
        )
        return [*limits, *stored_dataset_violations(spec, dataset=dataset)]

    return checks


def plan_for(request: ExperimentRequest, *, dataset: Dataset) -> Plan:
    """The request's plan: as given, or for ``auto`` the space rarefit picks for this dataset."""
    if request.search.strategy == "auto":
        base, space, reasons = auto_space(request, dataset=dataset)
        return Plan(request=request, base=base, space=space, reasons=tuple(reasons))
    base = dict(request.base)
    objective = request.objective
    if "selection_metric" not in base and objective.class_ is None:
        base["selection_metric"] = objective.metric  # pick each job's best epoch by what the search ranks
    return Plan(request=request, base=base, space=dict(request.search.space or {}))
