"""Experiments: submit a search (every trial checked first), poll its leaderboard, cancel, delete."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from sqlalchemy.orm import Session

from rarefit.schemas import ExperimentOut, ExperimentSummaryOut, Page
from service.api.deps import CeleryDep, LimitQuery, OffsetQuery, SessionDep, SettingsDep, TenantDep
from service.config import Settings
from service.errors import ProblemError, conflict_as_409, dotted, field_error, not_found, problem_responses
from service.experiments.plan import Plan, plan_for
from service.experiments.schemas import experiment_out, experiment_summary_out
from service.experiments.space import apply, points_to_check
from service.experiments.spec import ExperimentRequest
from service.models import Dataset, Experiment, ExperimentStatus
from service.queue import enqueue_advance
from service.repository import datasets as dataset_repo
from service.repository import experiments as repo
from service.spec import JobSpec
from service.spec_warnings import spec_warnings

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/experiments", tags=["experiments"])


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ExperimentOut,
    summary="Start an experiment: a search over job specs, each trial run once per seed",
    responses=problem_responses(
        400,
        404,
        422,
        s400="a body that is not UTF-8 text",
        s422="invalid request, or a trial that is not a valid job spec (`errors`)",
    ),
)
def submit_experiment(
    request: ExperimentRequest,
    response: Response,
    session: SessionDep,
    tenant_id: TenantDep,
    settings: SettingsDep,
    celery_app: CeleryDep,
) -> ExperimentOut:
    dataset = dataset_repo.get_dataset(session, tenant_id=tenant_id, dataset_id=request.dataset_id)
    if dataset is None:
        raise not_found("dataset", request.dataset_id)
    plan = plan_for(request, dataset=dataset)
    _check(plan, dataset=dataset, settings=settings)
    row = repo.create_experiment(
        session,
        tenant_id=tenant_id,
        dataset_id=dataset.id,
        name=request.name or f"experiment on {dataset.name}"[:200],
        stored=plan.to_stored(),
        trials_total=plan.trials_total,
        warnings=_warnings(plan),
    )
    session.commit()
    _kick(celery_app, row.id)
    logger.info("tenant %s started experiment %s (%d trials)", tenant_id, row.id, row.trials_total)
    response.headers["Location"] = f"/v1/experiments/{row.id}"
    return _out(session, row)


@router.get("", response_model=Page[ExperimentSummaryOut], summary="List experiments, newest first")
def list_experiments(
    session: SessionDep,
    tenant_id: TenantDep,
    status_: Annotated[ExperimentStatus | None, Query(alias="status", description="only in this state")] = None,
    limit: LimitQuery = 50,
    offset: OffsetQuery = 0,
) -> Page[ExperimentSummaryOut]:
    rows = repo.list_experiments(session, tenant_id=tenant_id, status=status_, limit=limit + 1, offset=offset)
    return Page[ExperimentSummaryOut].of(rows, limit=limit, offset=offset, convert=experiment_summary_out)


@router.get(
    "/{experiment_id}",
    response_model=ExperimentOut,
    summary="One experiment with its progress and leaderboard (poll it)",
    responses=problem_responses(404),
)
def get_experiment(experiment_id: str, session: SessionDep, tenant_id: TenantDep) -> ExperimentOut:
    return _out(session, _experiment_or_404(session, tenant_id=tenant_id, experiment_id=experiment_id))


@router.post(
    "/{experiment_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ExperimentOut,
    summary="Cancel an experiment and every queued or running job of it",
    responses=problem_responses(404, 409, s409="the experiment already finished"),
)
def cancel_experiment(experiment_id: str, session: SessionDep, tenant_id: TenantDep) -> ExperimentOut:
    with conflict_as_409(session, repo.ExperimentConflict):
        row = repo.cancel_experiment(session, tenant_id=tenant_id, experiment_id=experiment_id)
    if row is None:
        raise not_found("experiment", experiment_id)
    session.commit()
    logger.info("tenant %s cancelled experiment %s", tenant_id, experiment_id)
    return _out(session, row)


@router.delete(
    "/{experiment_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a finished experiment (its jobs and models stay)",
    responses=problem_responses(404, 409, s409="the experiment is queued or running; cancel it first"),
)
def delete_experiment(experiment_id: str, session: SessionDep, tenant_id: TenantDep, settings: SettingsDep) -> Response:
    with conflict_as_409(session, repo.ExperimentConflict):
        deleted = repo.delete_experiment(session, tenant_id=tenant_id, experiment_id=experiment_id)
    if not deleted:
        raise not_found("experiment", experiment_id)
    session.commit()
    _delete_study(settings, experiment_id)
    logger.info("tenant %s deleted experiment %s", tenant_id, experiment_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _experiment_or_404(session: Session, *, tenant_id: str, experiment_id: str) -> Experiment:
    row = repo.get_experiment(session, tenant_id=tenant_id, experiment_id=experiment_id)
    if row is None:
        raise not_found("experiment", experiment_id)
    return row


def _out(session: Session, row: Experiment) -> ExperimentOut:
    jobs = repo.experiment_jobs(session, experiment_id=row.id)
    return experiment_out(
        row,
        trials=repo.trials(session, experiment_id=row.id),
        jobs=jobs,
        val_blocks=repo.best_epoch_blocks(session, job_ids=[job.id for job in jobs if job.best_epoch is not None]),
    )


def _check(plan: Plan, *, dataset: Dataset, settings: Settings) -> None:
    request, problems = plan.request, []
    class_name = request.objective.class_
    if class_name is not None and class_name not in [str(name) for name in dataset.class_names]:
        problems.append((("objective", "class"), f"no class {class_name!r} in this dataset ({dataset.class_names})"))
    cap = settings.max_concurrent_jobs_per_tenant
    if len(request.seeds) > cap:
        problems.append((("seeds",), f"{len(request.seeds)} seeds run at once, above this tenant's job limit {cap}"))
    problems += plan.problems(settings=settings, dataset=dataset)
    if problems:
        errors = [field_error(("body", *path), message) for path, message in problems]
        detail = "; ".join(f"{dotted(path)}: {message}" for path, message in problems[:5])
        raise ProblemError(422, "Validation failed", detail, errors=errors)


def _warnings(plan: Plan) -> list[dict]:
    """Warnings of the base spec, and of the user's own space (auto's trials mix tools on purpose)."""
    points = [{}] if plan.request.search.strategy == "auto" else list(points_to_check(plan.space))
    found: dict[str, dict] = {}
    for params in points:
        body = apply(plan.base, params, dataset_id=plan.request.dataset_id, seed=plan.request.seeds[0])
        for warning in spec_warnings(JobSpec.model_validate(body)):
            found.setdefault(warning["code"], warning)
    return list(found.values())


def _kick(celery_app, experiment_id: str) -> None:
    try:
        enqueue_advance(celery_app, experiment_id)
    except Exception:  # the broker's errors vary; the reaper advances every active experiment
        logger.warning("could not send the first step of experiment %s; the reaper will", experiment_id, exc_info=True)


def _delete_study(settings: Settings, experiment_id: str) -> None:
    from service.experiments.study import delete_study  # Optuna loads only where experiments are deleted

    try:
        delete_study(settings.optuna_url, experiment_id=experiment_id)
    except Exception:  # the rows are gone; a leftover study is only storage
        logger.warning("could not delete the Optuna study of experiment %s", experiment_id, exc_info=True)
