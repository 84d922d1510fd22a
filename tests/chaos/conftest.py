"""Fixtures for the fault tests: a real cluster of processes, and the oracles to judge what survived.

A ``Cluster`` is a fresh PostgreSQL database (or the embedded SQLite files
for ``rarefit serve``), a private ``redis-server`` on a free port, the API
(``rarefit api``: uvicorn + the reaper thread) and workers (``rarefit worker``)
as separate processes, each in its own process group and always stopped at
teardown (SIGTERM, wait, SIGKILL the group and its descendants). Short leases
make recovery quick: lease 4 s, heartbeat 1 s, reaper every 1 s.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from availability import unavailable
from chaos_support import Proc, TcpProxy, pick_port, synthetic_npz, wait_for
from sqlalchemy import func, select

from service.db import make_engine, make_session_factory
from service.migrate import upgrade_head
from service.models import Artifact, EpochMetrics, Job, JobStatus, Model
from service.storage import BlobStore, LocalBlobStore

REPO_ROOT = Path(__file__).resolve().parents[2]
API_KEY = "rf_chaos_default_tenant_key_0123456789"
ARTEFACTS = ["metrics.json", "model.onnx", "model.pt2", "model_card.json", "scores.npz", "weights.safetensors"]
FAST = {"lease_seconds": 4, "heartbeat_seconds": 1, "reaper_interval_seconds": 1, "requeue_after_seconds": 30}
SPEC = {
    "model": {"arch": "simple_cnn"},
    "batch_size": 32,
    "augment": {"rotation": 0, "scale": None},
    "optim": {"lr": 0.01},
}
READY_TIMEOUT = 90.0


class Cluster:
    """The processes of one deployment plus direct database access for the test's oracles."""

    def __init__(
        self,
        *,
        root: Path,
        rarefit_cmd: list[str],
        database_url: str | None,
        store: BlobStore | None = None,
        storage_env: dict[str, str] | None = None,
        **settings: object,
    ) -> None:
        """``store``/``storage_env``: a shared blob store (S3) and the environment that names it; without
        them every process uses the local store in the one data dir."""
        self.root, self.rarefit_cmd = root, rarefit_cmd
        self.data_dir = root / "data"
        self.data_dir.mkdir(parents=True)
        self.database_url = database_url or f"sqlite:///{self.data_dir / 'rarefit.db'}"
        upgrade_head(self.database_url)
        self.engine = make_engine(self.database_url)
        self.factory = make_session_factory(self.engine)
        self.store = store or LocalBlobStore(self.data_dir / "blobs")
        self.storage_env = dict(storage_env or {})
        self.embedded = database_url is None
        self.settings = {**FAST, **settings}
        self.redis_port, self.api_port = pick_port(), pick_port()
        self.redis: Proc | None = None
        self.api: Proc | None = None
        self.workers: list[Proc] = []
        self.procs: list[Proc] = []
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.api_port}", timeout=30.0, headers={"Authorization": f"Bearer {API_KEY}"}
        )

    # --- processes ------------------------------------------------------------
    def host_dir(self, host: str | None) -> Path:
        """The data dir of ``host`` (its own disk: scratch, nothing shared); the cluster's one by default."""
        if host is None:
            return self.data_dir
        path = self.root / f"host-{host}"
        path.mkdir(exist_ok=True)
        return path

    def env(
        self, *, database_url: str | None = None, host: str | None = None, storage: dict[str, str] | None = None
    ) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAREFIT_")}
        env.update(
            PYTHONUNBUFFERED="1",
            OMP_NUM_THREADS="1",
            RAREFIT_DATA_DIR=str(self.host_dir(host)),
            RAREFIT_BOOTSTRAP_API_KEY=API_KEY,
            RAREFIT_DEVICE="cpu",
        )
        if not self.embedded:
            env.update(
                RAREFIT_DATABASE_URL=database_url or self.database_url,
                RAREFIT_BROKER_URL=f"redis://127.0.0.1:{self.redis_port}/0",
            )
        env.update({f"RAREFIT_{name.upper()}": str(value) for name, value in self.settings.items()})
        env.update(self.storage_env if storage is None else storage)
        return env

    def _spawn(self, name: str, argv: list[str], **env_options: object) -> Proc:
        log = self.root / f"{name}-{len(self.procs)}.log"
        proc = Proc(name, argv, env=self.env(**env_options), log_path=log, cwd=REPO_ROOT)
        self.procs.append(proc)
        return proc

    def start_redis(self) -> Proc:
        """A private, empty ``redis-server`` (nothing on disk) on this cluster's port."""
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server is not on PATH")
        self.redis = self._spawn(
            "redis",
            [
                binary,
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
        )
        wait_for(self.redis_answers, timeout=20, what="redis-server to answer", logs=self.logs)
        return self.redis

    def redis_answers(self) -> bool:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.redis_port, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def start_api(self, *, wait: bool = True, host: str | None = None) -> Proc:
        argv = [*self.rarefit_cmd, "api", "--host", "127.0.0.1", "--port", str(self.api_port)]
        self.api = self._spawn("api", argv, host=host)
        if wait:
            self.wait_api()
        return self.api

    def start_serve(self) -> Proc:
        """``rarefit serve``: the API with its reaper, and an embedded worker it supervises."""
        self.api = self._spawn(
            "serve", [*self.rarefit_cmd, "serve", "--host", "127.0.0.1", "--port", str(self.api_port)]
        )
        self.wait_api()
        return self.api

    def through(self, proxy: TcpProxy) -> str:
        """This cluster's PostgreSQL URL, reached through ``proxy`` instead of directly."""
        if ":5432/" not in self.database_url:
            raise ValueError(f"expected a PostgreSQL URL on port 5432, got {self.database_url!r}")
        return self.database_url.replace(":5432/", f":{proxy.port}/")

    def start_worker(
        self,
        *,
        database_url: str | None = None,
        wait: bool = True,
        host: str | None = None,
        storage: dict[str, str] | None = None,
    ) -> Proc:
        """``rarefit worker``; ``host`` gives it a data dir of its own, ``storage`` its own storage environment."""
        worker = self._spawn(
            "worker", [*self.rarefit_cmd, "worker"], database_url=database_url, host=host, storage=storage
        )
        self.workers.append(worker)
        if wait:
            self.wait_worker(worker)
        return worker

    def wait_api(self) -> None:
        def ready() -> bool:
            assert self.api is not None and self.api.alive, f"the API exited\n{self.logs()}"
            try:
                return self.http.get("/readyz", timeout=2.0).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=READY_TIMEOUT, what="the API's /readyz", logs=self.logs, interval=0.3)

    def wait_worker(self, worker: Proc) -> None:
        def ready() -> bool:
            assert worker.alive, f"the worker exited\n{self.logs()}"
            return " ready." in worker.log()

        wait_for(ready, timeout=READY_TIMEOUT, what="the worker to be ready", logs=self.logs, interval=0.3)

    def logs(self, *, chars: int = 3000) -> str:
        return "\n".join(f"--- {p.log_path.name} ---\n{p.log()[-chars:]}" for p in self.procs)

    def close(self) -> None:
        # Workers first (a running job hands itself back through the database and broker), Redis last.
        order = {"worker": 0, "api": 1, "serve": 1, "redis": 2}
        for proc in sorted(reversed(self.procs), key=lambda p: order.get(p.name, 1)):
            proc.stop()
        self.http.close()
        self.engine.dispose()

    # --- HTTP -------------------------------------------------------------------
    def upload(self, *, train: tuple[int, int] = (480, 120)) -> str:
        body = synthetic_npz(train=train)
        response = self.http.post("/v1/datasets", files={"file": ("synthetic.npz", body, "application/octet-stream")})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def post_job(self, dataset_id: str, *, headers: dict[str, str] | None = None, **spec: object) -> httpx.Response:
        """``POST /v1/jobs`` with a small simple_cnn spec plus ``spec``."""
        return self.http.post("/v1/jobs", json={**SPEC, **spec, "dataset_id": dataset_id}, headers=headers)

    def submit(self, dataset_id: str, **spec: object) -> str:
        response = self.post_job(dataset_id, **spec)
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def job(self, job_id: str) -> dict:
        response = self.http.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    # --- the database, the truth --------------------------------------------------
    def row(self, job_id: str) -> Job:
        with self.factory() as session:
            return session.get(Job, job_id)

    def wait_row(self, job_id: str, predicate: Callable[[Job], bool], *, what: str, timeout: float = 60) -> Job:
        return wait_for(
            lambda: (row := self.row(job_id)) is not None and predicate(row) and row,
            timeout=timeout,
            what=f"job {job_id}: {what}",
            logs=self.logs,
        )

    def wait_final(self, job_id: str, *, timeout: float = 90) -> Job:
        return self.wait_row(
            job_id, lambda row: JobStatus(row.status).is_terminal, what="a final status", timeout=timeout
        )

    def epochs(self, job_id: str) -> list[int]:
        with self.factory() as session:
            query = select(EpochMetrics.epoch).where(EpochMetrics.job_id == job_id).order_by(EpochMetrics.epoch)
            return list(session.scalars(query))

    def model_count(self, job_id: str) -> int:
        with self.factory() as session:
            return session.scalar(select(func.count()).select_from(Model).where(Model.job_id == job_id))

    def artefacts(self, job_id: str) -> list[Artifact]:
        with self.factory() as session:
            return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)))

    def assert_trained_once(self, job_id: str, *, epochs: int) -> Job:
        """Succeeded, every epoch recorded once, one model, every artefact whole in the blob store."""
        job = self.row(job_id)
        assert job.status == JobStatus.succeeded, (job.status, job.error_type, job.error_message, self.logs())
        assert self.epochs(job_id) == list(range(1, epochs + 1)) and job.progress_epoch == epochs
        assert self.model_count(job_id) == 1 and job.model_id is not None
        stored = self.artefacts(job_id)
        assert [a.name for a in stored] == ARTEFACTS
        for artefact in stored:
            assert self.store.size(artefact.blob_key) == artefact.size, artefact.name
        metrics = next(a for a in stored if a.name == "metrics.json")
        with self.store.open_read(metrics.blob_key) as handle:
            history = json.load(handle)["history"]
        assert [record["epoch"] for record in history] == list(range(1, epochs + 1))
        return job


