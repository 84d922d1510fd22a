"""No shared disk: the API and each worker on a data dir of their own, sharing only PostgreSQL, Redis and S3.

The object store is moto's standalone S3 server over real HTTP (see
tests/s3_support.py). A worker host dies mid-job and another host resumes
the job from its checkpoint in the bucket; the object store goes away
during training (a cut TCP proxy in front of it: the server itself keeps its
objects in memory) and the job rides it out, or fails with a clear reason
once the retry budget is spent; a checkpoint object corrupted in the bucket
is caught by its sha256 and the job starts over rather than resume from it.
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from chaos_support import TcpProxy
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from service.models import JobStatus

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(300)]
METRICS_TOKEN = "chaos-operator-metrics-token"


@pytest.fixture
def s3_cluster(cluster, moto_server):
    """Factory: ``s3_cluster(**settings)`` -> a cluster whose blob store is a fresh bucket on the S3 server."""
    from service.storage.s3 import S3BlobStore

    def make(**settings: object):
        bucket = moto_server.new_bucket()
        store = S3BlobStore(bucket=bucket, prefix="blobs", endpoint_url=moto_server.endpoint_url)
        return cluster(store=store, storage_env=moto_server.env(bucket=bucket), **settings)

    return make


@pytest.fixture
def s3_proxy(moto_server):
    """A cuttable TCP proxy in front of the S3 server: an outage without losing the objects."""
    proxy = TcpProxy(target_port=moto_server.port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()


def _files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _checkpointed(after: int = 0):
    return lambda row: row.status == JobStatus.running and row.checkpoint_epoch > after


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((28, 28), 200, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _start(world, *, worker_host: str = "a", **worker_options):
    world.start_redis()
    world.start_api(wait=False, host="api")
    worker = world.start_worker(host=worker_host, **worker_options)
    world.wait_api()
    return worker


def test_the_whole_flow_with_api_and_worker_on_separate_disks(s3_cluster):
    world = s3_cluster(metrics_token=METRICS_TOKEN)
    worker = _start(world)
    dataset = world.upload()
    assert len(world.store.list(f"datasets/{dataset}")) == 7  # six arrays and meta.json, in the bucket
    job = world.submit(dataset, epochs=2)
    world.wait_final(job)
    row = world.assert_trained_once(job, epochs=2)

    card = world.http.get(f"/v1/jobs/{job}/artifacts/model_card.json")
    assert card.status_code == 200
    with world.store.open_read(f"jobs/{job}/artifacts/model_card.json") as handle:
        assert card.content == handle.read()
    predicted = world.http.post(f"/v1/models/{row.model_id}/predict", files={"files": ("x.png", _png(), "image/png")})
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["predictions"][0]["label"] in ("0", "1")
    # Neither host kept a file: the upload and the run's staging folders are gone, no blob lives on a disk.
    for host in ("api", "a"):
        assert _files(world.host_dir(host)) == [], host
    _check_metrics_after_one_job(world)
    job_lines = [line for line in worker.log().splitlines() if f"job {job}:" in line]
    assert job_lines and all(f"[job={job}]" in line for line in job_lines)  # every worker line names its job


def _check_metrics_after_one_job(world) -> None:
    """A scrape of the API names the one job, its epochs, the requests and the predict pass."""
    response = world.http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200, response.text
    found = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return found.get((name, frozenset(labels.items())), -1.0)

    assert value("rarefit_jobs", state="succeeded") == 1 and value("rarefit_jobs", state="running") == 0
    assert value("rarefit_job_duration_seconds_count") == 1 and value("rarefit_epoch_duration_seconds_count") == 2
    assert value("rarefit_http_requests_total", route="/v1/datasets", method="POST", status="201") == 1
    assert value("rarefit_http_requests_total", route="/v1/jobs", method="POST", status="202") == 1
    predict_route = "/v1/models/{model_id}/predict"
    assert value("rarefit_http_requests_total", route=predict_route, method="POST", status="200") == 1
    assert value("rarefit_predict_batch_size_count") == 1 and value("rarefit_predict_batch_size_sum") == 1
    assert value("rarefit_model_cache_lookups_total", result="miss") == 1
    assert value("rarefit_queue_depth", queue="train") == 0


def test_a_worker_host_killed_mid_job_is_resumed_from_its_checkpoint_on_another_host(s3_cluster):
    world = s3_cluster(checkpoint_seconds=0)
    first = _start(world)
    job = world.submit(world.upload(), epochs=8)
    world.wait_row(job, _checkpointed(), what="the first checkpoint in the bucket")

    first.kill()  # host A is gone, with whatever it had staged
    killed = world.row(job)
    assert world.store.exists(killed.checkpoint_key)
    second = world.start_worker(host="b")
    world.wait_final(job, timeout=120)
    row = world.assert_trained_once(job, epochs=8)
    assert row.attempts == 2
    assert f"resuming after epoch {killed.checkpoint_epoch}" in second.log()
    assert _files(world.host_dir("b")) == []


def test_an_object_store_outage_during_training_is_ridden_out(s3_cluster, s3_proxy, moto_server):
    world = s3_cluster(checkpoint_seconds=0, storage_retry_seconds=60)
    through_proxy = {**world.storage_env, "RAREFIT_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_proxy.port}"}
    worker = _start(world, storage=through_proxy)
    job = world.submit(world.upload(), epochs=8)
    seen = world.wait_row(job, _checkpointed(), what="the first checkpoint")

    s3_proxy.cut()
    world.wait_row(job, lambda row: row.progress_epoch > seen.progress_epoch + 1, what="training on during the outage")
    time.sleep(2)
    s3_proxy.restore()
    world.wait_final(job, timeout=120)
    world.assert_trained_once(job, epochs=8)
    assert "object store error, retrying" in worker.log()


def test_an_object_store_outage_past_the_retry_budget_fails_the_job_clearly(s3_cluster, s3_proxy):
    world = s3_cluster(checkpoint_seconds=0, storage_retry_seconds=2)
    through_proxy = {**world.storage_env, "RAREFIT_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_proxy.port}"}
    _start(world, storage=through_proxy)
    job = world.submit(world.upload(), epochs=30)
    world.wait_row(job, _checkpointed(), what="the first checkpoint")

    s3_proxy.cut()
    row = world.wait_final(job, timeout=90)
    assert (row.status, row.error_type) == (JobStatus.failed, "storage_unavailable")
    assert row.error_message.startswith("the object store stayed unreachable for 2 s")
    assert "127.0.0.1" not in row.error_message  # the endpoint stays in the operator's log
    assert world.job(job)["error"]["type"] == "storage_unavailable"


def test_a_corrupted_checkpoint_object_is_caught_by_its_hash_and_the_job_starts_over(s3_cluster):
    world = s3_cluster(checkpoint_seconds=0)
    first = _start(world)
    job = world.submit(world.upload(), epochs=6)
    world.wait_row(job, _checkpointed(), what="the first checkpoint")
    first.kill()
    killed = world.row(job)

    with world.store.open_read(killed.checkpoint_key) as handle:
        data = bytearray(handle.read())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, as bit rot or a bad copy would leave
    world.store.write(killed.checkpoint_key, bytes(data))
    second = world.start_worker(host="b")
    world.wait_final(job, timeout=120)
    world.assert_trained_once(job, epochs=6)
    log = second.log()
    assert "checkpoint unusable" in log and f"expected {killed.checkpoint_sha256}" in log
    assert "starting over" in log and "resuming after epoch" not in log
