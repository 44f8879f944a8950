"""Time, injected: wall-clock time for key records, monotonic time for limits and caches."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock"]


class Clock(Protocol):
    """**Protocol**: where keyguard reads the time. ``keyguard.testing.FakeClock`` in tests."""

    def now(self) -> datetime:
        """The current wall-clock time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, never going backwards."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    #: ``time.monotonic`` itself: read on every request, so without a wrapper call.
    monotonic = staticmethod(time.monotonic)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()
