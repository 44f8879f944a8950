"""Eight processes hammer one key on one Redis, or on a Redis Cluster: exactly the quota
is admitted."""

from __future__ import annotations

import multiprocessing
from multiprocessing.synchronize import Barrier

import pytest

from keyguard.ratelimit import Policy

pytestmark = [pytest.mark.redis, pytest.mark.slow]

PROCESSES = 8
HITS_EACH = 40  # 320 requests in all; no process alone could reach the quota
# 100 per day: nothing refills while the test runs, so exactly 100 may pass.
POLICY = Policy("default", quota=100, window=86400)


def hammer(url: str, prefix: str, start: Barrier) -> list[int]:
    """In a child process: hit the shared key as fast as possible; the admitted counts."""
    from keyguard.ratelimit.redis import RedisRateLimiter

    limiter = RedisRateLimiter.from_url(url, on_backend_error="closed", prefix=prefix)
    limiter.hit("warm-up", [POLICY], cost=0)  # connect before the race starts
    start.wait(timeout=60)
    admitted = []
    for _ in range(HITS_EACH):
        decision = limiter.hit("shared", [POLICY])
        if decision.degraded is not None:
            raise RuntimeError(f"Redis failed during the test: {decision!r}")
        if decision.allowed:
            admitted.append(decision.states[0].remaining)
    limiter.close()
    return admitted


@pytest.fixture(params=["standalone", "cluster"])
def shared_url(request: pytest.FixtureRequest) -> str:
    """The shared Redis, or the session's private three-node Redis Cluster."""
    name = "redis_url" if request.param == "standalone" else "redis_cluster_url"
    return str(request.getfixturevalue(name))


def test_exactly_the_quota_across_processes(shared_url: str, redis_prefix: str) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        start = manager.Barrier(PROCESSES)
        with context.Pool(PROCESSES) as pool:
            results = pool.starmap(hammer, [(shared_url, redis_prefix, start)] * PROCESSES)
    admitted = [remaining for result in results for remaining in result]
    assert len(admitted) == POLICY.quota
    assert sorted(admitted) == list(range(POLICY.quota)), "each admission saw its own count"
