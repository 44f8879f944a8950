"""Tail latency: p50, p99 and the longest of the ASGI middleware's added time per request,
with 100,000 keys in random use.

Every request carries one of 100,000 keys, drawn at random, through the full
stack (keyguard's middleware with a ``MemoryRateLimiter``, in front of a
bare ASGI app), one after the other on one event loop. Each request is timed
twice: wall time, and the event-loop thread's own CPU time
(``time.thread_time``), which leaves out the machine's other processes and
is the time the loop could serve nothing else. The rows are those times less
the median of the bare app's, timed the same way.

- the memory store;
- the memory store with the default token memo (10,000 tokens), which the
  100,000 keys overflow: each request of a key it forgot replaces an entry;
- SQLite behind a ``CachedKeyStore`` sized to hold every key (filled before,
  and trusted for the run: a miss is a SQL lookup, timed in the stores rows);
- the memory store while a bcrypt key is being verified all along: a second
  task sends it again and again, with a new wrong secret each time, so that
  every one costs a bcrypt check (in the slow-hash worker thread).

Every bounded structure is sized to hold the keys in use, as a server with
100,000 active keys would size it (the limiter's ``max_keys``, the cache, the
token memo), except in the default-memo row. Each stack first serves every
request once, untimed: the rows are a server's steady state, every key seen
before.

The target: p99 at most twice the p50, and nothing longer than 1 ms on the
loop thread. Each stack is timed three times: with the garbage collector
running as it does by default; after ``gc.freeze()``, which moves what was
made at start-up (the 100,000 records, the cache) out of its view, as a
server does once loaded; and with the collector paused, which leaves
keyguard's own work.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from _harness import Row
from bench_middleware import BASE_SCOPE, REQUEST

GROUP = "tail latency"
KEYS = 100_000
REQUESTS = 50_000
#: bcrypt's usual cost: about a quarter of a second per check.
BCRYPT_ROUNDS = 12


async def _bare(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _receive() -> dict[str, Any]:
    return REQUEST


def _sender(statuses: list[int]) -> Callable[[dict[str, Any]], Any]:
    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    return send


def _scope(token: str, client: str = "10.0.0.7") -> dict[str, Any]:
    return {
        **BASE_SCOPE,
        "client": (client, 51234),
        "headers": [(b"authorization", f"Bearer {token}".encode())],
    }


async def _timed(app: Any, scopes: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Wall and loop-thread µs of each request, one after the other."""
    statuses: list[int] = []
    send = _sender(statuses)
    wall, cpu = [], []
    perf, thread = time.perf_counter, time.thread_time
    for scope in scopes:
        started, started_cpu = perf(), thread()
        await app(dict(scope), _receive, send)
        cpu.append((thread() - started_cpu) * 1e6)
        wall.append((perf() - started) * 1e6)
        await asyncio.sleep(0)  # a turn of the loop between two requests, as a server's
    if statuses.count(200) != len(scopes):
        raise RuntimeError(f"not every request was admitted: {set(statuses)}")
    return wall, cpu


