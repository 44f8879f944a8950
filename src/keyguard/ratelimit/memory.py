"""The in-process rate limiter: the embedded default, and the ``"local"`` fallback of Redis."""

from __future__ import annotations

import time
from collections.abc import Callable

from ._memory import MemoryLimiterBase

__all__ = ["MemoryRateLimiter"]


class MemoryRateLimiter(MemoryLimiterBase):
    """GCRA limits kept in this process's memory. Implements ``RateLimiter`` and
    ``AsyncRateLimiter`` (``ahit`` never waits for anything).

    The limit applies per process: behind N worker processes a client gets N
    times the quota. Use :class:`~keyguard.ratelimit.redis.RedisRateLimiter`
    to share one exact limit across processes and machines.

    Memory is bounded by ``max_keys``: past it, the key used least recently
    is forgotten, and that client starts again with a full burst. An attacker
    who can make the limiter track many keys (e.g. one per client address on
    unauthenticated routes) can push others out, so size ``max_keys`` above
    the number of clients active within one burst period. There are no
    background threads; a forgotten key costs nothing.

    Thread-safe: one lock guards the state, held for a few dict operations.

    Args:
        clock: Monotonic seconds; inject ``FakeClock().monotonic`` in tests.
            Counted in whole milliseconds.
        max_keys: The most keys remembered at once, at least 1.
    """

    #: No I/O: async drivers call the sync methods directly (see ``drive_async``).
    nonblocking = True

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ValueError(f"max_keys must be a whole number of at least 1, got {max_keys!r}")
        super().__init__(clock, max_keys)
