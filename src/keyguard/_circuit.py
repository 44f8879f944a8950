"""A circuit breaker: stop calling a backend that keeps failing, and probe it one call at a time.

A backend that hangs or refuses connections costs every request its full
timeout. After ``failure_threshold`` failures in a row the breaker *opens*:
for ``reset_timeout`` seconds every call fails at once with
:class:`~keyguard.CircuitOpenError`, without touching the backend, so a
request is a prompt 503 (with ``Retry-After``) and no thread or connection
waits on a dead server. Then the breaker lets exactly one call through as a
*probe* (half-open); the others keep failing fast. A probe that succeeds
closes the breaker; one that fails opens it for another ``reset_timeout``::

    closed --(failure_threshold failures in a row)--> open
    open --(reset_timeout passed; the next call probes)--> half-open
    half-open --(probe succeeds)--> closed
    half-open --(probe fails)--> open

The caller reports each call's outcome: :meth:`CircuitBreaker.admit` before
it, then :meth:`CircuitBreaker.succeeded`, :meth:`CircuitBreaker.failed` or,
for a call that proved nothing about the backend (a bad argument refused
before any I/O, a cancelled task), :meth:`CircuitBreaker.abandoned`. A probe
that never reports (its thread died) holds the half-open state for at most
``reset_timeout`` seconds; then another call may probe.

The breaker is thread-safe and shared by a store's sync and async methods:
one backend, one breaker. A closed breaker costs a call one attribute read
before it and, after a success, one more. It logs (logger ``keyguard``) when
it opens (a warning), when a probe fails and when it closes again; the calls
it refuses in between are not logged one by one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final, Literal

from ._errors import CircuitOpenError

__all__ = ["DEFAULT_FAILURE_THRESHOLD", "DEFAULT_RESET_TIMEOUT", "CircuitBreaker", "CircuitState"]

#: Failures in a row that open the breaker.
DEFAULT_FAILURE_THRESHOLD: Final = 3
#: Seconds an open breaker fails calls before it lets a probe through.
DEFAULT_RESET_TIMEOUT: Final = 2.0

CircuitState = Literal["closed", "open", "half-open"]

logger: Final = logging.getLogger("keyguard")


class CircuitBreaker:
    """Fails calls fast while a backend is down, and finds out when it is back.

    Args:
        failure_threshold: Failures in a row that open the breaker (default 3).
        reset_timeout: Seconds an open breaker refuses calls before one probe
            is let through (default 2.0); also the ``retry_after`` of the
            :class:`~keyguard.CircuitOpenError` it raises.
        name: What the breaker guards, for messages (``"SQL key store"``).
        clock: Monotonic seconds (``FakeClock().monotonic`` in tests).

    Raises:
        TypeError: ``failure_threshold`` is not a whole number.
        ValueError: A threshold below 1 or a timeout that is not positive.
    """

    __slots__ = (
        "_clock",
        "_failures",
        "_lock",
        "_opened_at",
        "_probe_started",
        "_state",
        "failure_threshold",
        "name",
        "reset_timeout",
    )

    def __init__(
        self,
        *,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        reset_timeout: float = DEFAULT_RESET_TIMEOUT,
        name: str = "backend",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(failure_threshold, bool) or not isinstance(failure_threshold, int):
            raise TypeError(f"failure_threshold must be a whole number, got {failure_threshold!r}")
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if not reset_timeout > 0:
            raise ValueError("reset_timeout must be a positive number of seconds")
        self.failure_threshold = failure_threshold
        self.reset_timeout = float(reset_timeout)
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._state: CircuitState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probe_started = 0.0

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker({self.name!r}, state={self._state!r}, "
            f"failure_threshold={self.failure_threshold}, reset_timeout={self.reset_timeout})"
        )

    @property
    def state(self) -> CircuitState:
        """``"closed"`` (calls pass), ``"open"`` (calls fail fast) or ``"half-open"`` (probing)."""
        return self._state

    def admit(self) -> bool:
        """Ask before calling the backend; True when this call is the probe.

        Raises:
            CircuitOpenError: The breaker is open, or another call is probing.
        """
        if self._state == "closed":
            return False
        return self._admit_when_failing()

    def _admit_when_failing(self) -> bool:
        now = self._clock()
        with self._lock:
            state = self._state
            if state == "closed":
                return False
            if state == "open":
                wait = self._opened_at + self.reset_timeout - now
                if wait > 0:
                    raise self._refusal(wait)
            elif now - self._probe_started < self.reset_timeout:  # half-open, a probe running
                raise self._refusal(self.reset_timeout - (now - self._probe_started))
            self._state = "half-open"
            self._probe_started = now
            return True

    def succeeded(self, probe: bool) -> None:
        """The call reached the backend and it answered: a probe closes the breaker."""
        if not probe and self._failures == 0:
            return
        with self._lock:
            if probe:
                logger.info("%s answers again; circuit closed", self.name)
            if probe or self._state == "closed":
                self._state = "closed"
                self._failures = 0

    def failed(self, probe: bool) -> None:
        """The backend failed the call (unreachable, timed out, broken connection)."""
        now = self._clock()
        with self._lock:
            if probe:
                self._open(now)
                logger.info(
                    "%s still fails; not called for another %.1f s", self.name, self.reset_timeout
                )
            elif self._state == "closed":
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    self._open(now)
                    logger.warning(
                        "%s failed %d times in a row; not called for %.1f s (circuit open)",
                        self.name,
                        self.failure_threshold,
                        self.reset_timeout,
                    )

    def abandoned(self, probe: bool) -> None:
        """The call ended without telling anything about the backend; the next call may probe."""
        if not probe:
            return
        with self._lock:
            if self._state == "half-open":
                self._state = "open"
                self._opened_at = self._clock() - self.reset_timeout

    def _open(self, now: float) -> None:
        self._state = "open"
        self._opened_at = now
        self._failures = 0

    def _refusal(self, wait: float) -> CircuitOpenError:
        return CircuitOpenError(
            f"{self.name}: not called for {wait:.1f} s more after "
            f"{self.failure_threshold} failures in a row (circuit open)",
            retry_after=wait,
        )
