"""``advance_experiment``: one small, idempotent step of an experiment (ask-and-tell with Optuna).

Run by the ``rarefit.advance_experiment`` task on the control queue whenever a
child job ends, after each epoch of an ASHA trial's job (``workers.lifecycle.pruning``,
throttled) and on every reaper pass. Under the experiment's lock it:

1. settles trials: a trial whose jobs all ended is told to Optuna (its value
   is the mean val objective over seeds at each job's best epoch; any failed
   seed fails the trial); with ``pruning: asha`` every trial first reports
   each epoch all its seeds have finished, and a running one is pruned (its
   jobs cancelled) when Optuna's successive-halving pruner says so;
2. finishes the experiment once every trial has ended;
3. asks Optuna for new trials up to ``budget.max_parallel`` running trials
   (and the tenant's job cap), creating one queued job per seed.

The database row and Optuna's storage are the truth, so running it twice
changes nothing: a trial Optuna handed out but whose jobs were never
committed (a crash in between) is found in Optuna's storage as RUNNING and
reused, and telling a finished trial again is skipped.
"""

from __future__ import annotations

import logging
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

import optuna
from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.db import make_engine, make_session_factory, transaction
from service.experiments import study as studies
from service.experiments.objective import objective_value
from service.experiments.plan import Plan
from service.experiments.space import suggest
from service.models import Dataset, Experiment, ExperimentStatus, ExperimentTrial, Job, JobStatus, utcnow
from service.queue import enqueue_job
from service.repository import experiments as repo
from service.repository import jobs as job_repo

logger = logging.getLogger(__name__)


@dataclass
class AdvanceReport:
    status: str | None = None
    told: list[int] = field(default_factory=list)
    pruned: list[int] = field(default_factory=list)
    launched: list[int] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)


def advance_experiment(
    experiment_id: str, *, settings: Settings, session_factory: sessionmaker[Session], celery_app: Celery
) -> AdvanceReport:
    """One step (see the module docstring); the new jobs are sent after the commit."""
    report = AdvanceReport()
    with transaction(session_factory) as session:
        experiment = repo.lock(session, experiment_id=experiment_id, now=utcnow())
        if experiment is None:
            return report
        Step(session, experiment, settings=settings, report=report).run()
        report.status = ExperimentStatus(experiment.status).value
    for job_id in report.job_ids:
        _send(session_factory, celery_app, job_id)
    if report.told or report.pruned or report.launched:
        logger.info(
            "experiment %s: told %s, pruned %s, launched %s (now %s)",
            experiment_id,
            report.told,
            report.pruned,
            report.launched,
            report.status,
        )
    return report


