"""Two rate limiters of other algorithms than GCRA, from keyguard's public API only.

- :class:`FixedWindowRateLimiter` counts requests per policy in windows aligned on the
  clock: ``quota`` per window, all back at each window's start.
- :class:`SlidingLogRateLimiter` keeps the time of each admitted request: at most
  ``quota`` within any ``window``, each request counting for exactly one window.

Both keep the promises of ``keyguard.testing.RateLimiterContract`` (what every limiter
promises); neither gives GCRA's figures, which ``GCRARateLimiterContract`` checks. A
policy's ``burst`` means GCRA's burst; these algorithms have none of their own, so both
allow the quota at once (the default burst) and refuse a cost above the quota.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from keyguard.ratelimit import Policy, PolicyState, RateLimitDecision


def check_arguments(key: object, policies: Sequence[Policy], cost: object) -> None:
    """The ValueErrors every limiter raises before counting anything."""
    if not isinstance(key, str) or not key:
        raise ValueError("the key must be a non-empty string: a key_id or an address")
    if isinstance(cost, bool) or not isinstance(cost, int) or cost < 0:
        raise ValueError(f"cost must be a whole number of at least 0, got {cost!r}")
    if len({p.name for p in policies}) != len(policies):
        raise ValueError("two policies of one request share a name")
    for policy in policies:
        if cost > policy.quota:
            raise ValueError(f"a cost of {cost} can never pass policy {policy.name!r}")


class FixedWindowRateLimiter:
    """``quota`` requests per window, the windows aligned on the clock (``now // window``).

    Implements RateLimiter and AsyncRateLimiter; the counts live in this process.
    """

    nonblocking = True  # no method waits for I/O (keyguard.NonBlocking)

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # (key, policy name) -> (the window's number, requests counted in it)
        self._counts: dict[tuple[str, str], tuple[int, int]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str, policies: Sequence[Policy], cost: int = 1) -> RateLimitDecision:
        check_arguments(key, policies, cost)
        now_ms = round(self._clock() * 1000)
        with self._lock:
            windows = []
            for policy in policies:
                window_ms = round(policy.window * 1000)
                number = now_ms // window_ms
                counted_in, count = self._counts.get((key, policy.name), (number, 0))
                if counted_in != number:
                    count = 0  # a new window: the whole quota is back
                windows.append((number, count, (number + 1) * window_ms - now_ms))
            allowed = all(
                count + cost <= p.quota for p, (_, count, _) in zip(policies, windows, strict=True)
            )
            if allowed and cost:
                for i, (policy, (number, count, ends_in)) in enumerate(
                    zip(policies, windows, strict=True)
                ):
                    self._counts[key, policy.name] = (number, count + cost)
                    windows[i] = (number, count + cost, ends_in)
        states = tuple(
            # the quota comes back whole when the window ends; nothing to wait for if unused
            PolicyState(p, max(0, p.quota - count), ends_in / 1000 if count else 0.0)
            for p, (_, count, ends_in) in zip(policies, windows, strict=True)
        )
        if allowed:
            return RateLimitDecision(True, states)
        retry_ms = max(
            ends_in
            for p, (_, count, ends_in) in zip(policies, windows, strict=True)
            if count + cost > p.quota
        )
        return RateLimitDecision(False, states, retry_ms / 1000)

    async def ahit(self, key: str, policies: Sequence[Policy], cost: int = 1) -> RateLimitDecision:
        return self.hit(key, policies, cost)

    def close(self) -> None:
        """Nothing to release."""

    async def aclose(self) -> None:
        """Nothing to release."""


class SlidingLogRateLimiter:
    """At most ``quota`` requests within any ``window``: each admitted request is logged
    with its time and cost, and counts until exactly one window has passed.

    Implements RateLimiter and AsyncRateLimiter; the logs live in this process and hold
    at most ``quota`` entries per key and policy.
    """

    nonblocking = True

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # (key, policy name) -> (time in ms, cost) of each admitted request, oldest first
        self._logs: dict[tuple[str, str], deque[tuple[int, int]]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str, policies: Sequence[Policy], cost: int = 1) -> RateLimitDecision:
        check_arguments(key, policies, cost)
        now_ms = round(self._clock() * 1000)
        with self._lock:
            logs = []
            for policy in policies:
                window_ms = round(policy.window * 1000)
                log = self._logs.setdefault((key, policy.name), deque())
                while log and log[0][0] + window_ms <= now_ms:
                    log.popleft()  # counted for a whole window: no longer
                logs.append((log, window_ms, sum(c for _, c in log)))
            allowed = all(
                used + cost <= p.quota for p, (_, _, used) in zip(policies, logs, strict=True)
            )
            if allowed and cost:
                for log, _, _ in logs:
                    log.append((now_ms, cost))
            states = []
            retry_ms = 0
            for policy, (log, window_ms, counted) in zip(policies, logs, strict=True):
                used = counted + cost if allowed else counted
                if not allowed and used + cost > policy.quota:
                    # wait until enough of the oldest requests have left the window
                    freed = 0
                    for at, spent in log:
                        freed += spent
                        if used - freed + cost <= policy.quota:
                            retry_ms = max(retry_ms, at + window_ms - now_ms)
                            break
                reset_ms = log[-1][0] + window_ms - now_ms if log else 0
                states.append(PolicyState(policy, max(0, policy.quota - used), reset_ms / 1000))
        return RateLimitDecision(allowed, tuple(states), retry_ms / 1000)

    async def ahit(self, key: str, policies: Sequence[Policy], cost: int = 1) -> RateLimitDecision:
        return self.hit(key, policies, cost)

    def close(self) -> None:
        """Nothing to release."""

    async def aclose(self) -> None:
        """Nothing to release."""
