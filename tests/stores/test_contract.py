"""The backend contract suite from keyguard.testing, against every store keyguard ships."""

from __future__ import annotations

from typing import Any

import pytest

from keyguard.stores import CachedKeyStore, MemoryKeyStore
from keyguard.stores.sql import SQLKeyStore
from keyguard.testing import AsyncKeyStoreContract, FakeClock, KeyStoreContract


class TestMemoryStore(KeyStoreContract, AsyncKeyStoreContract):
    @pytest.fixture
    def store(self) -> MemoryKeyStore:
        return MemoryKeyStore()

    @pytest.fixture
    def async_store(self) -> MemoryKeyStore:
        return MemoryKeyStore()


class TestSQLiteStore(KeyStoreContract, AsyncKeyStoreContract):
    @pytest.fixture
    def store(self, sqlite_store: SQLKeyStore) -> SQLKeyStore:
        return sqlite_store

    @pytest.fixture
    def async_store(self, async_sqlite_store: SQLKeyStore) -> SQLKeyStore:
        return async_sqlite_store


@pytest.mark.postgres
class TestPostgresStore(KeyStoreContract, AsyncKeyStoreContract):
    @pytest.fixture
    def store(self, pg_store: SQLKeyStore) -> SQLKeyStore:
        return pg_store

    @pytest.fixture
    def async_store(self, async_pg_store: SQLKeyStore) -> SQLKeyStore:
        return async_pg_store


class TestCachedStore(KeyStoreContract, AsyncKeyStoreContract):
    """The cache must keep the contract: every write is visible to the next read."""

    @pytest.fixture
    def store(self, sqlite_store: SQLKeyStore) -> Any:
        return CachedKeyStore(sqlite_store, clock=FakeClock().monotonic)

    @pytest.fixture
    def async_store(self, async_sqlite_store: SQLKeyStore) -> Any:
        return CachedKeyStore(async_sqlite_store, clock=FakeClock().monotonic)
