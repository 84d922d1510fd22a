"""The worker's Celery app: ``celery -A workers.celery_app worker -Q train -c <GPUs>``.

Same configuration as the API's client (``service.queue.celery_config``; the
module docstring there explains early ack, prefetch 1, one task per child).
Celery's command line needs a module-level ``app``; building it reads the
settings but opens no database or broker connection.

torch and torchvision are imported here, in the forking parent, so each fresh
child (``worker_max_tasks_per_child=1``) starts a job without paying for the
imports again. The parent only imports them: CUDA is first touched in the
child (``workers.lifecycle.run.resolve_device``), since a CUDA context does not
survive ``fork``. Importing more of torch here is not safe: preloading the
modules ``torch.export`` loads on first use made every forked child on a GPU
host fail with "Cannot re-initialize CUDA in forked subprocess", though no
Python-level CUDA call was seen (``benchmarks/RESULTS.md`` tells that run).

Small jobs share a device: ``RAREFIT_JOBS_PER_GPU=N`` runs ``N`` pool
processes per device slot, each an ordinary job (its own claim, lease,
heartbeat, checkpoints and cancel flag), so packing keeps every reliability
property of single jobs. Each packed process gets an even share of the CPU
cores for its torch threads, so packed jobs never oversubscribe the cores.

On a warm or cold shutdown the parent forwards SIGTERM to the pool children
running a job, so a running job checkpoints, hands itself back to the queue and exits
promptly instead of holding the shutdown for the rest of its training
(``docker stop`` signals only the parent).
"""

from __future__ import annotations

import logging
import os
import signal

import torch  # preload for the children; never call torch.cuda.* here
import torchvision  # noqa: F401
from celery import Celery, signals
from celery.worker import state as worker_state

from service.config import Settings, get_settings
from service.logs import configure_logging
from service.queue import celery_config

logger = logging.getLogger(__name__)


def make_worker_app(settings: Settings) -> Celery:
    """A Celery app for the worker with the shared configuration and the ``rarefit.train_job`` task."""
    app = Celery("rarefit", include=["workers.tasks"])
    app.config_from_object(celery_config(settings))
    app.rarefit_settings = settings  # read by the task; the env-built default otherwise
    return app


_pool = {"processes": 1}  # set in the parent once the worker knows its pool size; forked children inherit it


def threads_per_job(*, cores: int, slots: int) -> int:
    """Intra-op threads for one job when ``slots`` jobs share ``cores``: an even share, at least one."""
    return max(1, cores // max(1, slots))


@signals.celeryd_after_setup.connect
def _note_pool_size(sender=None, instance=None, **_kwargs) -> None:
    _pool["processes"] = int(getattr(instance, "concurrency", None) or 1)


@signals.worker_process_init.connect
def _share_cores(**_kwargs) -> None:
    # Packed jobs (RAREFIT_JOBS_PER_GPU > 1, or several devices) each get an even share of the cores,
    # so N jobs never run N × cores threads; a lone job keeps torch's default (every core).
    slots = _pool["processes"]
    if slots > 1:
        threads = threads_per_job(cores=os.cpu_count() or 1, slots=slots)
        torch.set_num_threads(threads)
        logger.info("pool process %d: %d torch threads (%d jobs share the cores)", os.getpid(), threads, slots)


@signals.setup_logging.connect
def _configure_logging(**_kwargs) -> None:
    # Connected, this replaces Celery's own set-up: its records go through ours (text or JSON, job ids).
    configure_logging(get_settings())


@signals.worker_shutting_down.connect
def _forward_shutdown(sig=None, how=None, **_kwargs) -> None:
    # Only children running a job: an idle child is stopped by the pool itself.
    busy = {request.worker_pid for request in worker_state.active_requests if request.worker_pid}
    for pid in busy:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


app = make_worker_app(get_settings())
