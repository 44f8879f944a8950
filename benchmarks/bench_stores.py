"""Key lookups on SQLite and PostgreSQL, with a cold and a warm lookup cache.

"cold" clears the cache before every request, so each one pays the store
lookup; "warm" is the steady state of a key in use. The statement count is
measured with SQLAlchemy's ``before_cursor_execute`` event over 1000 warm
requests (the target is zero). PostgreSQL rows need the server named by
KEYGUARD_TEST_POSTGRES_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _harness import Row, time_async, time_sync

from keyguard import AsyncKeyManager, KeyManager, StorageError
from keyguard.stores import CachedKeyStore
from keyguard.stores.sql import SQLKeyStore

GROUP = "stores"
WARM_REQUESTS = 1000


def _count_statements(engine: sa.Engine, run: Any, requests: int) -> float:
    statements = 0

    def count(*args: Any) -> None:
        nonlocal statements
        statements += 1

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(requests):
            run()
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    return statements / requests


def _rows_for(label: str, store: SQLKeyStore) -> Iterator[Row]:
    cache = CachedKeyStore(store)
    manager = KeyManager(cache)
    token = manager.create("bench").token
    key_id = manager.list("bench")[0].key_id
    assert manager.authenticate(token)

    yield Row(
        GROUP, f"{label}: store.get (one SELECT on the key)", time_sync(lambda: store.get(key_id))
    )

    def cold() -> object:
        cache.clear()
        return manager.authenticate(token)

    yield Row(GROUP, f"{label}: authenticate, cold cache", time_sync(cold))
    yield Row(
        GROUP, f"{label}: authenticate, warm cache", time_sync(lambda: manager.authenticate(token))
    )
    yield Row(
        GROUP,
        f"{label}: SQL statements per request, warm cache",
        _count_statements(store.engine, lambda: manager.authenticate(token), WARM_REQUESTS),
        unit="stmt/req",
        note="target 0",
    )
    yield Row(
        GROUP,
        f"{label}: SQL statements per request, cold cache",
        _count_statements(store.engine, cold, 100),
        unit="stmt/req",
    )

    async def async_rows() -> list[Row]:
        acache = CachedKeyStore(store)
        amanager = AsyncKeyManager(acache)
        assert await amanager.authenticate(token)

        async def acold() -> object:
            acache.clear()
            return await amanager.authenticate(token)

        rows = [
            Row(GROUP, f"{label}: async store.aget", await time_async(lambda: store.aget(key_id))),
            Row(GROUP, f"{label}: async authenticate, cold cache", await time_async(acold)),
            Row(
                GROUP,
                f"{label}: async authenticate, warm cache",
                await time_async(lambda: amanager.authenticate(token)),
            ),
        ]
        await store.aclose()
        return rows

    yield from asyncio.run(async_rows())
    store.close()


def rows() -> Iterator[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLKeyStore(f"sqlite:///{Path(tmp) / 'bench.db'}")
        store.create_schema()
        yield from _rows_for("SQLite file", store)

    url = os.environ.get(
        "KEYGUARD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    schema = f"kg_bench_{uuid.uuid4().hex[:12]}"
    pg = SQLKeyStore(url, schema=schema)
    try:
        pg.create_schema()
    except StorageError as exc:
        yield Row(GROUP, "PostgreSQL", float("nan"), note=f"skipped: {exc}")
        return
    try:
        yield from _rows_for("PostgreSQL", pg)
    finally:
        with pg.engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        pg.close()