def _percentiles(values: list[float], base: float) -> tuple[float, float, float]:
    ordered = sorted(v - base for v in values)
    return (
        ordered[len(ordered) // 2],
        ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        ordered[-1],
    )


def _rows_of(
    name: str, wall: list[float], cpu: list[float], bare: tuple[list[float], list[float]]
) -> Iterator[Row]:
    p50, p99, longest = _percentiles(wall, statistics.median(bare[0]))
    yield Row(GROUP, f"{name}: p50 (wall)", p50)
    yield Row(GROUP, f"{name}: p99 (wall)", p99, note=f"p99/p50 = {p99 / p50:.2f}; target <= 2")
    yield Row(GROUP, f"{name}: longest (wall)", longest)
    _, cpu99, cpu_longest = _percentiles(cpu, statistics.median(bare[1]))
    yield Row(GROUP, f"{name}: p99 on the loop thread", cpu99)
    yield Row(GROUP, f"{name}: longest on the loop thread", cpu_longest, note="target <= 1000")


def _tokens_and_records() -> tuple[list[str], list[Any]]:
    from keyguard import HmacSecretHasher, generate_key
    from keyguard._records import KeyRecord
    from keyguard.testing import sample_record

    hasher = HmacSecretHasher()
    template = sample_record(scopes=frozenset({"billing:read"}), expires_at=None, rate_limit=None)
    tokens, records = [], []
    for _ in range(KEYS):
        key = generate_key()
        tokens.append(key.token)
        records.append(
            KeyRecord(
                key_id=key.key_id,
                owner=template.owner,
                name="",
                environment=key.environment,
                secret_hash=hasher.hash(key.secret),
                scopes=template.scopes,
                created_at=template.created_at,
                metadata={},
            )
        )
    return tokens, records


def _middleware(manager: Any, **options: Any) -> Any:
    from keyguard import KeyguardMiddleware, MemoryRateLimiter, MiddlewareOptions

    limited = MiddlewareOptions(rate_limit="1000000000/minute", **options)
    return KeyguardMiddleware(_bare, manager, limited, MemoryRateLimiter(max_keys=2 * KEYS))


def _sqlite_store(records: list[Any], directory: str) -> Any:
    import sqlalchemy as sa

    from keyguard.stores._sql_schema import record_values
    from keyguard.stores.sql import SQLKeyStore

    store = SQLKeyStore(f"sqlite:///{os.path.join(directory, 'keys.db')}")
    store.create_schema()
    with store.engine.begin() as conn:
        conn.execute(sa.insert(store.table), [dict(record_values(r)) for r in records])
    return store


async def _measure() -> Iterator[Row]:
    from passlib.context import CryptContext

    from keyguard import AsyncKeyManager, KeyFormat, PasslibHasher, TokenMemo
    from keyguard.stores import CachedKeyStore, MemoryKeyStore

    tokens, records = _tokens_and_records()
    rng = random.Random(7)
    scopes = [_scope(tokens[rng.randrange(KEYS)]) for _ in range(REQUESTS)]
    rows: list[Row] = []

    memory = AsyncKeyManager(MemoryKeyStore(records), token_memo=TokenMemo(2 * KEYS))
    default_memo = AsyncKeyManager(MemoryKeyStore(records))
    bcrypt = PasslibHasher(CryptContext(schemes=["bcrypt"], bcrypt__rounds=BCRYPT_ROUNDS))
    slow = AsyncKeyManager(
        MemoryKeyStore(records),
        key_format=KeyFormat(accept_split_keys=True),
        legacy_hashers=[bcrypt],
        token_memo=TokenMemo(2 * KEYS),
    )
    await slow.import_key("legacy-client", bcrypt.hash("the-right-secret"), owner="acme")
    with tempfile.TemporaryDirectory() as directory:
        cache = CachedKeyStore(_sqlite_store(records, directory), max_size=2 * KEYS, ttl=3600.0)
        for record in records:
            cache.get(record.key_id)  # filled through the sync side, a query each
        cached = AsyncKeyManager(cache, token_memo=TokenMemo(2 * KEYS))
        stacks = {
            "memory store": (_middleware(memory), _timed),
            "memory store, default memo": (_middleware(default_memo), _timed),
            "SQLite + cache": (_middleware(cached), _timed),
            "memory + bcrypt": (_middleware(slow, failure_limit=None), _with_bcrypt),
        }
        try:
            for app, run in stacks.values():  # warm: every key has been seen once, untimed
                await run(app, scopes)
            for mode in ("", ", gc.freeze()", ", GC paused"):
                gc.collect()
                if mode == ", gc.freeze()":
                    gc.freeze()
                elif mode == ", GC paused":
                    gc.unfreeze()
                    gc.disable()
                bare = await _timed(_bare, scopes[: REQUESTS // 4])
                for name, (app, run) in stacks.items():
                    wall, cpu = await run(app, scopes)
                    rows.extend(_rows_of(f"{name}{mode}", wall, cpu, bare))
        finally:
            gc.enable()
            gc.unfreeze()
            for manager in (memory, default_memo, slow, cached):
                await manager.aclose()
    return iter(rows)


async def _with_bcrypt(app: Any, scopes: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """The requests of ``scopes`` while a bcrypt check is always in flight beside them."""
    done = False
    checks = 0

    async def keep_hashing() -> None:
        nonlocal checks
        statuses: list[int] = []
        send = _sender(statuses)
        while not done:
            wrong = f"legacy-client.wrong-{checks}"
            await app(_scope(wrong, client="10.9.0.1"), _receive, send)
            checks += 1

    hashing = asyncio.create_task(keep_hashing())
    await asyncio.sleep(0)
    try:
        timed = await _timed(app, scopes)
    finally:
        done = True
        await hashing
    if checks < 2:
        raise RuntimeError(f"only {checks} bcrypt checks ran beside the requests")
    return timed


def rows() -> Iterator[Row]:
    return asyncio.run(_measure())
