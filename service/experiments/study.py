"""Optuna's side of an experiment: its storage, the study, samplers and pruners.

Optuna keeps its tables in a database of its own (embedded: ``optuna.db`` in
the data directory) or, on PostgreSQL, in the schema ``optuna`` of the same
server: Optuna migrates its tables with Alembic too, and two Alembic histories
sharing one ``alembic_version`` table clash (mlflow#2923). Samplers hold no
state between calls: each ``advance`` builds a fresh one (see ``sampler`` for
its seed).
"""

from __future__ import annotations

import functools
import logging

import optuna
from sqlalchemy import create_engine, text

from service.experiments.space import grid_space
from service.experiments.spec import ExperimentRequest

logger = logging.getLogger(__name__)

OPTUNA_SCHEMA = "optuna"
optuna.logging.set_verbosity(optuna.logging.WARNING)


def study_name(experiment_id: str) -> str:
    return f"rarefit-{experiment_id}"


@functools.lru_cache(maxsize=4)
def storage(url: str) -> optuna.storages.RDBStorage:
    """One storage (and engine pool) per URL and process; PostgreSQL gets Optuna's own schema."""
    if url.startswith("sqlite"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 30}})
    url = "postgresql+psycopg://" + url.split("://", 1)[1] if url.startswith("postgresql://") else url
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {OPTUNA_SCHEMA}"))
    finally:
        engine.dispose()
    options = {"connect_args": {"options": f"-csearch_path={OPTUNA_SCHEMA}"}, "pool_pre_ping": True}
    return optuna.storages.RDBStorage(url, engine_kwargs=options)


def load_study(
    url: str, *, experiment_id: str, request: ExperimentRequest, space: dict, number: int, trials_total: int
) -> optuna.Study:
    """The experiment's study (created on first use) with a sampler for trial ``number``."""
    return optuna.create_study(
        storage=storage(url),
        study_name=study_name(experiment_id),
        direction="maximize",
        sampler=sampler(
            request, space=space, seed=int(experiment_id[:8], 16), number=number, trials_total=trials_total
        ),
        pruner=pruner(request),
        load_if_exists=True,
    )


def delete_study(url: str, *, experiment_id: str) -> None:
    try:
        optuna.delete_study(study_name=study_name(experiment_id), storage=storage(url))
    except KeyError:
        logger.info("experiment %s had no Optuna study yet", experiment_id)


class AskTellGridSampler(optuna.samplers.GridSampler):
    """``GridSampler`` without its end-of-grid ``study.stop()``, which Optuna allows only inside
    ``study.optimize``; under ask-and-tell the experiment's ``trials_total`` ends the search."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def sampler(
    request: ExperimentRequest, *, space: dict, seed: int, number: int, trials_total: int
) -> optuna.samplers.BaseSampler:
    """The sampler for the experiment's trial ``number``.

    The grid sampler shuffles its grid with its seed, so it keeps the experiment's
    seed on every call; the others add the trial number to draw afresh each time.
    """
    strategy = request.search.strategy
    if strategy == "grid":
        return AskTellGridSampler(grid_space(space), seed=seed)
    seed += number
    if strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # tpe and auto: a few random startup trials, then TPE over categorical and numeric dimensions alike.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, trials_total // 3)))


def pruner(request: ExperimentRequest) -> optuna.pruners.BasePruner:
    if request.pruning == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()
