"""The rate-limit API as an application uses it; checked by mypy (strict), never run."""

from __future__ import annotations

import keyguard
from keyguard.ratelimit import (
    AsyncRateLimiter,
    MemoryRateLimiter,
    Policy,
    RateLimitDecision,
    RateLimiter,
    applicable_policies,
    denial_status,
    rate_limit_headers,
)
from keyguard.ratelimit.redis import RedisRateLimiter
from keyguard.testing import FakeClock

DEFAULT = Policy.parse("100/minute")
WRITES = Policy("writes", quota=10, window=1, burst=5)


def respond(decision: RateLimitDecision) -> tuple[int, list[tuple[str, str]]]:
    headers = rate_limit_headers(decision, legacy=False)
    if decision:
        return 200, headers
    return denial_status(decision), headers


def sync_app(limiter: RateLimiter, record: keyguard.KeyRecord) -> int:
    policies = applicable_policies(DEFAULT, record.rate_limit, [WRITES])
    decision = limiter.hit(record.key_id, policies)
    remaining: list[int] = [state.remaining for state in decision.states]
    status, _ = respond(decision)
    return status + len(remaining)


async def async_app(limiter: AsyncRateLimiter, key_id: str) -> float:
    decision = await limiter.ahit(key_id, (DEFAULT,), cost=2)
    return decision.retry_after


def build() -> tuple[RateLimiter, AsyncRateLimiter, RateLimiter]:
    memory: keyguard.MemoryRateLimiter = MemoryRateLimiter(
        clock=FakeClock().monotonic, max_keys=10_000
    )
    shared = RedisRateLimiter.from_url(
        "redis://127.0.0.1:6379/0", on_backend_error="local", backoff=0.5
    )
    mode: keyguard.ratelimit.BackendErrorMode = "closed"
    strict = RedisRateLimiter.from_url("redis://127.0.0.1:6379/0", on_backend_error=mode)
    return memory, shared, strict
