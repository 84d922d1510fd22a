"""API keys: hashing properties, bearer authentication, revocation, the bootstrap key."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest

from service.auth import KeyCache, generate_api_key, hash_api_key, key_prefix, looks_like_api_key
from service.db import transaction
from service.main import BOOTSTRAP_TENANT, _bootstrap_key
from service.models import ApiKey, Tenant
from service.repository import tenants


def test_generated_keys_are_unique_prefixed_and_256_bit():
    keys = {generate_api_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith("rf_") and len(key) == 3 + 43  # 32 bytes -> 43 urlsafe base64 chars
        assert looks_like_api_key(key)


def test_hash_is_sha256_hex_and_prefix_never_reveals_the_key():
    key = generate_api_key()
    assert hash_api_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert key_prefix(key) == key[:10]
    assert len(key_prefix("short-key")) <= len("short-key") // 3
    with pytest.raises(TypeError, match="bytes"):
        hash_api_key(b"rf_x")  # type: ignore[arg-type]


def test_repository_authenticates_live_keys_only(api_db):
    with transaction(api_db) as session:
        tenant = tenants.get_or_create_tenant(session, name="acme")
        row, plaintext = tenants.create_api_key(session, tenant_id=tenant.id)
    with api_db() as session:
        stored = session.get(ApiKey, row.id)
        assert stored.key_hash == hash_api_key(plaintext) and plaintext not in (stored.prefix, stored.key_hash)
        assert tenants.authenticate(session, plaintext=plaintext).id == row.id
        assert tenants.authenticate(session, plaintext=plaintext + "x") is None
    with transaction(api_db) as session:
        assert tenants.revoke_api_key(session, key_id=row.id)
        assert not tenants.revoke_api_key(session, key_id=row.id)  # already revoked
    with api_db() as session:
        assert tenants.authenticate(session, plaintext=plaintext) is None


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer rf_unknown-key"},
        {"Authorization": "Bearer " + "x" * 5000},
        {"Authorization": "Bearer rf_\u00e9t\u00e9".encode("latin-1")},
    ],
    ids=["missing", "empty", "basic", "unknown", "huge", "non-ascii"],
)
def test_bad_credentials_answer_401_problem_with_challenge(api_client, headers):
    response = api_client.get("/v1/datasets", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 401 and body["title"] == "Unauthorized" and body["detail"]
    assert "x" * 100 not in response.text


def _revoke(factory, headers) -> None:
    plaintext = headers["Authorization"].removeprefix("Bearer ")
    with transaction(factory) as session:
        key = tenants.authenticate(session, plaintext=plaintext)
        assert tenants.revoke_api_key(session, key_id=key.id)


def test_revoked_key_answers_401_once_the_auth_cache_entry_expires(api_client, api_db, alpha):
    assert api_client.get("/v1/jobs", headers=alpha).status_code == 200
    _revoke(api_db, alpha)
    cache = api_client.app.state.key_cache
    assert cache.ttl_seconds == 5.0  # the default: revocation takes effect within 5 s
    assert api_client.get("/v1/jobs", headers=alpha).status_code == 200  # still trusted from the cache
    cache.ttl_seconds = 0.05
    cache._entries.clear()  # re-cached below with the short lifetime
    asyncio.run(cache.resolve(alpha["Authorization"].removeprefix("Bearer "), _found("stale")))
    time.sleep(0.1)
    assert api_client.get("/v1/jobs", headers=alpha).status_code == 401


def test_without_the_auth_cache_a_revoked_key_fails_at_once(api_client, api_db, alpha):
    api_client.app.state.key_cache.ttl_seconds = 0.0
    api_client.app.state.key_cache._entries.clear()
    assert api_client.get("/v1/jobs", headers=alpha).status_code == 200
    _revoke(api_db, alpha)
    assert api_client.get("/v1/jobs", headers=alpha).status_code == 401


def _found(tenant_id):
    return lambda: asyncio.sleep(0, result=tenant_id)


def test_the_auth_cache_holds_hashes_never_keys():
    cache = KeyCache(ttl_seconds=60)

    async def scenario():
        stored = await cache.resolve("rf_secret-key", _found("tenant-1"))
        cached = await cache.resolve("rf_secret-key", _found("not asked"))
        other = await cache.resolve("rf_other", _found(None))
        return stored, cached, other

    assert asyncio.run(scenario()) == ("tenant-1", "tenant-1", None)
    assert "rf_secret-key" not in repr(cache._entries)


def test_bootstrap_key_works_and_bootstrap_is_idempotent(api_client, api_db, api_settings, bootstrap_headers):
    assert api_client.get("/v1/models", headers=bootstrap_headers).status_code == 200
    _bootstrap_key(api_db, api_settings)  # a second start-up (or a second uvicorn worker)
    _bootstrap_key(api_db, api_settings)
    with api_db() as session:
        tenant = session.query(Tenant).filter_by(name=BOOTSTRAP_TENANT).one()
        assert session.query(ApiKey).filter_by(tenant_id=tenant.id).count() == 1


def test_bootstrap_keeps_a_revoked_key_revoked(api_client, api_db, api_settings, bootstrap_headers):
    with transaction(api_db) as session:
        key = tenants.authenticate(session, plaintext=api_settings.bootstrap_api_key.get_secret_value())
        tenants.revoke_api_key(session, key_id=key.id)
    _bootstrap_key(api_db, api_settings)
    assert api_client.get("/v1/models", headers=bootstrap_headers).status_code == 401


def test_bootstrap_key_of_another_tenant_is_refused(api_db):
    with transaction(api_db) as session:
        tenant = tenants.get_or_create_tenant(session, name="other")
        _, plaintext = tenants.create_api_key(session, tenant_id=tenant.id)
    with pytest.raises(ValueError, match="another tenant"), transaction(api_db) as session:
        tenants.ensure_api_key(session, tenant_name=BOOTSTRAP_TENANT, plaintext=plaintext)


def test_concurrent_misses_share_one_lookup_and_unknown_keys_are_not_cached():
    cache = KeyCache(ttl_seconds=60)
    calls = []

    async def lookup(result):
        calls.append(result)
        await asyncio.sleep(0.05)
        return result

    async def scenario():
        found = await asyncio.gather(*(cache.resolve("rf_k", lambda: lookup("tenant-1")) for _ in range(10)))
        again = await cache.resolve("rf_k", lambda: lookup("never called"))
        unknown = [await cache.resolve("rf_x", lambda: lookup(None)) for _ in range(2)]
        return found, again, unknown

    found, again, unknown = asyncio.run(scenario())
    assert found == ["tenant-1"] * 10 and again == "tenant-1" and unknown == [None, None]
    assert calls == ["tenant-1", None, None]  # one shared lookup; an unknown key is asked again


def test_a_failed_shared_lookup_fails_every_waiter_and_is_retried():
    cache = KeyCache(ttl_seconds=60)

    async def broken():
        await asyncio.sleep(0.01)
        raise ConnectionError("database down")

    async def scenario():
        results = await asyncio.gather(*(cache.resolve("rf_k", broken) for _ in range(3)), return_exceptions=True)
        recovered = await cache.resolve("rf_k", _found("tenant-1"))
        return results, recovered

    results, recovered = asyncio.run(scenario())
    assert all(isinstance(r, ConnectionError) for r in results) and recovered == "tenant-1"


def test_a_full_auth_cache_makes_room_for_one_key_and_keeps_the_hot_ones():
    cache = KeyCache(ttl_seconds=60, max_entries=2)
    asked = []

    def lookup(tenant_id):
        asked.append(tenant_id)
        return _found(tenant_id)()

    async def scenario():
        for key in ("rf_a", "rf_b", "rf_a", "rf_c", "rf_a", "rf_c", "rf_b"):
            await cache.resolve(key, lambda key=key: lookup(key.removeprefix("rf_")))

    asyncio.run(scenario())
    # c's arrival evicts only b, the least recently used; a and c stay cached, b is asked again.
    assert asked == ["a", "b", "c", "b"]
