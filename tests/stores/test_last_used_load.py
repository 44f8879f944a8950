"""A flush of 100,000 last-used times runs beside the requests, never inside one.

Each test starts the flush of 100,000 pending keys, times requests while it
runs, and then checks that the flush was still running when the last of
them had returned: a request that waited for the flush would have ended
after it. The times themselves are asserted loosely (the test machine is
shared); the numbers are in ``benchmarks/bench_last_used.py``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from keyguard import AsyncKeyManager, KeyguardMiddleware, KeyguardWSGIMiddleware, KeyManager
from keyguard._last_used import FLUSH_CHUNK, LOOP_FLUSH_CHUNK
from keyguard.stores import CachedKeyStore, MemoryKeyStore
from keyguard.stores.sql import SQLKeyStore
from keyguard.testing import sample_record
from tests._http_drivers import Request, asgi_call, wsgi_call

PENDING = 100_000
REQUESTS = 20
#: What one request may take on a busy 2-core machine while a flush runs beside it
#: (the flush itself takes seconds).
REQUEST_BOUND = 0.25
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def app(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


class CountedSQLStore(SQLKeyStore):
    """The SQL store, counting the chunks of last-used times written."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.chunks = 0
        self.started = threading.Event()

    def touch(self, last_used: Mapping[str, datetime]) -> None:
        self.started.set()
        super().touch(last_used)
        self.chunks += 1


class CountedMemoryStore(MemoryKeyStore):
    """The memory store, counting the chunks of last-used times written."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks = 0

    def touch(self, last_used: Mapping[str, datetime]) -> None:
        super().touch(last_used)
        self.chunks += 1


def test_requests_never_wait_for_a_flush_of_100k_keys_wsgi(sqlite_url: str) -> None:
    store = CountedSQLStore(sqlite_url)
    store.create_schema()
    manager = KeyManager(CachedKeyStore(store, max_size=10))
    token = manager.create("acme").token
    middleware = KeyguardWSGIMiddleware(app, manager)
    request = Request(headers=[(b"authorization", f"Bearer {token}".encode())])
    recorder = manager.last_used
    assert recorder is not None
    # 100,000 pending times (restore() wakes no writer); the next use starts the flush.
    recorder.restore({f"k{i:07d}": T0 for i in range(PENDING)})
    total = -(-(PENDING + 1) // FLUSH_CHUNK)
    started = time.perf_counter()
    assert wsgi_call(middleware, request).status == 200
    assert store.started.wait(30)
    durations = []
    for _ in range(REQUESTS):
        begun = time.perf_counter()
        assert wsgi_call(middleware, request).status == 200
        durations.append(time.perf_counter() - begun)
    assert store.chunks < total, "the flush ended before the requests: nothing was shown"
    manager.close()  # waits for the flush: nothing noted is lost
    flushed = time.perf_counter() - started
    assert store.chunks >= total  # and the requests' own uses, noted during the flush
    assert len(recorder) == 0
    assert max(durations) < min(REQUEST_BOUND, flushed / 4), (max(durations), flushed)


@pytest.mark.anyio
async def test_requests_never_wait_for_a_flush_of_100k_keys_asgi() -> None:
    store = CountedMemoryStore()
    record = sample_record()
    for i in range(PENDING):
        store.add(replace(record, key_id=f"k{i:07d}"))
    manager = AsyncKeyManager(store)
    token = (await manager.create("acme")).token
    middleware = KeyguardMiddleware(asgi_app, manager)
    request = Request(headers=[(b"authorization", f"Bearer {token}".encode())])
    recorder = manager.last_used
    assert recorder is not None
    recorder.restore({f"k{i:07d}": T0 for i in range(PENDING)})
    total = -(-(PENDING + 1) // LOOP_FLUSH_CHUNK)
    assert (await asgi_call(middleware, request)).status == 200  # starts the flush
    durations = []
    for _ in range(REQUESTS):
        begun = time.perf_counter()
        await asyncio.sleep(0)  # a turn of the loop, as between two requests of a server
        assert (await asgi_call(middleware, request)).status == 200
        durations.append(time.perf_counter() - begun)
    assert 0 < store.chunks < total, "the flush did not run beside the requests"
    await manager.aclose()
    assert store.chunks >= total
    assert all(r.last_used_at == T0 for r in store.list_keys() if r.owner != "acme")
    assert max(durations) < REQUEST_BOUND, max(durations)
