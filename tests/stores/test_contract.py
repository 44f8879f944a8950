"""The backend contract suite from keyguard.testing, against every store keyguard ships.

Each store also gets a broken twin for the failure checks: SQLite on a file that cannot be
opened, PostgreSQL on a closed port, the cache in front of either. The memory store has
no backend: it cannot fail (``CANNOT_FAIL``), which the suite holds it to (it does no I/O).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from keyguard.stores import CachedKeyStore, MemoryKeyStore
from keyguard.stores.sql import SQLKeyStore
from keyguard.testing import CANNOT_FAIL, AsyncKeyStoreContract, FakeClock, KeyStoreContract
from tests.redis_servers import free_port


def _unopenable_sqlite(tmp_path: Path) -> SQLKeyStore:
    """SQLite on a file in a directory that does not exist: every call fails to open it."""
    return SQLKeyStore(f"sqlite:///{tmp_path / 'no-such-directory' / 'keys.db'}")


def _join_failed_aiosqlite_threads(before: set[threading.Thread]) -> None:
    """Wait, with the test's event loop still open, for the worker threads of the aiosqlite
    connections that failed to open.

    aiosqlite 0.22 stops such a connection without awaiting the stop (``Connection._connect``
    calls ``stop()`` and drops its future), so its thread posts the result into the loop a
    moment later; once pytest has closed the loop, that raises "Event loop is closed" in the
    thread. The thread ends right after posting, so the join is short.
    """
    for thread in set(threading.enumerate()) - before:
        if "_connection_worker_thread" in thread.name:
            thread.join(timeout=5)


def _closed_port_postgres() -> SQLKeyStore:
    """PostgreSQL on a port nothing listens on: every call is refused at once."""
    return SQLKeyStore(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test")


class TestMemoryStore(KeyStoreContract, AsyncKeyStoreContract):
    @pytest.fixture
    def store(self) -> MemoryKeyStore:
        return MemoryKeyStore()

    @pytest.fixture
    def async_store(self) -> MemoryKeyStore:
        return MemoryKeyStore()

    @pytest.fixture
    def broken_store(self) -> object:
        return CANNOT_FAIL

    @pytest.fixture
    def async_broken_store(self) -> object:
        return CANNOT_FAIL


class TestSQLiteStore(KeyStoreContract, AsyncKeyStoreContract):
    @pytest.fixture
    def store(self, sqlite_store: SQLKeyStore) -> SQLKeyStore:
        return sqlite_store

    @pytest.fixture
    def async_store(self, async_sqlite_store: SQLKeyStore) -> SQLKeyStore:
        return async_sqlite_store

    @pytest.fixture
    def broken_store(self, tmp_path: Path) -> Iterator[SQLKeyStore]:
        store = _unopenable_sqlite(tmp_path)
        yield store
        store.close()

    @pytest.fixture
    async def async_broken_store(self, tmp_path: Path) -> AsyncIterator[SQLKeyStore]:
        before = set(threading.enumerate())
        store = _unopenable_sqlite(tmp_path)
        yield store
        await store.aclose()
        _join_failed_aiosqlite_threads(before)


@pytest.mark.postgres
class TestPostgresStore(KeyStoreContract, AsyncKeyStoreContract):
    @pytest.fixture
    def store(self, pg_store: SQLKeyStore) -> SQLKeyStore:
        return pg_store

    @pytest.fixture
    def async_store(self, async_pg_store: SQLKeyStore) -> SQLKeyStore:
        return async_pg_store

    @pytest.fixture
    def broken_store(self) -> Iterator[SQLKeyStore]:
        store = _closed_port_postgres()
        yield store
        store.close()

    @pytest.fixture
    async def async_broken_store(self) -> AsyncIterator[SQLKeyStore]:
        store = _closed_port_postgres()
        yield store
        await store.aclose()


class TestCachedStore(KeyStoreContract, AsyncKeyStoreContract):
    """The cache must keep the contract: every write is visible to the next read, and the
    failures of the store behind it reach the caller as StorageError."""

    @pytest.fixture
    def store(self, sqlite_store: SQLKeyStore) -> Any:
        return CachedKeyStore(sqlite_store, clock=FakeClock().monotonic)

    @pytest.fixture
    def async_store(self, async_sqlite_store: SQLKeyStore) -> Any:
        return CachedKeyStore(async_sqlite_store, clock=FakeClock().monotonic)

    @pytest.fixture
    def broken_store(self, tmp_path: Path) -> Iterator[Any]:
        inner = _unopenable_sqlite(tmp_path)
        yield CachedKeyStore(inner, clock=FakeClock().monotonic)
        inner.close()

    @pytest.fixture
    async def async_broken_store(self, tmp_path: Path) -> AsyncIterator[Any]:
        before = set(threading.enumerate())
        inner = _unopenable_sqlite(tmp_path)
        yield CachedKeyStore(inner, clock=FakeClock().monotonic)
        await inner.aclose()
        _join_failed_aiosqlite_threads(before)
