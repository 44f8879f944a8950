"""The Redis limiter beyond the contract: same answers as the Python math, key layout, expiry."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyguard import generate_key
from keyguard.ratelimit import AsyncRateLimiter, MemoryRateLimiter, Policy, RateLimiter
from keyguard.testing import FakeClock

from .conftest import RedisServer
from .test_gcra import policies, schedules

redis = pytest.importorskip("redis")

from keyguard.ratelimit.redis import GCRA_SCRIPT, RedisRateLimiter  # noqa: E402

pytestmark = pytest.mark.redis


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_lua_decides_exactly_as_the_python_math(
    data: st.DataObject, redis_url: str, redis_prefix: str
) -> None:
    """The script is a transcription of keyguard.ratelimit.gcra; any schedule shows a slip."""
    checked = [data.draw(policies("first"))]
    if data.draw(st.booleans()):
        checked.append(data.draw(policies("second")))
    burst = min(p.effective_burst for p in checked)
    schedule = data.draw(schedules(burst, *checked))
    clock = FakeClock(monotonic_start=1_780_000_000.0)  # Redis-TIME-sized numbers
    memory = MemoryRateLimiter(clock=clock.monotonic)
    remote = RedisRateLimiter(
        redis.Redis.from_url(redis_url),
        on_backend_error="closed",
        prefix=redis_prefix,
        clock=clock.monotonic,
        owns_clients=True,
    )
    key = generate_key().key_id  # a fresh key for every example
    try:
        for gap_ms, cost in schedule:
            clock.advance(gap_ms / 1000)
            assert remote.hit(key, checked, cost) == memory.hit(key, checked, cost)
    finally:
        remote.close()


def test_key_layout_shares_one_cluster_slot(client: redis.Redis, redis_prefix: str) -> None:
    from redis.crc import key_slot

    limiter = RedisRateLimiter(client, on_backend_error="closed", prefix=redis_prefix)
    key = generate_key()
    policies_ = [Policy("default", 100, 60), Policy("writes", 10, 1), Policy("daily", 1000, 86400)]
    assert limiter.hit(key.key_id, policies_).allowed
    names = sorted(k.decode() for k in client.scan_iter(match=redis_prefix + "*"))
    assert names == sorted(f"{redis_prefix}{{{key.key_id}}}:{p.name}" for p in policies_)
    assert names == sorted(limiter.redis_key(key.key_id, p) for p in policies_)
    assert len({key_slot(n.encode()) for n in names}) == 1
    assert not any(key.token in n or key.token.split("_")[-1] in n for n in names)
    assert limiter.redis_key("k", policies_[0]) == f"{redis_prefix}{{k}}:default"
    assert RedisRateLimiter(client, on_backend_error="open").redis_key("AbC", policies_[0]) == (
        "kg:rl:{AbC}:default"
    )


def test_idle_keys_expire_when_back_to_a_full_burst(client: redis.Redis, redis_prefix: str) -> None:
    limiter = RedisRateLimiter(client, on_backend_error="closed", prefix=redis_prefix)
    fast, slow = Policy("fast", 10, 1), Policy("slow", 10, 100)  # T = 100 ms and 10 s
    decision = limiter.hit("k", [fast, slow], cost=3)
    assert decision.allowed
    assert 200 < client.pttl(limiter.redis_key("k", fast)) <= 300
    assert 29_000 < client.pttl(limiter.redis_key("k", slow)) <= 30_000
    assert [s.reset_after for s in decision.states] == [0.3, 30.0]
    refused = limiter.hit("k", [Policy("tiny", 1, 1000)], cost=0)
    assert refused.allowed
    assert client.exists(limiter.redis_key("k", Policy("tiny", 1, 1000))) == 0, (
        "a cost-0 look writes nothing"
    )


def test_time_comes_from_redis(client: redis.Redis, redis_prefix: str) -> None:
    """Without an injected clock the state is stamped with Redis TIME in ms."""
    limiter = RedisRateLimiter(client, on_backend_error="closed", prefix=redis_prefix)
    seconds, micros = client.time()
    limiter.hit("k", [Policy("p", 1, 10)])
    stored = client.get(limiter.redis_key("k", Policy("p", 1, 10))).decode()
    tat_ms, frac = (int(part) for part in stored.split(":"))
    now_ms = seconds * 1000 + micros // 1000
    assert now_ms + 10_000 <= tat_ms < now_ms + 10_000 + 5_000
    assert frac == 0


def test_unreadable_state_counts_as_none(client: redis.Redis, redis_prefix: str) -> None:
    limiter = RedisRateLimiter(client, on_backend_error="closed", prefix=redis_prefix)
    policy = Policy("p", 2, 10)
    client.set(limiter.redis_key("k", policy), "not a state")
    assert [limiter.hit("k", [policy]).allowed for _ in range(3)] == [True, True, False]


def test_sync_and_async_share_the_limit(redis_url: str, redis_prefix: str) -> None:
    import asyncio

    limiter = RedisRateLimiter.from_url(redis_url, on_backend_error="closed", prefix=redis_prefix)
    policy = Policy("p", 3, 60)
    assert limiter.hit("k", [policy]).states[0].remaining == 2

    async def more() -> list[int]:
        try:
            return [(await limiter.ahit("k", [policy])).states[0].remaining for _ in range(2)]
        finally:
            await limiter.aclose()

    assert asyncio.run(more()) == [1, 0]


def test_reloads_a_flushed_script(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    limiter = RedisRateLimiter(client, on_backend_error="closed")
    policy = Policy("p", 5, 60)
    with caplog.at_level(logging.WARNING, logger="keyguard"):
        assert limiter.hit("k", [policy]).states[0].remaining == 4  # first use: EVAL
        assert client.script_exists(
            hashlib.sha1(GCRA_SCRIPT.encode(), usedforsecurity=False).hexdigest()
        ) == [True]
        client.script_flush()
        assert limiter.hit("k", [policy]).states[0].remaining == 3  # NOSCRIPT, then EVAL
        assert limiter.hit("k", [policy]).states[0].remaining == 2
    assert limiter.backend_failures == 0
    assert caplog.records == []
    stats = client.info("commandstats")
    assert stats["cmdstat_eval"]["calls"] == 2
    assert stats["cmdstat_evalsha"]["calls"] == 3
    client.close()


def test_implements_the_protocols(redis_url: str) -> None:
    limiter = RedisRateLimiter.from_url(redis_url, on_backend_error="open")
    assert isinstance(limiter, RateLimiter)
    assert isinstance(limiter, AsyncRateLimiter)
    assert "on_backend_error='open'" in repr(limiter)
    limiter.close()


def test_clients_passed_in_stay_open(client: redis.Redis) -> None:
    limiter = RedisRateLimiter(client, on_backend_error="open")
    limiter.close()
    assert client.ping()


@pytest.mark.anyio
async def test_one_flavour_only(client: redis.Redis, redis_url: str) -> None:
    sync_only = RedisRateLimiter(client, on_backend_error="open")
    with pytest.raises(TypeError, match=r"no redis\.asyncio\.Redis client"):
        await sync_only.ahit("k", [Policy("p", 1, 1)])
    async_only = RedisRateLimiter(
        async_client=redis.asyncio.Redis.from_url(redis_url), on_backend_error="open"
    )
    with pytest.raises(TypeError, match=r"no redis\.Redis client"):
        async_only.hit("k", [Policy("p", 1, 1)])
    await async_only._async_client.aclose()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"on_backend_error": "ignore"}, "on_backend_error must be one of", id="mode"),
        pytest.param({"on_backend_error": "open", "backoff": 0}, "backoff must be", id="backoff"),
        pytest.param(
            {"on_backend_error": "open", "backoff": 5, "max_backoff": 1},
            "at most max_backoff",
            id="max-backoff",
        ),
    ],
)
def test_bad_configuration(client: redis.Redis, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisRateLimiter(client, **kwargs)  # type: ignore[arg-type]


def test_needs_a_client() -> None:
    with pytest.raises(ValueError, match=r"give a redis\.Redis client"):
        RedisRateLimiter(on_backend_error="open")
