"""Search spaces over dotted job-spec paths: suggest a trial's params, turn them into job specs, check them.

A space maps ``"loss.gamma"`` to a list of choices or a ``Range``. Optuna
stores only primitive categorical choices, so a choice that is a list or an
object (``"augment.scale": [[0.9, 1.1], null]``) is stored by its index and
decoded here. Every trial is checked as a full ``JobSpec`` (plus the server's
limits and the jobs route's dataset checks) before anything is queued.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from pydantic import ValidationError

from service.experiments.spec import Range
from service.spec import JobSpec

MAX_GRID = 10_000
MAX_CHECKED = 4_096

Problem = tuple[tuple[Any, ...], str]


class Suggester(Protocol):
    """The part of ``optuna.trial.Trial`` a space uses."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...


def _primitive(choices: list[Any]) -> bool:
    return all(choice is None or isinstance(choice, (bool, int, float, str)) for choice in choices)


def suggest(trial: Suggester, space: dict[str, Any]) -> dict[str, Any]:
    """One value per space key, drawn by ``trial`` (Optuna's sampler)."""
    params: dict[str, Any] = {}
    for key, dim in space.items():
        if isinstance(dim, Range):
            if dim.is_int:
                params[key] = trial.suggest_int(key, int(dim.low), int(dim.high), step=int(dim.step or 1), log=dim.log)
            else:
                params[key] = trial.suggest_float(key, float(dim.low), float(dim.high), step=dim.step, log=dim.log)
        elif _primitive(dim):
            params[key] = trial.suggest_categorical(key, list(dim))
        else:
            params[key] = dim[trial.suggest_categorical(key, list(range(len(dim))))]
    return params


def grid_space(space: dict[str, Any]) -> dict[str, list[Any]]:
    """The space as Optuna's ``GridSampler`` takes it (encoded choices for non-primitive ones)."""
    return {key: list(dim) if _primitive(dim) else list(range(len(dim))) for key, dim in space.items()}


def grid_size(space: dict[str, Any]) -> int:
    size = 1
    for dim in space.values():
        size *= len(dim)
    return size


def apply(base: dict[str, Any], params: dict[str, Any], *, dataset_id: str, seed: int) -> dict[str, Any]:
    """The job-spec body of one trial × seed: ``base`` with each dotted param set, the dataset and seed."""
    body = copy.deepcopy(base)
    for key, value in params.items():
        node = body
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"{key}: {part!r} is not an object in the job spec")
            node = child
        node[leaf] = copy.deepcopy(value)
    return {**body, "dataset_id": dataset_id, "seed": seed}


def sets(body: dict[str, Any], key: str) -> bool:
    """Whether the job-spec ``body`` sets the dotted ``key`` or a field above it (``model`` sets ``model.arch``)."""
    head, _, rest = key.partition(".")
    if head not in body:
        return False
    child = body[head]
    return not rest or not isinstance(child, dict) or sets(child, rest)


def check_trial(
    body: dict[str, Any], *, params: dict[str, Any], extra_checks: Callable[[JobSpec], list[Problem]]
) -> tuple[JobSpec | None, list[Problem]]:
    """Validate one trial's body; problems are ``(path, message)`` with the path inside the request.

    Validated as JSON, as ``POST /v1/jobs`` validates a body, so strictness is the same (no ``true`` for a number).
    """
    try:
        spec = JobSpec.model_validate_json(json.dumps(body))
    except ValidationError as exc:
        return None, [(_request_path(err["loc"], params), _message(err, params)) for err in exc.errors()]
    return spec, [(_request_path(loc, params), message) for loc, message in extra_checks(spec)]


def points_to_check(space: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Grid points, or for ranges their ends: every combination if few enough, else each value alone."""
    values = {key: [dim.low, dim.high] if isinstance(dim, Range) else list(dim) for key, dim in space.items()}
    total = 1
    for options in values.values():
        total *= len(options)
    if total <= MAX_CHECKED:
        for combination in itertools.product(*values.values()):
            yield dict(zip(values, combination, strict=True))
        return
    first = {key: options[0] for key, options in values.items()}
    for key, options in values.items():
        for option in options:
            yield {**first, key: option}


def _request_path(loc: tuple[Any, ...], params: dict[str, Any]) -> tuple[Any, ...]:
    dotted = ".".join(str(part) for part in loc)
    for key in params:
        if dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + "."):
            return ("search", "space", key)
    return ("base", *loc)


def _message(err: dict[str, Any], params: dict[str, Any]) -> str:
    dotted = ".".join(str(part) for part in err["loc"])
    message = str(err["msg"])
    if err["type"] == "extra_forbidden":
        message = f"{dotted} is not a job-spec field"
    for key, value in params.items():
        if dotted == key or dotted.startswith(key + "."):
            return f"{message} (trial value {json.dumps(value)[:100]})"
    return message