@pytest.fixture
def cluster(
    tmp_path: Path, new_postgres_url, rarefit_cmd: list[str], request: pytest.FixtureRequest
) -> Iterator[Callable[..., Cluster]]:
    """Factory: ``cluster(**settings)`` on a fresh PostgreSQL database, or ``cluster(embedded=True)``."""
    made: list[Cluster] = []

    def make(*, embedded: bool = False, **settings: object) -> Cluster:
        url = None if embedded else new_postgres_url()
        made.append(
            Cluster(root=tmp_path / f"cluster-{len(made)}", rarefit_cmd=rarefit_cmd, database_url=url, **settings)
        )
        return made[-1]

    yield make
    for number, item in enumerate(made):
        item.close()
        # pytest shows report sections with a failed test's report.
        request.node.add_report_section("teardown", f"cluster {number} logs", item.logs(chars=6000))


@pytest.fixture(scope="module")
def running_cluster(tmp_path_factory: pytest.TempPathFactory, new_postgres_url, rarefit_cmd) -> Iterator[Cluster]:
    """One API + one worker + Redis shared by a module's tests that do not break them."""
    if sys.platform != "linux":
        pytest.skip("process groups and /proc are Linux-only")
    item = Cluster(root=tmp_path_factory.mktemp("cluster"), rarefit_cmd=rarefit_cmd, database_url=new_postgres_url())
    try:
        item.start_redis()
        item.start_api(wait=False)
        item.wait_worker(item.start_worker(wait=False))
        item.wait_api()
        yield item
    finally:
        item.close()


@pytest.fixture
def pg_proxy() -> Iterator[TcpProxy]:
    """A cuttable TCP proxy in front of the local PostgreSQL (127.0.0.1:5432)."""
    proxy = TcpProxy(target_port=5432)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()
