"""OpenAPI operation ids are the route functions' names: unique and readable in generated clients."""

from __future__ import annotations

import re


def test_operation_ids_are_clean_and_unique(api_client):
    operations = [op for path in api_client.get("/openapi.json").json()["paths"].values() for op in path.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", i) for i in ids), ids
    assert {"submit_job", "get_job", "job_events", "upload_dataset", "predict", "create_webhook"} <= set(ids)