class Step:
    """The work of one advance, inside the transaction that holds the experiment's lock."""

    def __init__(self, session: Session, experiment: Experiment, *, settings: Settings, report: AdvanceReport) -> None:
        self.session, self.experiment, self.settings, self.report = session, experiment, settings, report
        self.plan = Plan.from_stored(experiment.request)
        self.trials = repo.trials(session, experiment_id=experiment.id)
        self.jobs: dict[int, list[Job]] = defaultdict(list)
        for job in repo.experiment_jobs(session, experiment_id=experiment.id):
            self.jobs[int(job.trial or 0)].append(job)

    def study(self) -> optuna.Study:
        return studies.load_study(
            self.settings.optuna_url,
            experiment_id=self.experiment.id,
            request=self.plan.request,
            space=self.plan.space,
            number=len(self.trials),
            trials_total=self.experiment.trials_total,
        )

    def run(self) -> None:
        study = self.study()
        for trial in self.trials:
            if trial.state == "running":
                self._settle(study, trial)
        if self._finished():
            return
        self._launch()

    # --- settle -----------------------------------------------------------
    def _settle(self, study: optuna.Study, trial: ExperimentTrial) -> None:
        jobs = self.jobs.get(trial.number, [])
        ended = bool(jobs) and all(JobStatus(job.status).is_terminal for job in jobs)
        if self.plan.request.pruning == "asha" and jobs:
            # A trial that ended between two steps still reports its epochs, so its rung values
            # are there for later trials to be compared with; only a running one is pruned.
            if self._prune_now(study, trial, jobs) and not ended:
                self._prune(study, trial, jobs)
                return
        if ended:
            self._tell(study, trial, jobs)

    def _tell(self, study: optuna.Study, trial: ExperimentTrial, jobs: list[Job]) -> None:
        failed = [job for job in jobs if job.status != JobStatus.succeeded]
        value = None if failed else self._mean_value(jobs)
        if value is None:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            trial.error_message = _failure_message(failed)
            repo.finish_trial(self.session, trial, state="failed", value=None)
        else:
            study.tell(trial.number, value, skip_if_finished=True)
            repo.finish_trial(self.session, trial, state="complete", value=value)
        self.report.told.append(trial.number)

    def _mean_value(self, jobs: list[Job]) -> float | None:
        blocks = repo.best_epoch_blocks(self.session, job_ids=[job.id for job in jobs])
        values = [objective_value(blocks.get(job.id), self.plan.request.objective) for job in jobs]
        finite = [value for value in values if value is not None]
        return statistics.fmean(finite) if finite else None

    def _prune_now(self, study: optuna.Study, trial: ExperimentTrial, jobs: list[Job]) -> bool:
        """Report each new epoch every seed has finished (the mean val objective) and ask the pruner
        after each one, as Optuna's own loop does: a rung keeps the value of the epoch that reaches it,
        not of a later one a slow step happened to see first. True once the pruner says prune."""
        history = repo.val_history(self.session, job_ids=[job.id for job in jobs])
        common = set.intersection(*(set(history.get(job.id, {})) for job in jobs))
        frozen = study.trials[trial.number]
        live = optuna.trial.Trial(study, frozen._trial_id)  # Optuna's own handle for a trial by id
        objective = self.plan.request.objective
        for step in sorted(common - set(frozen.intermediate_values)):
            values = [objective_value(history[job.id][step], objective) for job in jobs]
            finite = [value for value in values if value is not None]
            if not finite:
                continue
            live.report(statistics.fmean(finite), step)
            if live.should_prune():
                return True
        return False

    def _prune(self, study: optuna.Study, trial: ExperimentTrial, jobs: list[Job]) -> None:
        repo.cancel_jobs(self.session, tenant_id=self.experiment.tenant_id, jobs=jobs)
        study.tell(trial.number, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
        last = study.trials[trial.number].intermediate_values
        repo.finish_trial(self.session, trial, state="pruned", value=last[max(last)] if last else None)
        self.report.pruned.append(trial.number)

    # --- finish -----------------------------------------------------------
    def _finished(self) -> bool:
        if any(trial.state == "running" for trial in self.trials):
            return False
        if len(self.trials) < self.experiment.trials_total:
            return False
        complete = [trial for trial in self.trials if trial.state == "complete"]
        if complete:
            repo.set_status(self.session, self.experiment, ExperimentStatus.succeeded)
        else:
            errors = [trial.error_message for trial in self.trials if trial.error_message]
            message = "every trial failed or was pruned" + (f"; first error: {errors[0]}" if errors else "")
            repo.set_status(self.session, self.experiment, ExperimentStatus.failed, error=message)
        return True

    # --- launch -----------------------------------------------------------
    def _launch(self) -> None:
        running = sum(trial.state == "running" for trial in self.trials)
        seeds = len(self.plan.request.seeds)
        dataset = self.session.get(Dataset, self.experiment.dataset_id)
        while running < self.plan.request.budget.max_parallel and len(self.trials) < self.experiment.trials_total:
            active = job_repo.count_active_jobs(self.session, tenant_id=self.experiment.tenant_id)
            if active + seeds > self.settings.max_concurrent_jobs_per_tenant:
                break  # the tenant's job cap: the reaper's next pass tries again
            study = self.study()
            trial = _orphan(study, known={t.number for t in self.trials}) or study.ask()
            params = suggest(trial, self.plan.space)
            specs, problems = self.plan.trial_specs(params, settings=self.settings, dataset=dataset)
            if not self._within_budget(specs):
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
                self.experiment.trials_total = len(self.trials)  # budget spent: finish with what ran
                self.session.flush()
                break
            self.trials.append(self._record(study, trial.number, params, specs, problems))
            running += not problems
        if running and self.experiment.status == ExperimentStatus.queued:
            repo.set_status(self.session, self.experiment, ExperimentStatus.running)
        if not running:
            self._finished()

    def _within_budget(self, specs: list) -> bool:
        budget = self.plan.request.budget.max_epochs_total
        if budget is None:
            return True
        used = sum(job.epochs for jobs in self.jobs.values() for job in jobs)
        return used + sum(spec.epochs for spec in specs) <= budget

    def _record(self, study: optuna.Study, number: int, params: dict, specs: list, problems: list) -> ExperimentTrial:
        if problems:
            message = "; ".join(f"{'.'.join(map(str, path))}: {text}" for path, text in problems)
            study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            return repo.add_trial(
                self.session,
                experiment_id=self.experiment.id,
                number=number,
                params=params,
                state="failed",
                error=message,
            )
        row = repo.add_trial(
            self.session, experiment_id=self.experiment.id, number=number, params=params, state="running"
        )
        for spec in specs:
            job = job_repo.create_job(
                self.session,
                tenant_id=self.experiment.tenant_id,
                spec=spec,
                idempotency_key=None,
                request_hash=None,
                experiment_id=self.experiment.id,
                trial=number,
            )
            self.jobs[number].append(job)
            self.report.job_ids.append(job.id)
        self.report.launched.append(number)
        return row


def _orphan(study: optuna.Study, *, known: set[int]) -> optuna.trial.Trial | None:
    """A trial Optuna handed out whose jobs were never committed (a crash after ``ask``): reuse it."""
    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if frozen.number not in known:
            return optuna.trial.Trial(study, frozen._trial_id)
    return None


def _failure_message(failed: list[Job]) -> str:
    for job in failed:
        if job.error_message:
            return f"job {job.id} {JobStatus(job.status).value}: {job.error_message}"
    return "; ".join(f"job {job.id} {JobStatus(job.status).value}" for job in failed) or "no objective value on val"


def _send(session_factory: sessionmaker[Session], celery_app: Celery, job_id: str) -> None:
    try:
        enqueue_job(celery_app, job_id)
    except Exception:  # the broker's errors vary; the job is queued in the database and the reaper re-sends it
        logger.warning("could not enqueue job %s; the reaper will re-send it", job_id, exc_info=True)
        return
    with transaction(session_factory) as session:
        job_repo.mark_enqueued(session, job_id=job_id, now=utcnow())


def experiment_of(settings: Settings, *, job_id: str) -> str | None:
    """The experiment a job is a trial of, or None."""
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with make_session_factory(engine)() as session:
            return session.scalar(select(Job.experiment_id).where(Job.id == job_id))
    finally:
        engine.dispose()
