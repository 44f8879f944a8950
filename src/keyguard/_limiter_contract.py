"""The checks of the rate-limiter contracts (``keyguard.testing.RateLimiterContract`` and
``GCRARateLimiterContract``).

Two suites, because a rate limiter makes two kinds of promise:

- what every limiter promises, whatever its algorithm (fixed window, sliding
  log, token bucket, GCRA): a fresh key gets its quota, never more than the
  quota per window over time, a refused request spends nothing, all policies
  of a request at once or none, and a decision whose numbers (``remaining``,
  ``reset_after``, ``retry_after``) tell a client the truth. Every decision
  these checks see is also checked by :func:`check_sound`.
- GCRA's exact figures, to the millisecond (``GCRA_RATE_LIMITER_CHECKS``),
  which keyguard's own limiters keep and a limiter of another algorithm
  need not.

Each check is one flow that takes the suite's :class:`~keyguard.testing.FakeClock`,
driven sync or async exactly as keyguard drives its own limiters.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from ._drive import Flow
from ._steps import HitLimit
from ._store_contract import check
from .ratelimit._base import RateLimitDecision
from .ratelimit._policy import Policy

if TYPE_CHECKING:
    from .testing import FakeClock

__all__ = [
    "BAD_RATE_LIMIT_REQUESTS",
    "GCRA_RATE_LIMITER_CHECKS",
    "RATE_LIMITER_CHECKS",
    "SOME_POLICY",
    "check_sound",
]


def _limit_key() -> str:
    return "contract-" + uuid.uuid4().hex[:16]


def _wait(seconds: float) -> float:
    """``seconds`` rounded up to the millisecond, as a client waits for a Retry-After."""
    return math.ceil(round(seconds * 1000, 6)) / 1000


def check_sound(got: Any, policies: Sequence[Policy], cost: int) -> None:
    """The decision of a hit of ``cost`` against ``policies`` agrees with itself.

    What a client reads in the headers must be true of the decision, whatever
    the algorithm: one state per policy in order, ``remaining`` a whole number
    never below 0, ``reset_after`` 0 exactly when the whole quota is there,
    ``retry_after`` above 0 exactly when refused, and a refusal that shows in
    the states.
    """
    what = f"for a hit of cost {cost} against {[p.name for p in policies]}, got {got!r}"
    check(isinstance(got, RateLimitDecision), f"hit must return a RateLimitDecision, {what}")
    check(got.degraded is None, f"a working backend must decide itself, {what}")
    check(isinstance(got.allowed, bool), f"allowed must be a bool, {what}")
    check(
        len(got.states) == len(policies)
        and all(s.policy == p for s, p in zip(got.states, policies, strict=False)),
        f"one state per policy, in the order given, each naming its policy, {what}",
    )
    for state in got.states:
        policy, remaining, reset_after = state
        check(
            isinstance(remaining, int)
            and not isinstance(remaining, bool)
            and 0 <= remaining <= max(policy.quota, policy.effective_burst),
            f"remaining must be a whole number from 0 to the quota, never negative, {what}",
        )
        check(
            isinstance(reset_after, int | float)
            and math.isfinite(reset_after)
            and reset_after >= 0,
            f"reset_after must be a number of seconds >= 0, {what}",
        )
        if policy.burst is None:
            check(
                (remaining == policy.quota) == (reset_after == 0),
                f"reset_after must be 0 exactly when the whole quota is left, {what}",
            )
    retry = got.retry_after
    check(
        isinstance(retry, int | float) and math.isfinite(retry) and retry >= 0,
        f"retry_after must be a number of seconds >= 0, {what}",
    )
    if got.allowed:
        check(retry == 0, f"an admitted request must have retry_after 0, {what}")
    else:
        check(retry > 0, f"a refused request must say how long to wait (retry_after > 0), {what}")
        check(
            any(s.remaining < cost for s in got.states),
            f"a refusal must show in the states: some policy has fewer than {cost} left, {what}",
        )


def _decide(key: str, policies: Sequence[Policy], cost: int = 1) -> Flow[RateLimitDecision]:
    got: RateLimitDecision = yield from HitLimit(key, tuple(policies), cost)
    check_sound(got, policies, cost)
    return got


def _remaining(got: RateLimitDecision) -> list[int]:
    return [s.remaining for s in got.states]


# -- what every limiter promises ----------------------------------------------------------


def _fresh_key_spends_its_quota(clock: FakeClock) -> Flow[None]:
    key, policy = _limit_key(), Policy("default", quota=5, window=10)
    got = yield from _decide(key, [policy], cost=0)
    check(got.allowed and _remaining(got) == [5], f"a fresh key has its whole quota, got {got!r}")
    for n in range(1, 6):
        got = yield from _decide(key, [policy])
        check(
            got.allowed and _remaining(got) == [5 - n],
            f"request {n} of 5 back to back must pass with {5 - n} left, got {got!r}",
        )
    got = yield from _decide(key, [policy])
    check(not got.allowed, f"request 6 of a quota of 5 must be refused, got {got!r}")
    check(got.retry_after <= 10, f"the wait must be within the window, got {got!r}")


def _refused_spends_nothing(clock: FakeClock) -> Flow[None]:
    # Two keys with the same history, except that one was refused five times: a refusal
    # spends nothing, so from then on both get the same answers.
    policy = Policy("default", quota=3, window=3)
    refused, twin = _limit_key(), _limit_key()
    for key in (refused, twin):
        for _ in range(3):
            got = yield from _decide(key, [policy])
            check(got.allowed, f"the quota must pass, got {got!r}")
    clock.advance(0.5)  # refused later than the quota was spent: a refusal that counted
    for _ in range(5):  # would outlast it
        got = yield from _decide(refused, [policy])
        check(not got.allowed, f"a fourth request of a quota of 3 must be refused, got {got!r}")
    for _ in range(16):
        a = yield from _decide(refused, [policy])
        b = yield from _decide(twin, [policy])
        check(
            (a.allowed, a.states, a.retry_after) == (b.allowed, b.states, b.retry_after),
            f"a key refused before must fare like one that was not: {a!r} against {b!r}",
        )
        clock.advance(0.375)


def _all_or_nothing(clock: FakeClock) -> Flow[None]:
    key = _limit_key()
    wide, narrow = Policy("wide", quota=10, window=10), Policy("narrow", quota=2, window=10)
    for left in ([9, 1], [8, 0]):
        got = yield from _decide(key, [wide, narrow])
        check(got.allowed and _remaining(got) == left, f"expected {left} left, got {got!r}")
    for _ in range(3):
        got = yield from _decide(key, [wide, narrow])
        check(
            not got.allowed and _remaining(got) == [8, 0],
            f"refused by one policy, the request must count against none, got {got!r}",
        )
    got = yield from _decide(key, [wide])
    check(
        got.allowed and _remaining(got) == [7],
        f"the refusals must have left the wide policy 8, got {got!r}",
    )


def _waiting_is_enough(clock: FakeClock) -> Flow[None]:
    # One request a second: the short policy would take them all, the long one refuses
    # within its window. Its wait is the one that counts.
    key = _limit_key()
    short, long = Policy("short", quota=1, window=1), Policy("long", quota=2, window=6)
    for _ in range(6):
        got = yield from _decide(key, [short, long])
        if not got.allowed:
            break
        clock.advance(1.0)
    check(not got.allowed, f"a third request within 6 s must be refused, got {got!r}")
    check(got.retry_after <= 6, f"the wait must be within the longest window, got {got!r}")
    clock.advance(_wait(got.retry_after))
    got = yield from _decide(key, [short, long])
    check(got.allowed, f"waiting retry_after (rounded up to the ms) must be enough, got {got!r}")
    clock.advance(_wait(max(s.reset_after for s in got.states)))
    got = yield from _decide(key, [short, long], cost=0)
    check(
        _remaining(got) == [1, 2],
        f"after waiting reset_after the whole quota must be back, got {got!r}",
    )


def _remaining_is_truthful(clock: FakeClock) -> Flow[None]:
    # "r left" is a promise: exactly r more requests pass now, back to back.
    key = _limit_key()
    policies = [Policy("a", quota=4, window=2), Policy("b", quota=6, window=6)]
    for idle in (0.0, 0.7, 0.2, 1.3, 0.5, 2.9, 6.0):
        clock.advance(idle)
        got = yield from _decide(key, policies, cost=0)
        left = min(_remaining(got))
        for n in range(left):
            got = yield from _decide(key, policies)
            check(got.allowed, f"{left} were said to be left, but number {n + 1} was refused")
        got = yield from _decide(key, policies)
        check(not got.allowed, f"{left} were said to be left, but {left + 1} passed: {got!r}")


def _steady_client_never_refused(clock: FakeClock) -> Flow[None]:
    key, policy = _limit_key(), Policy("default", quota=4, window=2)  # one every 0.5 s
    for n in range(16):
        got = yield from _decide(key, [policy])
        check(got.allowed, f"request {n + 1}, one every window/quota, was refused: {got!r}")
        clock.advance(0.5)


def _at_most_quota_per_window(clock: FakeClock) -> Flow[None]:
    # A client asking about three times as often as its rate, at random moments: at most
    # the quota passes per window (in any span of n windows at most n + 1 quotas: one
    # window's worth may come at an edge, a fixed window's boundary or GCRA's burst), and
    # at least the quota per window passes.
    quota, window_ms = 5, 1000
    key, policy = _limit_key(), Policy("default", quota=quota, window=window_ms / 1000)
    schedule = random.Random(20260301)  # noqa: S311 (a reproducible schedule, not a secret)
    now = 0
    admitted: list[int] = []
    for _ in range(120):
        gap = schedule.randrange(0, 121)
        clock.advance(gap / 1000)
        now += gap
        got = yield from _decide(key, [policy])
        if got.allowed:
            admitted.append(now)
    for first in admitted:
        for windows in (1, 2, 3):
            inside = sum(1 for t in admitted if first <= t < first + windows * window_ms)
            check(
                inside <= (windows + 1) * quota,
                f"{inside} requests passed within {windows} window(s) from {first} ms: "
                f"at most {(windows + 1) * quota} may",
            )
    enough = (now // window_ms - 1) * quota
    check(len(admitted) >= enough, f"only {len(admitted)} passed in {now} ms, {enough} must")


def _cost(clock: FakeClock) -> Flow[None]:
    key, policy = _limit_key(), Policy("default", quota=10, window=10)
    for cost, allowed, left in ((4, True, 6), (7, False, 6), (0, True, 6), (6, True, 0)):
        got = yield from _decide(key, [policy], cost=cost)
        check(
            got.allowed is allowed and _remaining(got) == [left],
            f"a hit of cost {cost} must be {'admitted' if allowed else 'refused'} "
            f"with {left} left, got {got!r}",
        )
    got = yield from _decide(key, [policy], cost=0)
    check(got.allowed, f"cost 0 counts nothing and is always admitted, got {got!r}")
    got = yield from _decide(key, [policy], cost=7)
    check(not got.allowed, f"nothing is left for a cost of 7, got {got!r}")
    clock.advance(_wait(got.retry_after))
    got = yield from _decide(key, [policy], cost=7)
    check(got.allowed, f"after retry_after a cost of 7 must pass, got {got!r}")


def _idle_restores_quota(clock: FakeClock) -> Flow[None]:
    key, policy = _limit_key(), Policy("default", quota=10, window=1)
    got = yield from _decide(key, [policy], cost=10)
    check(got.allowed and _remaining(got) == [0], f"the whole quota at once, got {got!r}")
    clock.advance(86400 * 3)
    got = yield from _decide(key, [policy], cost=0)
    check(_remaining(got) == [10], f"after three idle days the quota is whole, got {got!r}")
    got = yield from _decide(key, [policy], cost=10)
    check(got.allowed, f"and may be spent at once again, got {got!r}")


def _keys_and_names_are_separate(clock: FakeClock) -> Flow[None]:
    first, second = _limit_key(), _limit_key()
    a, b = Policy("a", quota=1, window=60), Policy("b", quota=1, window=60)
    got = yield from _decide(first, [a])
    check(got.allowed, f"a fresh key passes, got {got!r}")
    got = yield from _decide(first, [a])
    check(not got.allowed, f"its second request in the window is refused, got {got!r}")
    got = yield from _decide(second, [a])
    check(got.allowed, f"another key has its own state, got {got!r}")
    got = yield from _decide(first, [b])
    check(got.allowed, f"another policy name has its own state, got {got!r}")


def _stricter_policy_same_name(clock: FakeClock) -> Flow[None]:
    # The policy behind a name changes (a key's limit is lowered): whatever the algorithm
    # makes of the old state, its numbers stay sound (never a negative remaining) and a
    # client that waits as told gets through.
    key = _limit_key()
    loose, strict = Policy("p", quota=100, window=100), Policy("p", quota=1, window=10)
    got = yield from _decide(key, [loose], cost=100)
    check(got.allowed, f"the whole loose quota at once, got {got!r}")
    got = yield from _decide(key, [strict])
    if not got.allowed:
        clock.advance(_wait(got.retry_after))
        got = yield from _decide(key, [strict])
        check(got.allowed, f"after retry_after the request must pass, got {got!r}")
    got = yield from _decide(key, [strict])
    check(not got.allowed, f"the strict policy admits one per 10 s, got {got!r}")


def _no_policies(clock: FakeClock) -> Flow[None]:
    got = yield from _decide(_limit_key(), [], 1)
    check(got.allowed, f"with no policy every request passes, got {got!r}")


#: Every check of the rate-limiter contract, by name: what any correct limiter keeps,
#: whatever its algorithm. Each takes the limiter's FakeClock.
RATE_LIMITER_CHECKS: Final[dict[str, Callable[[FakeClock], Flow[None]]]] = {
    "fresh_key_spends_its_quota": _fresh_key_spends_its_quota,
    "refused_spends_nothing": _refused_spends_nothing,
    "all_or_nothing": _all_or_nothing,
    "waiting_is_enough": _waiting_is_enough,
    "remaining_is_truthful": _remaining_is_truthful,
    "steady_client_never_refused": _steady_client_never_refused,
    "at_most_quota_per_window": _at_most_quota_per_window,
    "cost": _cost,
    "idle_restores_quota": _idle_restores_quota,
    "keys_and_names_are_separate": _keys_and_names_are_separate,
    "stricter_policy_same_name": _stricter_policy_same_name,
    "no_policies": _no_policies,
}

#: A policy the argument checks use.
SOME_POLICY: Final = Policy("some", quota=3, window=1)

#: Requests every limiter must refuse with ValueError before counting anything.
BAD_RATE_LIMIT_REQUESTS: Final[dict[str, tuple[object, tuple[Policy, ...], object]]] = {
    "empty_key": ("", (SOME_POLICY,), 1),
    "key_not_a_string": (123, (SOME_POLICY,), 1),
    "negative_cost": ("k", (SOME_POLICY,), -1),
    "cost_not_whole": ("k", (SOME_POLICY,), 1.0),
    "cost_a_bool": ("k", (SOME_POLICY,), True),
    "cost_above_burst": ("k", (SOME_POLICY,), 4),
    # SOME_POLICY would admit a cost of 2: the refusal must not count it there either.
    "cost_above_a_later_policys_burst": ("k", (SOME_POLICY, Policy("one", quota=1, window=1)), 2),
    "duplicate_policy_names": ("k", (SOME_POLICY, Policy("some", quota=9, window=9)), 1),
}


# -- GCRA's exact figures -------------------------------------------------------------------


def _close(got: Sequence[float], wanted: Sequence[float]) -> bool:
    return len(got) == len(wanted) and all(
        math.isclose(g, w, rel_tol=1e-6, abs_tol=1e-9) for g, w in zip(got, wanted, strict=True)
    )


def _hit(key: str, *policies: Policy, cost: int = 1) -> HitLimit:
    return HitLimit(key, policies, cost)


def _expect(
    decision: Any,
    allowed: bool,
    remaining: Sequence[int],
    reset_after: Sequence[float] | None = None,
    retry_after: float = 0.0,
) -> None:
    what = f"got {decision!r}"
    check(decision.allowed is allowed, f"expected allowed={allowed}, {what}")
    check(decision.degraded is None, f"a working backend must decide itself, {what}")
    check(
        [s.remaining for s in decision.states] == list(remaining),
        f"expected remaining {list(remaining)}, {what}",
    )
    if reset_after is not None:
        check(
            _close([s.reset_after for s in decision.states], reset_after),
            f"expected reset_after {list(reset_after)}, {what}",
        )
    check(
        _close([decision.retry_after], [retry_after]),
        f"expected retry_after {retry_after}, {what}",
    )


def _gcra_burst_then_refuse(clock: FakeClock) -> Flow[None]:
    key, policy = _limit_key(), Policy("default", quota=5, window=10)  # one every 2 s
    for n in range(1, 6):
        got = yield from _hit(key, policy)
        check(got.states[0].policy == policy, f"the state must name its policy, got {got!r}")
        _expect(got, True, [5 - n], [2.0 * n])
    got = yield from _hit(key, policy)
    _expect(got, False, [0], [10.0], retry_after=2.0)


def _gcra_refused_consumes_nothing(clock: FakeClock) -> Flow[None]:
    key, policy = _limit_key(), Policy("default", quota=3, window=3)  # one every second
    for _ in range(3):
        yield from _hit(key, policy)
    for _ in range(5):
        got = yield from _hit(key, policy)
        _expect(got, False, [0], [3.0], retry_after=1.0)
    clock.advance(1.0)
    got = yield from _hit(key, policy)
    _expect(got, True, [0], [3.0])
    got = yield from _hit(key, policy)
    _expect(got, False, [0], [3.0], retry_after=1.0)


def _gcra_sustained_rate(clock: FakeClock) -> Flow[None]:
    key, policy = _limit_key(), Policy("default", quota=60, window=60, burst=4)
    for _ in range(4):
        yield from _hit(key, policy)
    for _ in range(10):
        clock.advance(1.0)
        got = yield from _hit(key, policy)
        _expect(got, True, [0], [4.0])
        got = yield from _hit(key, policy)
        _expect(got, False, [0], [4.0], retry_after=1.0)
    clock.advance(0.999)
    got = yield from _hit(key, policy)
    _expect(got, False, [0], [3.001], retry_after=0.001)


def _gcra_idle_restores_burst(clock: FakeClock) -> Flow[None]:
    key, policy = _limit_key(), Policy("default", quota=10, window=1)
    got = yield from _hit(key, policy, cost=10)
    _expect(got, True, [0], [1.0])
    clock.advance(0.5)
    got = yield from _hit(key, policy, cost=0)
    _expect(got, True, [5], [0.5])
    clock.advance(0.5)
    got = yield from _hit(key, policy, cost=0)
    _expect(got, True, [10], [0.0])
    clock.advance(86400 * 3)
    got = yield from _hit(key, policy, cost=10)
    _expect(got, True, [0], [1.0])


def _gcra_burst_below_quota(clock: FakeClock) -> Flow[None]:
    key, policy = _limit_key(), Policy("default", quota=10, window=10, burst=2)
    got = yield from _hit(key, policy)
    _expect(got, True, [1], [1.0])
    got = yield from _hit(key, policy)
    _expect(got, True, [0], [2.0])
    got = yield from _hit(key, policy)
    _expect(got, False, [0], [2.0], retry_after=1.0)
    clock.advance(1.0)
    got = yield from _hit(key, policy)
    _expect(got, True, [0], [2.0])


def _gcra_all_or_nothing(clock: FakeClock) -> Flow[None]:
    key = _limit_key()
    wide, narrow = Policy("wide", quota=10, window=10), Policy("narrow", quota=2, window=10)
    got = yield from _hit(key, wide, narrow)
    _expect(got, True, [9, 1], [1.0, 5.0])
    check([s.policy for s in got.states] == [wide, narrow], "states follow the policies' order")
    got = yield from _hit(key, wide, narrow)
    _expect(got, True, [8, 0], [2.0, 10.0])
    for _ in range(3):
        got = yield from _hit(key, wide, narrow)
        _expect(got, False, [8, 0], [2.0, 10.0], retry_after=5.0)
    got = yield from _hit(key, wide)
    _expect(got, True, [7], [3.0])
    clock.advance(5.0)
    got = yield from _hit(key, wide, narrow)
    _expect(got, True, [9, 0], [1.0, 10.0])


def _gcra_longest_wait_wins(clock: FakeClock) -> Flow[None]:
    key = _limit_key()
    short, long = Policy("short", quota=1, window=2), Policy("long", quota=1, window=5)
    got = yield from _hit(key, short, long)
    _expect(got, True, [0, 0], [2.0, 5.0])
    got = yield from _hit(key, short, long)
    _expect(got, False, [0, 0], [2.0, 5.0], retry_after=5.0)
    clock.advance(2.0)
    got = yield from _hit(key, short, long)
    _expect(got, False, [1, 0], [0.0, 3.0], retry_after=3.0)


def _gcra_keys_and_names_are_separate(clock: FakeClock) -> Flow[None]:
    first, second = _limit_key(), _limit_key()
    a, b = Policy("a", quota=1, window=60), Policy("b", quota=1, window=60)
    got = yield from _hit(first, a)
    _expect(got, True, [0])
    got = yield from _hit(first, a)
    _expect(got, False, [0], retry_after=60.0)
    got = yield from _hit(second, a)
    _expect(got, True, [0])
    got = yield from _hit(first, b)
    _expect(got, True, [0])


def _gcra_cost(clock: FakeClock) -> Flow[None]:
    key, policy = _limit_key(), Policy("default", quota=10, window=10)
    got = yield from _hit(key, policy, cost=4)
    _expect(got, True, [6], [4.0])
    got = yield from _hit(key, policy, cost=7)
    _expect(got, False, [6], [4.0], retry_after=1.0)
    got = yield from _hit(key, policy, cost=0)
    _expect(got, True, [6], [4.0])
    got = yield from _hit(key, policy, cost=6)
    _expect(got, True, [0], [10.0])
    got = yield from _hit(key, policy, cost=0)
    _expect(got, True, [0], [10.0])


def _gcra_sub_millisecond_interval(clock: FakeClock) -> Flow[None]:
    key, policy = _limit_key(), Policy("fast", quota=3000, window=1)  # 3 per ms
    got = yield from _hit(key, policy, cost=3000)
    _expect(got, True, [0], [1.0])
    got = yield from _hit(key, policy)
    _expect(got, False, [0], [1.0], retry_after=0.001)
    clock.advance(0.001)
    got = yield from _hit(key, policy, cost=3)
    _expect(got, True, [0], [1.0])
    got = yield from _hit(key, policy)
    _expect(got, False, [0], [1.0], retry_after=0.001)


def _gcra_fractional_interval(clock: FakeClock) -> Flow[None]:
    key, policy = _limit_key(), Policy("thirds", quota=3, window=1)  # one per 333.33 ms
    got = yield from _hit(key, policy, cost=3)
    _expect(got, True, [0], [1.0])
    clock.advance(0.333)
    got = yield from _hit(key, policy)
    _expect(got, False, [0], [0.667], retry_after=0.001)
    clock.advance(0.001)
    got = yield from _hit(key, policy)
    _expect(got, True, [0], [1.0])
    got = yield from _hit(key, policy)
    _expect(got, False, [0], [1.0], retry_after=0.333)
    clock.advance(0.333)  # exactly the wait it was told: 332.67 ms, rounded up
    got = yield from _hit(key, policy)
    _expect(got, True, [0], [1.0])
    clock.advance(0.5)
    got = yield from _hit(key, policy, cost=0)
    _expect(got, True, [1], [0.5])


def _gcra_stricter_policy_same_name(clock: FakeClock) -> Flow[None]:
    key = _limit_key()
    loose, strict = Policy("p", quota=100, window=100), Policy("p", quota=1, window=10)
    got = yield from _hit(key, loose, cost=100)
    _expect(got, True, [0], [100.0])
    got = yield from _hit(key, strict)
    _expect(got, False, [0], [100.0], retry_after=100.0)
    clock.advance(95.0)
    got = yield from _hit(key, strict)
    _expect(got, False, [0], [5.0], retry_after=5.0)
    clock.advance(5.0)
    got = yield from _hit(key, strict)
    _expect(got, True, [0], [10.0])


def _gcra_no_policies(clock: FakeClock) -> Flow[None]:
    got = yield from HitLimit(_limit_key(), (), 1)
    _expect(got, True, [])


#: GCRA's figures to the millisecond, by name: what keyguard's own limiters answer (see
#: docs/rate-limiting.md), checked only by ``GCRARateLimiterContract``.
GCRA_RATE_LIMITER_CHECKS: Final[dict[str, Callable[[FakeClock], Flow[None]]]] = {
    "burst_then_refuse": _gcra_burst_then_refuse,
    "refused_consumes_nothing": _gcra_refused_consumes_nothing,
    "sustained_rate": _gcra_sustained_rate,
    "idle_restores_burst": _gcra_idle_restores_burst,
    "burst_below_quota": _gcra_burst_below_quota,
    "all_or_nothing": _gcra_all_or_nothing,
    "longest_wait_wins": _gcra_longest_wait_wins,
    "keys_and_names_are_separate": _gcra_keys_and_names_are_separate,
    "cost": _gcra_cost,
    "sub_millisecond_interval": _gcra_sub_millisecond_interval,
    "fractional_interval": _gcra_fractional_interval,
    "stricter_policy_same_name": _gcra_stricter_policy_same_name,
    "no_policies": _gcra_no_policies,
}
