"""Writing the last-used times of 1,000, 10,000 and 100,000 keys on SQLite, beside requests.

Before, the request that completed an interval wrote the whole batch itself,
and waited for it: the "flush" rows are what it waited (13 ms, 132 ms and
1.7 s on the machine of the issue). Now a background writer writes it (a
thread for ``KeyManager``, 500 keys a transaction; a task for
``AsyncKeyManager``, 100 keys an ``atouch``, the loop serving requests
between two), and requests go on: the other rows time the requests made
while the flush runs, one after another, each with what comes before a
request in a server: for the thread, a ``time.sleep(0)``, which lets the GIL
go as a server's thread does while it waits on its socket (a loop that never
let it go would hand it to the writer only every switch interval, 5 ms); for
the task, a turn of the loop. The keys exist in the table, and the lookups are
served by a ``CachedKeyStore``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from _harness import Row

GROUP = "last-used flush (SQLite)"
SIZES = (1_000, 10_000, 100_000)
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _store_class() -> Any:
    from keyguard.stores.sql import SQLKeyStore

    class CountingStore(SQLKeyStore):
        """The SQL store, counting the keys whose last use it wrote."""

        written = 0

        def touch(self, last_used: Mapping[str, datetime]) -> None:
            super().touch(last_used)
            self.written += len(last_used)

        async def atouch(self, last_used: Mapping[str, datetime]) -> None:
            await super().atouch(last_used)
            self.written += len(last_used)

    return CountingStore


def _table(directory: str) -> tuple[str, list[str]]:
    """A SQLite file with the largest number of keys, and their key_ids."""
    import sqlalchemy as sa

    from keyguard.stores._sql_schema import record_values
    from keyguard.stores.sql import SQLKeyStore
    from keyguard.testing import sample_record

    url = f"sqlite:///{os.path.join(directory, 'keys.db')}"
    store = SQLKeyStore(url)
    store.create_schema()
    template = sample_record()
    key_ids = [f"bench{i:07d}" for i in range(max(SIZES))]
    rows = []
    for key_id in key_ids:
        values = dict(record_values(template))
        values["key_id"] = key_id
        rows.append(values)
    with store.engine.begin() as conn:
        conn.execute(sa.insert(store.table), rows)
    store.close()
    return url, key_ids


def _quantiles(durations: list[float]) -> tuple[float, float, float]:
    ordered = sorted(durations)
    return (
        ordered[len(ordered) // 2],
        ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        ordered[-1],
    )


def _sync(url: str, key_ids: list[str], size: int) -> tuple[float, list[float]]:
    from keyguard import KeyManager
    from keyguard.stores import CachedKeyStore

    store = _store_class()(url)
    manager = KeyManager(CachedKeyStore(store))
    token = manager.create("bench").token
    assert manager.last_used is not None
    manager.last_used.restore(dict.fromkeys(key_ids[:size], T0))  # pending, no writer woken
    started = time.perf_counter()
    assert manager.authenticate(token)  # the use that starts the writer
    durations = []
    while store.written < size:
        begun = time.perf_counter()
        time.sleep(0)  # the GIL goes, as while a server's thread waits for its next request
        assert manager.authenticate(token)
        durations.append((time.perf_counter() - begun) * 1e6)
    flushed = time.perf_counter() - started
    manager.close()
    return flushed, durations


async def _async(url: str, key_ids: list[str], size: int) -> tuple[float, list[float]]:
    from keyguard import AsyncKeyManager
    from keyguard.stores import CachedKeyStore

    store = _store_class()(url)
    cache = CachedKeyStore(store)
    manager = AsyncKeyManager(cache)
    issued = await manager.create("bench")
    token = issued.token
    await cache.aget(issued.record.key_id)  # cached, without a use that starts the writer
    assert manager.last_used is not None
    manager.last_used.restore(dict.fromkeys(key_ids[:size], T0))  # pending, no writer woken
    started = time.perf_counter()
    assert await manager.authenticate(token)  # the use that starts the writer
    durations = []
    while store.written < size:
        begun = time.perf_counter()
        await asyncio.sleep(0)
        assert await manager.authenticate(token)
        durations.append((time.perf_counter() - begun) * 1e6)
    flushed = time.perf_counter() - started
    await manager.aclose()
    return flushed, durations


def rows() -> Iterator[Row]:
    with tempfile.TemporaryDirectory() as directory:
        url, key_ids = _table(directory)
        for label, run in (
            ("thread (KeyManager)", lambda size: _sync(url, key_ids, size)),
            ("task (AsyncKeyManager)", lambda size: asyncio.run(_async(url, key_ids, size))),
        ):
            for size in SIZES:
                flushed, durations = run(size)
                p50, p99, longest = _quantiles(durations)
                name = f"{label}, {size:,} keys"
                yield Row(GROUP, f"{name}: the flush", flushed * 1e3, unit="ms")
                yield Row(
                    GROUP,
                    f"{name}: requests meanwhile, p50",
                    p50,
                    note=f"{len(durations)} requests",
                )
                yield Row(GROUP, f"{name}: requests meanwhile, p99", p99)
                yield Row(GROUP, f"{name}: requests meanwhile, longest", longest)
