"""Test helper: which tenant an API key belongs to (a module, not conftest, so tests can import it:
several folders have a conftest.py and ``import conftest`` would pick whichever loaded first)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from service.repository import tenants


def tenant_id_of(factory: sessionmaker[Session], headers: dict[str, str]) -> str:
    plaintext = headers["Authorization"].removeprefix("Bearer ")
    with factory() as session:
        return tenants.authenticate(session, plaintext=plaintext).tenant_id
