"""The broker side of job execution: one Celery configuration for API, reaper and worker.

The broker carries only "run job X" (task ``rarefit.train_job`` with the job
id); the database is the truth. The choices below follow from that:

- **Early acknowledgement** (``task_acks_late=False``). The message is acked
  when the worker takes it, before training starts. Exactly-once execution
  comes from the database lease (``service.repository.leases.claim_job``: an
  atomic ``UPDATE … WHERE status='queued'``), not from the broker, so no
  unacked message lives during a job that may run for hours, and Redis'
  ``visibility_timeout`` can never hand a running job to a second worker.
  A worker that dies mid-job loses its message on purpose: its lease expires
  and the reaper (``service.reaper``) re-queues the job and sends a new one.
- **One job per child, one child per GPU**: ``worker_prefetch_multiplier=1``
  and, on Redis, ``worker_disable_prefetch=True`` (with early ack the slot
  frees as the job starts, so otherwise a busy worker would reserve the next
  message while another worker sits idle),
  ``worker_max_tasks_per_child=1`` (a fresh child per job, so CUDA state and
  fragmented memory never leak into the next job; CUDA is touched only in the
  child, never in the forking parent), concurrency 1 per GPU.
- ``task_reject_on_worker_lost=False``: never redeliver from the broker; the
  reaper decides from the database, counting attempts.
- No result backend (``task_ignore_result=True``): outcomes live in the job row.
- Redis ``visibility_timeout`` is 12 h anyway, so even a message that somehow
  stays unacked is not redelivered while its job could still be running.
- The embedded default broker is kombu's SQLAlchemy transport on a SQLite
  file, polled every 0.1 s (kombu's default is 1 s) so a job starts promptly after it is sent.
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any

from amqp.exceptions import ChannelError
from celery import Celery
from kombu.transport.sqlalchemy import Channel as _SQLAlchemyChannel
from kombu.transport.sqlalchemy import Transport as _SQLAlchemyTransport
from sqlalchemy.exc import SADeprecationWarning
from sqlalchemy.orm import configure_mappers

from service.config import Settings

logger = logging.getLogger(__name__)

TASK_NAME = "rarefit.train_job"
QUEUE = "train"
# Experiments advance on a light queue of their own, so a step never waits behind a training job.
ADVANCE_TASK = "rarefit.advance_experiment"
CONTROL_QUEUE = "control"
VISIBILITY_TIMEOUT_SECONDS = 12 * 3600
SQLITE_POLL_SECONDS = 0.1
# A failing broker must not hang an API request: a few quick retries, then raise.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.3, "interval_max": 1.0}


_MAPPERS_LOCK = threading.Lock()
_mappers_configured = False


class _SQLBrokerChannel(_SQLAlchemyChannel):
    def _configure_entity_tablenames(self, opts):
        super()._configure_entity_tablenames(opts)  # declares kombu's Queue/Message classes
        _configure_kombu_mappers()


def _configure_kombu_mappers() -> None:
    # kombu's models use lazy="noload", deprecated in SQLAlchemy 2.1: the warning
    # fires once, when the mappers are configured, so configure them here quietly.
    global _mappers_configured
    with _MAPPERS_LOCK:
        if _mappers_configured:
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*noload.*", category=SADeprecationWarning)
            configure_mappers()
        _mappers_configured = True


class SQLBrokerTransport(_SQLAlchemyTransport):
    """kombu's SQLAlchemy transport, polling every 0.1 s instead of every 1 s.

    The polling interval cannot go through ``broker_transport_options``: this
    transport hands every unknown option to ``sqlalchemy.create_engine``.
    """

    Channel = _SQLBrokerChannel
    polling_interval = SQLITE_POLL_SECONDS


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings shared by every process (see the module docstring for why)."""
    config: dict[str, Any] = {
        "broker_connection_retry_on_startup": True,
        # A worker waits out a broker outage of any length (Celery's default gives up after 100 tries,
        # about 48 min at its 30 s cap, and the worker exits); the jobs are safe in the database meanwhile.
        "broker_connection_max_retries": None,
        "broker_connection_timeout": 4.0,
        "task_default_queue": QUEUE,
        "task_routes": {TASK_NAME: {"queue": QUEUE}, ADVANCE_TASK: {"queue": CONTROL_QUEUE}},
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": False,
        "task_reject_on_worker_lost": False,
        "task_ignore_result": True,
        "result_backend": None,
        "task_publish_retry_policy": PUBLISH_RETRY_POLICY,
        "worker_prefetch_multiplier": 1,
        "worker_max_tasks_per_child": 1,
        "worker_concurrency": 1,
        # Off by default (an event per task state for nobody to read); on for Flower (docs/operations.md).
        "worker_send_task_events": settings.celery_task_events,
        "task_send_sent_event": settings.celery_task_events,
        "worker_disable_rate_limits": True,
        "enable_utc": True,
    }
    config.update(_broker_config(settings))
    return config


