"""The store, cache and broadcast API as a user writes it; checked by mypy, never run."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from keyguard import AsyncKeyManager, CircuitBreaker, KeyManager, LastUsedRecorder
from keyguard.stores import AsyncKeyStore, CachedKeyStore, KeyStore
from keyguard.stores.redis_broadcast import RedisRevocationBroadcast
from keyguard.stores.sql import SQLKeyStore, default_database_url, keys_table, metadata
from keyguard.testing import (
    CANNOT_FAIL,
    AsyncGCRARateLimiterContract,
    AsyncKeyStoreContract,
    AsyncRateLimiterContract,
    GCRARateLimiterContract,
    KeyStoreContract,
    RateLimiterContract,
)


def sync_app() -> KeyManager:
    store = SQLKeyStore(default_database_url())
    store.create_schema()
    broadcast = RedisRevocationBroadcast.from_environment()
    cached: KeyStore = CachedKeyStore(store, ttl=5.0, broadcast=broadcast)
    return KeyManager(cached, last_used=60.0)


async def async_app() -> AsyncKeyManager:
    store = SQLKeyStore(
        "postgresql://app@db/keys",
        schema="auth",
        connect_timeout=0.3,
        statement_timeout=0.2,
        pool_timeout=0.1,
        circuit=CircuitBreaker(failure_threshold=5, reset_timeout=1.0, name="keys"),
    )
    await store.acreate_schema()
    broadcast = RedisRevocationBroadcast("redis://localhost:6379/0", channel="myapp:revoked")
    cached: AsyncKeyStore = CachedKeyStore(store, broadcast=broadcast, stale_ttl=10.0)
    return AsyncKeyManager(cached, last_used=LastUsedRecorder(30.0))


def alembic_env() -> list[sa.MetaData]:
    mine = sa.MetaData()
    table: sa.Table = keys_table(mine, "api_keys", schema="auth")
    del table
    return [mine, metadata]


class MyLimiterTests(RateLimiterContract, GCRARateLimiterContract):
    """A third party's limiter under both suites (its ``limiter`` fixture left out)."""


class MyAsyncLimiterTests(AsyncRateLimiterContract, AsyncGCRARateLimiterContract):
    """The async flavour."""


class MyStoreTests(KeyStoreContract, AsyncKeyStoreContract):
    """A store with no I/O: nothing underneath can fail."""

    @pytest.fixture
    def broken_store(self) -> object:
        return CANNOT_FAIL
