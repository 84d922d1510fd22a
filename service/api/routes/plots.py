"""``GET /v1/jobs/{id}/plots/{plot}.png``: a job's curves and matrices as images."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.api.deps import SessionDep, TenantDep
from service.errors import ProblemError, not_found, problem_responses, shown
from service.plots import PLOTS, PlotUnavailable, render
from service.repository import jobs as repo
from service.schemas import epoch_out

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get(
    "/{job_id}/plots/{plot}.png",
    response_class=Response,
    summary=f"A plot of the job as PNG: {', '.join(PLOTS)}",
    responses={200: {"content": {"image/png": {}}, "description": "the image"}, **problem_responses(404)},
)
def get_plot(job_id: str, plot: str, session: SessionDep, tenant_id: TenantDep) -> Response:
    job = repo.get_job(session, tenant_id=tenant_id, job_id=job_id)
    if job is None:
        raise not_found("job", job_id)
    if plot not in PLOTS:
        raise ProblemError(404, "Not Found", f"no plot {shown(plot)}; available: {', '.join(PLOTS)}")
    history = [epoch_out(row).model_dump() for row in repo.list_epoch_metrics(session, job_id=job.id)]
    metric = str(job.spec.get("selection_metric", "balanced_accuracy"))
    try:
        png = render(plot, history=history, test=job.test_metrics, metric=metric)
    except PlotUnavailable as exc:
        raise ProblemError(404, "Not Found", f"job {job.id}: {exc}") from None
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})
