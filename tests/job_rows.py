"""Tenant, dataset and job rows straight through the ORM (for worker-side and live-event tests)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from service.db import transaction
from service.ingest import DecodedDataset, store_canonical
from service.models import Dataset, Job, Model, Tenant
from service.storage import BlobStore

_serial = itertools.count()


def add_tenant(session, *, name: str) -> Tenant:
    tenant = Tenant(name=name)
    session.add(tenant)
    session.flush()
    return tenant


def add_dataset(
    session,
    *,
    tenant_id: str,
    name: str = "d",
    class_names: Sequence[str] = ("a", "b"),
    image_shape: Sequence[int] = (8, 8, 1),
    imbalance_ratio: float = 1.0,
    blob_prefix: str = "datasets/x",
    splits: Mapping[str, Any] | None = None,
) -> Dataset:
    """A dataset row with no blobs behind it unless the caller stores them (see ``add_stored_dataset``);
    ``splits`` is the upload's per-split summary (``{}`` when the test never reads it)."""
    dataset = Dataset(
        tenant_id=tenant_id,
        name=name,
        format="npz",
        num_classes=len(class_names),
        class_names=list(class_names),
        image_shape=list(image_shape),
        splits=dict(splits or {}),
        imbalance_ratio=imbalance_ratio,
        blob_prefix=blob_prefix,
    )
    session.add(dataset)
    session.flush()
    return dataset


def add_stored_dataset(
    session, decoded: DecodedDataset, *, tenant_id: str, name: str, imbalance_ratio: float, store: BlobStore, scratch
) -> Dataset:
    """A dataset row whose canonical blobs are really in ``store``, under the prefix its id names."""
    dataset = add_dataset(
        session,
        tenant_id=tenant_id,
        name=name,
        class_names=decoded.class_names,
        image_shape=decoded.image_shape,
        imbalance_ratio=imbalance_ratio,
        blob_prefix="",
    )
    dataset.blob_prefix = f"datasets/{dataset.id}"
    store_canonical(decoded, store=store, prefix=dataset.blob_prefix, scratch=scratch)
    return dataset


def make_job(factory, **values) -> str:
    with transaction(factory) as session:
        tenant = add_tenant(session, name=f"t-{next(_serial)}-{id(values)}")
        dataset = add_dataset(session, tenant_id=tenant.id)
        job = Job(tenant_id=tenant.id, dataset_id=dataset.id, spec={}, epochs=3, **values)
        session.add(job)
        session.flush()
        return job.id


def add_model(
    session,
    job: Job,
    *,
    class_names: Sequence[str],
    input_shape: Sequence[int],
    blob_prefix: str,
    arch: str = "tiny",
    threshold: float | None = None,
    positive_class: int | None = None,
    metrics: dict | None = None,
) -> str:
    """The model row a succeeded job registers (its artefacts already under ``blob_prefix``)."""
    model = Model(
        tenant_id=job.tenant_id,
        job_id=job.id,
        arch=arch,
        class_names=list(class_names),
        input_shape=list(input_shape),
        threshold=threshold,
        positive_class=positive_class,
        metrics=metrics or {},
        blob_prefix=blob_prefix,
        size_bytes=0,
    )
    session.add(model)
    session.flush()
    job.model_id = model.id
    return model.id
