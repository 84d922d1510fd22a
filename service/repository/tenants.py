"""Tenants and their API keys. Functions flush but never commit: the caller owns the transaction."""

from __future__ import annotations

import logging

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.auth import generate_api_key, hash_api_key, hashes_match, key_prefix
from service.models import ApiKey, Tenant, utcnow
from service.repository.rows import changed_one_row

logger = logging.getLogger(__name__)


def get_or_create_tenant(session: Session, *, name: str) -> Tenant:
    """The tenant called ``name``, created if it does not exist yet."""
    if not name or len(name) > 200:
        raise ValueError(f"tenant name must be 1..200 characters, got {name!r}")
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
    return tenant


def create_api_key(session: Session, *, tenant_id: str) -> tuple[ApiKey, str]:
    """A new key for the tenant: the row and the plaintext (returned once, never stored)."""
    plaintext = generate_api_key()
    return _add_key(session, tenant_id=tenant_id, plaintext=plaintext), plaintext


def ensure_api_key(session: Session, *, tenant_name: str, plaintext: str) -> ApiKey:
    """Make sure ``plaintext`` is a live key of ``tenant_name`` (idempotent bootstrap).

    A key that exists for the tenant is returned as is; a revoked one stays
    revoked (a leaked key must not come back because a restart still has the
    variable set) and a warning is logged. A key that belongs to another
    tenant is an operator error and raises ValueError.
    """
    if not plaintext:
        raise ValueError("bootstrap API key must not be empty")
    tenant = get_or_create_tenant(session, name=tenant_name)
    existing = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_api_key(plaintext)))
    if existing is None:
        return _add_key(session, tenant_id=tenant.id, plaintext=plaintext)
    if existing.tenant_id != tenant.id:
        raise ValueError(f"the bootstrap API key already belongs to another tenant than {tenant_name!r}")
    if existing.revoked_at is not None:
        logger.warning("the bootstrap API key (id %s) is revoked and stays revoked", existing.id)
    return existing


def authenticate(session: Session, *, plaintext: str) -> ApiKey | None:
    """The live key matching ``plaintext``; None for unknown or revoked keys."""
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_api_key(plaintext)))
    if key is None or key.revoked_at is not None or not hashes_match(key.key_hash, plaintext):
        return None
    return key


def list_api_keys(session: Session, *, tenant_name: str | None = None) -> list[tuple[ApiKey, str]]:
    """Every key with its tenant's name, oldest first, optionally for one tenant."""
    query = select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id)
    if tenant_name is not None:
        query = query.where(Tenant.name == tenant_name)
    rows = session.execute(query.order_by(ApiKey.created_at, ApiKey.id)).all()
    return [(key, name) for key, name in rows]


def revoke_api_key(session: Session, *, key_id: str) -> bool:
    """Revoke a key by id; False when no live key has that id."""
    return changed_one_row(
        session,
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False),
    )


def _add_key(session: Session, *, tenant_id: str, plaintext: str) -> ApiKey:
    key = ApiKey(tenant_id=tenant_id, prefix=key_prefix(plaintext), key_hash=hash_api_key(plaintext))
    session.add(key)
    session.flush()
    return key
