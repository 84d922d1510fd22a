"""API keys: generation, hashing and constant-time comparison.

Keys are ``rf_`` + 32 random bytes (urlsafe base64), so each has 256 bits of
entropy. For secrets that strong a single fast hash (sha256) is the standard
storage choice, as for GitHub and Stripe tokens: a slow password hash
(bcrypt, argon2) protects low-entropy human passwords from guessing and adds
nothing here but latency on every request. The hash is unique-indexed, so a
lookup is one index probe; the stored and computed hashes are then compared
with ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable

from service.ttl_cache import TtlCache

KEY_PREFIX = "rf_"
MAX_KEY_LENGTH = 200
_PREFIX_CHARS = 10


def generate_api_key() -> str:
    """A new random key; shown to its owner once and stored only as its hash."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """sha256 hex digest of the key (64 characters)."""
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, got {type(key).__name__}")
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_prefix(key: str) -> str:
    """The first 10 characters of a key: enough to recognise it in a listing, never to log in.

    A short operator-chosen bootstrap key shows at most a third of itself.
    """
    return key[: min(_PREFIX_CHARS, len(key) // 3)]


def looks_like_api_key(key: str) -> bool:
    """Cheap shape check before touching the database.

    Generated keys start with ``rf_``, but an operator's bootstrap key may be
    any printable ASCII string, so only length and alphabet are checked.
    """
    return 0 < len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable() and " " not in key


def hashes_match(stored_hash: str, key: str) -> bool:
    """Constant-time comparison of a stored hash with the hash of ``key``."""
    return hmac.compare_digest(stored_hash.encode("ascii"), hash_api_key(key).encode("ascii"))


class KeyCache(TtlCache[str, str]):
    """Recently authenticated keys → tenant id, each for ``ttl_seconds``.

    Every ``/v1`` call authenticates; a poll loop would otherwise pay a key
    lookup per request. Entries are keyed by the key's sha256 (never the key),
    so a revocation takes effect within ``ttl_seconds`` (0 disables caching).
    """

    async def resolve(self, plaintext: str, lookup: Callable[[], Awaitable[str | None]]) -> str | None:
        """The cached tenant of ``plaintext``, else ``await lookup()``, cached when found."""
        return await super().resolve(hash_api_key(plaintext), lookup)
