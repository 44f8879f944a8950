"""The in-process rate limiter: the embedded default, and the ``"local"`` fallback of Redis."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Final

from . import gcra
from ._base import DistinctPolicies, PolicyState, RateLimitDecision, check_request
from ._policy import _MAX_EXACT, Policy

__all__ = ["MemoryRateLimiter"]

_NOTHING_APPLIES: Final = RateLimitDecision(True, ())


#: PolicyState(...) and RateLimitDecision(...) run a Python-level __new__; on every hit this
#: makes them with tuple's own (the same fields; a decision made here is never degraded).
_new = tuple.__new__

#: A stored TAT ``(tat_ms, frac)`` is kept as one int, ``tat_ms << _FRAC_BITS | frac`` (a
#: fraction is below the quota, and a Policy's quota below ``_MAX_EXACT``). The garbage
#: collector tracks a tuple, not an int: so a hit leaves nothing for it to walk, and a key's
#: dict of TATs stays untracked, however many keys are in use.
_FRAC_BITS: Final = _MAX_EXACT.bit_length()
_FRAC_MASK: Final = (1 << _FRAC_BITS) - 1


def _unpacked(stored: int | None) -> tuple[int, int] | None:
    return None if stored is None else (stored >> _FRAC_BITS, stored & _FRAC_MASK)


class MemoryRateLimiter:
    """GCRA limits kept in this process's memory. Implements ``RateLimiter`` and
    ``AsyncRateLimiter`` (``ahit`` never waits for anything).

    The limit applies per process: behind N worker processes a client gets N
    times the quota. Use :class:`~keyguard.ratelimit.redis.RedisRateLimiter`
    to share one exact limit across processes and machines.

    Memory is bounded by ``max_keys``: past it, the key used least recently
    is forgotten (in O(1)), and that client starts again with a full burst.
    An attacker who can make the limiter track many keys (e.g. one per client
    address on unauthenticated routes) can push others out, so size
    ``max_keys`` above the number of clients active within one burst period.
    There are no background threads; a forgotten key costs nothing.

    Thread-safe: one lock guards the state, held for a few dict operations.

    Args:
        clock: Monotonic seconds; inject ``FakeClock().monotonic`` in tests.
            Counted in whole milliseconds.
        max_keys: The most keys remembered at once, at least 1.

    Raises:
        ValueError: ``max_keys`` is not a whole number of at least 1.
    """

    #: No I/O: an async caller may call the sync methods directly (``NonBlocking``).
    nonblocking: Final = True

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ValueError(f"max_keys must be a whole number of at least 1, got {max_keys!r}")
        self._clock = clock
        self._max_keys = max_keys
        #: Per key, the stored TAT of each policy (by name, packed), least recently used first.
        self._keys: OrderedDict[str, dict[str, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryRateLimiter(keys={len(self._keys)}, max_keys={self._max_keys})"

    def __len__(self) -> int:
        """The number of keys remembered."""
        return len(self._keys)

    def hit(self, key: str, policies: Sequence[Policy], cost: int = 1) -> RateLimitDecision:
        """See :meth:`keyguard.ratelimit.RateLimiter.hit`."""
        # The middleware's hits (a key_id or an address, cost 1, one policy or a route's
        # DistinctPolicies, whose names were checked when it was made) are valid by
        # construction: they skip the general check, which anything else gets.
        if not (
            key.__class__ is str
            and key
            and cost.__class__ is int
            and cost == 1
            and (len(policies) == 1 or policies.__class__ is DistinctPolicies)
        ):
            check_request(key, policies, cost)
            if not policies:
                return _NOTHING_APPLIES
            # The loop below stores as it goes: a cost no policy could ever admit (only a
            # cost above 1 can be one) must be refused before it starts.
            gcra.check_costs(cost, [policy._params for policy in policies])
        now_ms = int(self._clock() * 1000 + 0.5)
        lock = self._lock
        lock.acquire()  # not `with`: the same, for half the cost on every request
        try:
            keys = self._keys
            tats = keys.get(key)
            if tats is None:
                tats = keys[key] = {}
                if len(keys) > self._max_keys:
                    keys.popitem(last=False)
            else:
                keys.move_to_end(key)
            # The common case, every policy admitting the request, in one pass that stores
            # each new state as it goes; a refusal puts back what was stored before it, and
            # the request is decided again, in full, by gcra.check.
            states = []
            replaced = []
            for policy in policies:
                before = tats.get(policy.name)
                allowed, _, remaining, reset_ms, tat, _ = gcra.check_one(
                    now_ms,
                    cost,
                    policy._params,
                    _unpacked(before),
                )
                if not allowed:
                    break
                if tat is not None:
                    tats[policy.name] = tat[0] << _FRAC_BITS | tat[1]
                replaced.append(before)
                states.append(_new(PolicyState, (policy, remaining, reset_ms / 1000)))
            else:
                return _new(RateLimitDecision, (True, tuple(states), 0.0, None))
            for policy, before in zip(policies, replaced):  # noqa: B905 (the admitting ones)
                if before is None:
                    tats.pop(policy.name, None)
                else:
                    tats[policy.name] = before
            outcome = gcra.check(
                now_ms,
                cost,
                [p._params for p in policies],
                [_unpacked(tats.get(p.name)) for p in policies],
            )
        finally:
            lock.release()
        refused = tuple(
            [
                _new(PolicyState, (policy, result[2], result[3] / 1000))
                for policy, result in zip(policies, outcome.results, strict=True)
            ]
        )
        return _new(RateLimitDecision, (False, refused, outcome.retry_ms / 1000, None))

    async def ahit(self, key: str, policies: Sequence[Policy], cost: int = 1) -> RateLimitDecision:
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
