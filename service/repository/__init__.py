"""Keyword-only, tenant-scoped queries; one module per kind of row.

Every query on a tenant-owned row takes ``tenant_id`` and filters by it, so
another tenant's id simply finds nothing. Functions flush but never commit.
The worker-side job transitions are in ``service.repository.leases``.
"""

from service.repository import datasets, jobs, models, tenants
from service.repository.jobs import JobConflict

__all__ = ["JobConflict", "datasets", "jobs", "models", "tenants"]