def _broker_config(settings: Settings) -> dict[str, Any]:
    url = settings.celery_broker_url
    if settings.is_embedded:
        # "sqla+sqlite:///…" names kombu's transport; we pass our subclass instead.
        sqlite = url.startswith("sqla+sqlite")
        return {
            "broker_url": url.split("+", 1)[1],
            "broker_transport": f"{__name__}:SQLBrokerTransport",
            # create_engine arguments: on SQLite, wait for the file lock instead of failing.
            "broker_transport_options": {"connect_args": {"timeout": 30}} if sqlite else {},
            # SQLite has no fanout exchange for remote control.
            "worker_enable_remote_control": False,
        }
    return {
        "broker_url": url,
        "broker_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT_SECONDS},
        # Early ack frees the prefetch slot as a job starts; without this a busy worker would
        # reserve the next message while an idle worker waits (Redis only in Celery 5.7).
        "worker_disable_prefetch": True,
    }


def make_celery(settings: Settings) -> Celery:
    """A Celery client for the API and the reaper: it sends by task name and never imports workers."""
    app = Celery("rarefit", set_as_current=False)
    app.config_from_object(celery_config(settings))
    return app


def enqueue_job(celery_app: Celery, job_id: str) -> None:
    """Send "run job ``job_id``" to the ``train`` queue (after the job row is committed).

    Raises the broker's error after a short retry; the job stays queued in the
    database and the reaper re-sends it later.
    """
    if not isinstance(job_id, str) or not job_id:
        raise ValueError(f"job_id must be a non-empty str, got {job_id!r}")
    celery_app.send_task(TASK_NAME, args=[job_id], queue=QUEUE, ignore_result=True)
    logger.debug("enqueued job %s", job_id)


def enqueue_advance(celery_app: Celery, experiment_id: str, *, expires_seconds: float | None = None) -> None:
    """Send "advance experiment ``experiment_id``" to the control queue (duplicates are harmless).

    ``expires_seconds`` lets a periodic sender drop its stale messages instead of piling them up
    while no control worker runs.
    """
    if not isinstance(experiment_id, str) or not experiment_id:
        raise ValueError(f"experiment_id must be a non-empty str, got {experiment_id!r}")
    celery_app.send_task(
        ADVANCE_TASK, args=[experiment_id], queue=CONTROL_QUEUE, ignore_result=True, expires=expires_seconds
    )


NOT_FOUND = "404"  # the reply code kombu's virtual transports give an unknown queue (a str there)


def queue_depths(celery_app: Celery) -> dict[str, int]:
    """Messages waiting in each of our queues, by name (raises if the broker is unreachable)."""
    depths: dict[str, int] = {}
    with celery_app.connection_for_read() as connection:
        for queue in (QUEUE, CONTROL_QUEUE):
            with connection.channel() as channel:
                try:
                    depths[queue] = int(channel.queue_declare(queue=queue, passive=True).message_count)
                except ChannelError as exc:
                    if str(exc.reply_code) != NOT_FOUND:
                        raise
                    depths[queue] = 0  # Redis forgets an emptied queue: nothing is waiting in it
    return depths


def check_broker(celery_app: Celery, *, timeout: float = 3.0) -> None:
    """Raise if the broker cannot be reached within about ``timeout`` seconds."""
    with celery_app.connection_for_write(connect_timeout=timeout) as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
        # A real round trip: declaring the (existing) queue reads its size from the server.
        connection.default_channel.queue_declare(queue=QUEUE, durable=True, auto_delete=False)
