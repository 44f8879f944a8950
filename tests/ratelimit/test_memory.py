"""The memory limiter beyond the contract: its size cap, threads, the protocols."""

from __future__ import annotations

import gc
import threading

import pytest

from keyguard.ratelimit import AsyncRateLimiter, MemoryRateLimiter, Policy, RateLimiter
from keyguard.ratelimit._base import DistinctPolicies
from keyguard.testing import FakeClock

from .test_gcra import reference_hits, run

POLICY = Policy("default", quota=2, window=60)


def test_least_recently_used_key_is_forgotten() -> None:
    limiter = MemoryRateLimiter(clock=FakeClock().monotonic, max_keys=2)
    for key in ("a", "b"):
        limiter.hit(key, [POLICY], cost=2)
    limiter.hit("a", [POLICY], cost=0)  # "a" is now the most recently used
    limiter.hit("c", [POLICY], cost=2)
    assert len(limiter) == 2
    assert not limiter.hit("a", [POLICY]).allowed, "a was kept"
    assert not limiter.hit("c", [POLICY]).allowed, "c was kept"
    assert limiter.hit("b", [POLICY], cost=2).allowed, "b was forgotten: a full burst again"


def test_reset() -> None:
    limiter = MemoryRateLimiter(clock=FakeClock().monotonic)
    limiter.hit("a", [POLICY], cost=2)
    limiter.hit("b", [POLICY], cost=2)
    limiter.reset("a")
    assert limiter.hit("a", [POLICY], cost=2).allowed
    limiter.reset()
    assert len(limiter) == 0
    assert repr(limiter) == "MemoryRateLimiter(keys=0, max_keys=100000)"


def test_threads_share_one_exact_limit() -> None:
    limiter = MemoryRateLimiter()  # the real monotonic clock; 100 per day never refills here
    policy = Policy("default", quota=100, window=86400)
    start = threading.Barrier(8)
    admitted: list[int] = []

    def hammer() -> None:
        start.wait()
        for _ in range(50):
            decision = limiter.hit("shared", [policy])
            if decision.allowed:
                admitted.append(decision.states[0].remaining)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(admitted) == list(range(100)), "each admitted request saw its own count"


@pytest.mark.parametrize("max_keys", [0, -1, 1.5, True])
def test_bad_max_keys(max_keys: object) -> None:
    with pytest.raises(ValueError, match="max_keys"):
        MemoryRateLimiter(max_keys=max_keys)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_implements_both_protocols() -> None:
    limiter = MemoryRateLimiter()
    assert isinstance(limiter, RateLimiter)
    assert isinstance(limiter, AsyncRateLimiter)
    assert (await limiter.ahit("k", [POLICY])).allowed
    limiter.close()
    await limiter.aclose()


def test_a_policy_object_reused_after_another_is_freed() -> None:
    """Policies are remembered by identity; a new policy at a freed address is not confused."""
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock.monotonic)
    for quota in range(1, 200):
        policy = Policy("p", quota=quota, window=1)
        decision = limiter.hit(f"k{quota}", [policy], cost=quota)
        assert decision.allowed
        assert decision.states[0].remaining == 0
        del policy, decision


def test_distinct_policies_are_checked_when_made_and_each_hit_still_checks_key_and_cost() -> None:
    limiter = MemoryRateLimiter()
    minute, hour = Policy("minute", quota=5, window=60), Policy("hour", quota=50, window=3600)
    clash = Policy("minute", quota=9, window=9)
    with pytest.raises(ValueError, match="share a name"):
        DistinctPolicies((minute, clash))
    policies = DistinctPolicies((minute, hour))
    assert policies == (minute, hour)
    assert limiter.hit("k", policies).allowed
    with pytest.raises(ValueError, match="cost"):
        limiter.hit("k", policies, -1)
    with pytest.raises(ValueError, match="non-empty"):
        limiter.hit("", policies)
    for clashing in ((minute, clash), [minute, clash]):  # a plain tuple or list: every hit
        for _ in range(2):
            with pytest.raises(ValueError, match="share a name"):
                limiter.hit("k", clashing)
    assert [s.remaining for s in limiter.hit("k", policies).states] == [3, 48]


def test_the_largest_fractions_are_stored_exactly() -> None:
    """The limiter keeps each TAT in one int. At the largest a Policy allows (burst x window
    + quota up to 2**50) a stored fraction of a millisecond needs 49 bits, and the limiter
    still decides exactly as gcra.check."""
    half = 2**49
    checked = [
        Policy("widest", quota=half, window=0.001, burst=half),
        Policy("odd", quota=half - 3, window=0.001, burst=half + 2),
    ]
    # (ms since the previous request, cost): fractions just below the quota, then the edges.
    schedule = [(0, half - 5), (0, 0), (0, 4), (0, 1), (0, 1), (1, half - 1), (3, 7), (0, half)]
    got = [d for _, _, d in run(schedule, checked)]
    assert got == list(reference_hits(schedule, checked))
    assert [d.allowed for d in got] == [True, True, True, True, False, True, True, False]


def test_a_hit_leaves_nothing_for_the_garbage_collector() -> None:
    """A known key's hit stores ints in an untracked dict, so 100,000 keys in use never fill
    the collector's young generation (which walks it all at its next collection)."""
    limiter = MemoryRateLimiter()
    policies = DistinctPolicies(
        (Policy("minute", quota=10**6, window=60), Policy("hour", quota=10**7, window=3600))
    )
    keys = [f"key-{i}" for i in range(1000)]
    for key in keys:
        limiter.hit(key, policies)
    gc.collect()
    gc.disable()
    try:
        young = len(gc.get_objects(0))
        for _ in range(3):
            for key in keys:
                assert limiter.hit(key, policies).allowed
        grown = len(gc.get_objects(0)) - young
    finally:
        gc.enable()
    # With a tuple per state, the latest states and every key's dict stayed there (3,000).
    assert grown < 500, f"{grown} objects left for the collector by {3 * len(keys)} hits"
