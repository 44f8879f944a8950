"""Rate limiting: keyguard's memory and Redis limiters beside Redis PING and ``limits``.

Every keyguard hit returns the decision and all the header values; a ``limits``
hit needs a second call (``get_window_stats``) for the same, so its rows time
both. Redis rows use ``KEYGUARD_BENCH_REDIS_URL`` (default
``redis://127.0.0.1:6379/15``) under a unique key prefix, deleted afterwards.

"commands/request" is the ``INFO commandstats`` delta over a burst of
requests, *including the commands a Lua script runs* (Redis counts those
too); "round trips/request" counts what the client sent. The commandstats
are server-wide: the lowest of three bursts is kept, so that another client
of the same server does not inflate the count.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from _harness import Row, time_async, time_sync

from keyguard.ratelimit import MemoryRateLimiter, Policy, rate_limit_headers

GROUP = "ratelimit"
REDIS_URL = os.environ.get("KEYGUARD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
BURST = 300  # requests per commandstats sample

# Never refused while measured: the cost of a hit, not of a refusal.
DEFAULT = Policy("default", quota=10**9, window=60)
ROUTE = Policy("route", quota=10**9, window=1)


def rows() -> Iterator[Row]:
    yield from memory_rows()
    yield from limits_memory_rows()
    try:
        import redis
    except ImportError:  # pragma: no cover - the bench runs with the dev extras
        yield Row(GROUP, "redis rows skipped: pip install 'keyguard-auth[redis]'", 0.0, "")
        return
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        yield Row(GROUP, f"redis rows skipped: {type(exc).__name__} at {REDIS_URL}", 0.0, "")
        return
    finally:
        client.close()
    yield from redis_rows()
    yield from limits_redis_rows()


def memory_rows() -> Iterator[Row]:
    limiter = MemoryRateLimiter()
    one, two = (DEFAULT,), (DEFAULT, ROUTE)
    yield Row(GROUP, "memory hit, 1 policy", time_sync(lambda: limiter.hit("key1", one)))
    yield Row(GROUP, "memory hit, 2 policies", time_sync(lambda: limiter.hit("key1", two)))
    yield Row(
        GROUP,
        "memory hit + rate_limit_headers, 1 policy",
        time_sync(lambda: rate_limit_headers(limiter.hit("key1", one))),
    )
    many = MemoryRateLimiter(max_keys=10_000)
    keys = [f"key{i}" for i in range(20_000)]
    position = iter(range(10**12))

    def rotating() -> object:
        return many.hit(keys[next(position) % 20_000], one)

    yield Row(
        GROUP,
        "memory hit, 1 policy, 20k keys over a 10k cap",
        time_sync(rotating),
        note="LRU eviction on every hit",
    )

    async def ahit() -> object:
        return await limiter.ahit("key1", one)

    yield Row(GROUP, "memory ahit, 1 policy", asyncio.run(time_async(ahit)))


def limits_memory_rows() -> Iterator[Row]:
    from limits import RateLimitItemPerMinute
    from limits.storage import MemoryStorage
    from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

    item = RateLimitItemPerMinute(10**6)
    for name, strategy in (
        ("moving-window", MovingWindowRateLimiter),
        ("fixed-window", FixedWindowRateLimiter),
    ):
        limiter = strategy(MemoryStorage())

        def hit_and_stats(limiter: Any = limiter) -> object:
            limiter.hit(item, "key1")
            return limiter.get_window_stats(item, "key1")

        yield Row(
            GROUP,
            f"limits memory {name}: hit + get_window_stats",
            time_sync(hit_and_stats, repeat=3),
        )
        limiter.storage.reset()


class _Counter:
    """Counts what redis-py sends: one packed send is one round trip."""

    sends = 0


def _counting_pool(redis: Any) -> Any:
    class CountingConnection(redis.Connection):  # type: ignore[name-defined,misc]
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            _Counter.sends += 1
            super().send_packed_command(command, check_health)

    return redis.ConnectionPool.from_url(REDIS_URL, connection_class=CountingConnection)


def _per_request(client: Any, request: Callable[[], object]) -> tuple[float, float, str]:
    """(commands/request from commandstats, round trips/request, per-command breakdown)."""

    def calls() -> dict[str, int]:
        return {
            name.removeprefix("cmdstat_"): int(stats["calls"])
            for name, stats in client.info("commandstats").items()
        }

    best: tuple[float, float, str] | None = None
    for _ in range(3):
        before = calls()
        sends = _Counter.sends
        for _ in range(BURST):
            request()
        sent = _Counter.sends - sends
        after = calls()
        delta = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
        delta["info"] = delta.get("info", 0) - 1  # the INFO that took `after`
        delta = {k: v for k, v in delta.items() if v > 0}
        total = sum(delta.values()) / BURST
        breakdown = " ".join(f"{k}={v / BURST:.2f}" for k, v in sorted(delta.items()))
        if best is None or total < best[0]:
            best = (total, sent / BURST, breakdown)
    assert best is not None
    return best


def redis_rows() -> Iterator[Row]:
    import redis

    from keyguard.ratelimit.redis import RedisRateLimiter

    prefix = f"kgbench-{uuid.uuid4().hex[:12]}:rl:"
    counted = redis.Redis(connection_pool=_counting_pool(redis))
    stats = redis.Redis.from_url(REDIS_URL)
    limiter = RedisRateLimiter(counted, on_backend_error="closed", prefix=prefix)
    try:
        yield Row(GROUP, "redis PING (sync, same connection)", time_sync(counted.ping))
        for label, policies in (("1 policy", (DEFAULT,)), ("2 policies", (DEFAULT, ROUTE))):

            def hit(policies: tuple[Policy, ...] = policies) -> object:
                return limiter.hit("key1", policies)

            yield Row(GROUP, f"keyguard redis hit, {label}", time_sync(hit))
            commands, trips, breakdown = _per_request(stats, hit)
            # All of keyguard's work is one script: the commands the client sends are
            # the EVALSHA (or EVAL) calls commandstats counts; the rest run inside it.
            sent = sum(
                float(part.split("=")[1])
                for part in breakdown.split()
                if part.split("=")[0] in ("evalsha", "eval")
            )
            yield Row(
                GROUP,
                f"keyguard redis {label}: commands sent/request (commandstats EVALSHA+EVAL)",
                sent,
                "cmds",
                "target 1",
            )
            yield Row(
                GROUP,
                f"keyguard redis {label}: commands/request incl. inside the script",
                commands,
                "cmds",
                breakdown,
            )
            yield Row(GROUP, f"keyguard redis {label}: round trips/request", trips, "trips")
        yield from _async_redis_rows(prefix)
    finally:
        keys = list(stats.scan_iter(match=prefix + "*"))
        if keys:
            stats.delete(*keys)
        counted.close()
        stats.close()


def _async_redis_rows(prefix: str) -> Iterator[Row]:
    from keyguard.ratelimit.redis import RedisRateLimiter

    async def measure() -> tuple[float, float]:
        limiter = RedisRateLimiter.from_url(REDIS_URL, on_backend_error="closed", prefix=prefix)
        client = limiter._async_client
        assert client is not None
        try:

            async def ahit() -> object:
                return await limiter.ahit("key1", (DEFAULT,))

            async def ping() -> object:
                return await client.ping()

            return await time_async(ping), await time_async(ahit)
        finally:
            await limiter.aclose()

    ping_us, hit_us = asyncio.run(measure())
    yield Row(GROUP, "redis PING (asyncio)", ping_us)
    yield Row(GROUP, "keyguard redis ahit, 1 policy (asyncio)", hit_us)


def limits_redis_rows() -> Iterator[Row]:
    import redis
    from limits import RateLimitItemPerMinute
    from limits.storage import RedisStorage
    from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

    stats = redis.Redis.from_url(REDIS_URL)
    item = RateLimitItemPerMinute(10**6)
    try:
        for name, strategy in (
            ("moving-window", MovingWindowRateLimiter),
            ("fixed-window", FixedWindowRateLimiter),
        ):
            storage = RedisStorage(
                REDIS_URL,
                connection_pool=_counting_pool(redis),
                key_prefix=f"kgbench-limits-{uuid.uuid4().hex[:12]}",
            )
            limiter = strategy(storage)

            def hit_and_stats(limiter: Any = limiter) -> object:
                limiter.hit(item, "key1")
                return limiter.get_window_stats(item, "key1")

            try:
                yield Row(
                    GROUP,
                    f"limits redis {name}: hit + get_window_stats",
                    time_sync(hit_and_stats, repeat=3),
                )
                commands, trips, breakdown = _per_request(stats, hit_and_stats)
                yield Row(
                    GROUP, f"limits redis {name}: commands/request", commands, "cmds", breakdown
                )
                yield Row(GROUP, f"limits redis {name}: round trips/request", trips, "trips")
            finally:
                storage.reset()
    finally:
        stats.close()
