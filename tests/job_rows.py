"""A job row with its own tenant and dataset, straight through the ORM (for worker-side tests)."""

from __future__ import annotations

import itertools

from service.db import transaction
from service.models import Dataset, Job, Tenant

_serial = itertools.count()


def make_job(factory, **values) -> str:
    with transaction(factory) as session:
        tenant = Tenant(name=f"t-{next(_serial)}-{id(values)}")
        session.add(tenant)
        session.flush()
        dataset = Dataset(
            tenant_id=tenant.id,
            name="d",
            format="npz",
            num_classes=2,
            class_names=["a", "b"],
            image_shape=[8, 8, 1],
            splits={},
            imbalance_ratio=1.0,
            blob_prefix="datasets/x",
        )
        session.add(dataset)
        session.flush()
        job = Job(tenant_id=tenant.id, dataset_id=dataset.id, spec={}, epochs=3, **values)
        session.add(job)
        session.flush()
        return job.id
