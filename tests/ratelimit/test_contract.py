"""The rate-limiter contracts, against every limiter keyguard ships, sync and async: what
every limiter promises, and GCRA's exact figures."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from keyguard.ratelimit import MemoryRateLimiter
from keyguard.testing import (
    AsyncGCRARateLimiterContract,
    AsyncRateLimiterContract,
    FakeClock,
    GCRARateLimiterContract,
    RateLimiterContract,
)


class TestMemoryContract(RateLimiterContract, GCRARateLimiterContract):
    @pytest.fixture
    def limiter(self, clock: FakeClock) -> MemoryRateLimiter:
        return MemoryRateLimiter(clock=clock.monotonic)


class TestAsyncMemoryContract(AsyncRateLimiterContract, AsyncGCRARateLimiterContract):
    @pytest.fixture
    def async_limiter(self, clock: FakeClock) -> MemoryRateLimiter:
        return MemoryRateLimiter(clock=clock.monotonic)


@pytest.mark.redis
class TestRedisContract(RateLimiterContract, GCRARateLimiterContract):
    @pytest.fixture
    def limiter(self, clock: FakeClock, redis_url: str, redis_prefix: str) -> Iterator[object]:
        from keyguard.ratelimit.redis import RedisRateLimiter

        limiter = RedisRateLimiter.from_url(
            redis_url, on_backend_error="closed", prefix=redis_prefix, clock=clock.monotonic
        )
        yield limiter
        limiter.close()


@pytest.mark.redis
class TestAsyncRedisContract(AsyncRateLimiterContract, AsyncGCRARateLimiterContract):
    @pytest.fixture
    async def async_limiter(
        self, clock: FakeClock, redis_url: str, redis_prefix: str
    ) -> AsyncIterator[object]:
        from keyguard.ratelimit.redis import RedisRateLimiter

        limiter = RedisRateLimiter.from_url(
            redis_url, on_backend_error="closed", prefix=redis_prefix, clock=clock.monotonic
        )
        yield limiter
        await limiter.aclose()


@pytest.mark.redis
class TestRedisClusterContract(RateLimiterContract, GCRARateLimiterContract):
    @pytest.fixture
    def limiter(self, clock: FakeClock, redis_cluster_url: str) -> Iterator[object]:
        from keyguard.ratelimit.redis import RedisRateLimiter

        limiter = RedisRateLimiter.from_url(
            redis_cluster_url, on_backend_error="closed", prefix=_unique(), clock=clock.monotonic
        )
        yield limiter
        limiter.close()


@pytest.mark.redis
class TestAsyncRedisClusterContract(AsyncRateLimiterContract, AsyncGCRARateLimiterContract):
    @pytest.fixture
    async def async_limiter(
        self, clock: FakeClock, redis_cluster_url: str
    ) -> AsyncIterator[object]:
        from keyguard.ratelimit.redis import RedisRateLimiter

        limiter = RedisRateLimiter.from_url(
            redis_cluster_url, on_backend_error="closed", prefix=_unique(), clock=clock.monotonic
        )
        yield limiter
        await limiter.aclose()


def _unique() -> str:
    """A key prefix of its own for each test (the private cluster lives for the session)."""
    return f"kgtest-{uuid.uuid4().hex}:rl:"
