from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sa = pytest.importorskip("sqlalchemy")

from keyguard.stores.sql import SQLKeyStore  # noqa: E402 (after the extra check)


def unique_schema() -> str:
    return f"kg_test_{uuid.uuid4().hex[:16]}"


def drop_schema(postgres_url: str, schema: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'keys.db'}"


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A fresh PostgreSQL schema for one test, dropped afterwards."""
    schema = unique_schema()
    yield schema
    drop_schema(postgres_url, schema)


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[SQLKeyStore]:
    store = SQLKeyStore(sqlite_url)
    store.create_schema()
    yield store
    store.close()


@pytest.fixture
def pg_store(postgres_url: str, pg_schema: str) -> Iterator[SQLKeyStore]:
    store = SQLKeyStore(postgres_url, schema=pg_schema)
    store.create_schema()
    yield store
    store.close()


@pytest.fixture
async def async_sqlite_store(sqlite_url: str) -> AsyncIterator[SQLKeyStore]:
    store = SQLKeyStore(sqlite_url)
    await store.acreate_schema()
    yield store
    await store.aclose()


@pytest.fixture
async def async_pg_store(postgres_url: str, pg_schema: str) -> AsyncIterator[SQLKeyStore]:
    store = SQLKeyStore(postgres_url, schema=pg_schema)
    await store.acreate_schema()
    yield store
    await store.aclose()
