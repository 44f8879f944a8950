"""The state and arithmetic of :class:`~keyguard.ratelimit.MemoryRateLimiter`.

Kept apart from the public class so that the compiled build compiles this part
(it runs on every request) while the public class, its argument checks and its
subclasses stay plain Python in both builds.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Final, cast

from . import gcra
from ._base import PolicyState, RateLimitDecision, check_request
from ._policy import Policy

__all__ = ["MemoryLimiterBase"]

_ALLOW_NOTHING_APPLIES = RateLimitDecision(True, ())
# The hot path builds its named tuples without the generated __new__ wrapper.
_new_decision: Final = tuple.__new__
_new_state: Final = tuple.__new__


class MemoryLimiterBase:
    """GCRA state per key in this process's memory; see ``MemoryRateLimiter``.

    Args:
        clock: Monotonic seconds.
        max_keys: The most keys remembered at once (checked by the subclass).
    """

    def __init__(self, clock: Callable[[], float], max_keys: int) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._keys: OrderedDict[str, dict[str, tuple[int, int]]] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryRateLimiter(keys={len(self._keys)}, max_keys={self._max_keys})"

    def __len__(self) -> int:
        """The number of keys remembered."""
        return len(self._keys)

    def hit(self, key: object, policies: Sequence[Policy], cost: object = 1) -> RateLimitDecision:
        """See :meth:`keyguard.ratelimit.RateLimiter.hit`.

        ``key`` and ``cost`` are annotated ``object`` and checked here, so that a
        bad argument gets the same ``ValueError`` in the compiled build, which
        would otherwise convert or refuse it by its annotation first.
        """
        if type(key) is str and type(cost) is int and key and cost >= 0:
            client, count = key, cost
        else:
            check_request(key, policies, cost)  # raises, unless key is a str subclass
            client, count = cast(str, key), cast(int, cost)
        if len(policies) != 1:
            return self._hit_many(client, policies, count)
        policy = policies[0]
        params = policy._params
        name = params[0]
        now_ms = int(self._clock() * 1000 + 0.5)
        keys = self._keys
        lock = self._lock
        lock.acquire()  # not `with`: this runs on every request, and try/finally is cheaper
        try:
            tats = keys.get(client)
            if tats is None:
                tats = self._add_key(client)
            else:
                keys.move_to_end(client)
            allowed, retry_ms, remaining, reset_ms, tat, _ = gcra.check_one(
                now_ms, count, params, tats.get(name)
            )
            if tat is not None:
                tats[name] = tat
        finally:
            lock.release()
        return _new_decision(
            RateLimitDecision,
            (
                allowed,
                (_new_state(PolicyState, (policy, remaining, reset_ms / 1000)),),
                retry_ms / 1000,
                None,
            ),
        )

    def _hit_many(self, key: str, policies: Sequence[Policy], cost: int) -> RateLimitDecision:
        check_request(key, policies, cost)  # the names of the policies
        if not policies:
            return _ALLOW_NOTHING_APPLIES
        params = [p._params for p in policies]
        now_ms = int(self._clock() * 1000 + 0.5)
        with self._lock:
            tats = self._keys.get(key)
            if tats is None:
                tats = self._add_key(key)
            else:
                self._keys.move_to_end(key)
            allowed, retry_ms, results = gcra.check(
                now_ms, cost, params, [tats.get(p.name) for p in params]
            )
            if allowed and cost:
                for p, result in zip(params, results, strict=True):
                    tats[p.name] = result[4]  # type: ignore[assignment]
        return _new_decision(
            RateLimitDecision,
            (
                allowed,
                tuple(
                    [
                        _new_state(PolicyState, (policy, result[2], result[3] / 1000))
                        for policy, result in zip(policies, results, strict=True)
                    ]
                ),
                retry_ms / 1000,
                None,
            ),
        )

    def _add_key(self, key: str) -> dict[str, tuple[int, int]]:
        # Called with the lock held.
        tats: dict[str, tuple[int, int]] = {}
        self._keys[key] = tats
        if len(self._keys) > self._max_keys:
            self._keys.popitem(last=False)
        return tats

    async def ahit(
        self, key: object, policies: Sequence[Policy], cost: object = 1
    ) -> RateLimitDecision:
        """See :meth:`hit`; no I/O, so it completes without yielding to the event loop."""
        return self.hit(key, policies, cost)

    def reset(self, key: str | None = None) -> None:
        """Forget ``key`` (every key when None): it starts again with a full burst."""
        with self._lock:
            if key is None:
                self._keys.clear()
            else:
                self._keys.pop(key, None)

    def close(self) -> None:
        """Nothing to release; present for the ``RateLimiter`` protocol."""

    async def aclose(self) -> None:
        """Nothing to release; present for the ``AsyncRateLimiter`` protocol."""
