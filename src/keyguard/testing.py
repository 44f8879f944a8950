"""Test support: a fake clock and the backend contract suites (needs pytest).

Run the key-store contract against your own store::

    from keyguard.testing import AsyncKeyStoreContract, KeyStoreContract

    class TestMyStore(KeyStoreContract):
        @pytest.fixture
        def store(self):
            store = MyStore(...)  # fresh and empty
            yield store
            store.close()

        @pytest.fixture
        def broken_store(self):
            return MyStore(...)  # its backend unreachable: every call fails

``AsyncKeyStoreContract`` wants an ``async_store`` fixture (and an
``async_broken_store``) and runs under ``pytest.mark.anyio``. Each check is
written once, as a flow, and driven sync or async exactly as keyguard drives
its own operations.

``RateLimiterContract`` and ``AsyncRateLimiterContract`` do the same for rate
limiters (``limiter`` and ``async_limiter`` fixtures, on the ``clock``
fixture those classes provide): what every limiter promises, whatever its
algorithm. ``GCRARateLimiterContract`` and ``AsyncGCRARateLimiterContract``
add GCRA's exact figures, for limiters that implement GCRA as keyguard's own
do. ``docs/custom-backends.md`` lists every check.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ._drive import drive_async, drive_sync
from ._limiter_contract import (
    BAD_RATE_LIMIT_REQUESTS,
    GCRA_RATE_LIMITER_CHECKS,
    RATE_LIMITER_CHECKS,
    SOME_POLICY,
)
from ._steps import Backends
from ._store_contract import (
    ASYNC_FAILING_OPERATIONS,
    CANNOT_FAIL,
    FAILING_OPERATIONS,
    KEY_STORE_CHECKS,
    check,
    check_cannot_fail,
    check_failure,
    sample_record,
)

__all__ = [
    "BAD_RATE_LIMIT_REQUESTS",
    "CANNOT_FAIL",
    "GCRA_RATE_LIMITER_CHECKS",
    "KEY_STORE_CHECKS",
    "RATE_LIMITER_CHECKS",
    "AsyncGCRARateLimiterContract",
    "AsyncKeyStoreContract",
    "AsyncRateLimiterContract",
    "FakeClock",
    "GCRARateLimiterContract",
    "KeyStoreContract",
    "RateLimiterContract",
    "sample_record",
]


class FakeClock:
    """A clock that moves only when told to, for tests that never sleep.

    ``now()`` is wall time (UTC), ``monotonic()`` seconds; :meth:`advance`
    moves both together. Thread-safe.
    """

    def __init__(
        self, start: datetime = datetime(2026, 1, 1, tzinfo=UTC), monotonic_start: float = 1000.0
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock start must be timezone-aware")
        self._wall = start
        self._mono = monotonic_start
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FakeClock(now={self._wall.isoformat()}, monotonic={self._mono})"

    def now(self) -> datetime:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float | timedelta) -> None:
        """Move time forward.

        Raises:
            ValueError: ``seconds`` is negative; time never goes back.
        """
        delta = seconds.total_seconds() if isinstance(seconds, timedelta) else float(seconds)
        if delta < 0:
            raise ValueError("a FakeClock only moves forward")
        with self._lock:
            self._mono += delta
            self._wall += timedelta(seconds=delta)


_NO_BROKEN_STORE = (
    "no broken_store fixture: give the test class one that returns the store with its "
    "backend failing (a closed port, a missing file), so the contract can check that every "
    "failure surfaces as keyguard.StorageError; return keyguard.testing.CANNOT_FAIL only for "
    "a store that does no I/O at all"
)


class KeyStoreContract:
    """Mix into a test class that has a ``store`` fixture (a fresh, empty ``KeyStore``).

    Give the class a ``broken_store`` fixture too: the store with its backend
    failing (a database on a closed port, a file that cannot be read), on
    which every operation must raise :class:`~keyguard.StorageError`. A store
    that does no I/O at all (``nonblocking = True``, as ``MemoryKeyStore``)
    has nothing underneath to fail: its ``broken_store`` returns
    :data:`CANNOT_FAIL`, and the check then holds it to doing no I/O.
    Without the fixture the failure checks are skipped, saying so.
    """

    @pytest.fixture
    def broken_store(self) -> Any:
        pytest.skip(_NO_BROKEN_STORE)

    @pytest.mark.parametrize("check", sorted(KEY_STORE_CHECKS))
    def test_key_store_contract(self, store: Any, check: str) -> None:
        drive_sync(KEY_STORE_CHECKS[check](), Backends(store))

    @pytest.mark.parametrize("operation", sorted(FAILING_OPERATIONS))
    def test_key_store_failure(
        self, broken_store: Any, operation: str, request: pytest.FixtureRequest
    ) -> None:
        if broken_store is CANNOT_FAIL:
            check_cannot_fail(request.getfixturevalue("store"))
            return
        try:
            FAILING_OPERATIONS[operation](broken_store)
        except Exception as exc:
            check_failure(operation, exc)
        else:
            check_failure(operation, None)


class AsyncKeyStoreContract:
    """Mix into a test class with an ``async_store`` fixture (a fresh, empty
    ``AsyncKeyStore``) and an ``async_broken_store`` one (see :class:`KeyStoreContract`)."""

    @pytest.fixture
    def async_broken_store(self) -> Any:
        pytest.skip(_NO_BROKEN_STORE.replace("broken_store", "async_broken_store", 1))

    @pytest.mark.anyio
    @pytest.mark.parametrize("check", sorted(KEY_STORE_CHECKS))
    async def test_async_key_store_contract(self, async_store: Any, check: str) -> None:
        await drive_async(KEY_STORE_CHECKS[check](), Backends(async_store))

    @pytest.mark.anyio
    @pytest.mark.parametrize("operation", sorted(ASYNC_FAILING_OPERATIONS))
    async def test_async_key_store_failure(
        self, async_broken_store: Any, operation: str, request: pytest.FixtureRequest
    ) -> None:
        if async_broken_store is CANNOT_FAIL:
            check_cannot_fail(request.getfixturevalue("async_store"))
            return
        try:
            await ASYNC_FAILING_OPERATIONS[operation](async_broken_store)
        except Exception as exc:
            check_failure(operation, exc)
        else:
            check_failure(operation, None)


# -- the rate-limiter contracts --------------------------------------------------------
#
# Run them against your own limiter:
#
#     class TestMyLimiter(RateLimiterContract):
#         @pytest.fixture
#         def limiter(self, clock):
#             return MyLimiter(clock=clock.monotonic)  # fresh, on the contract's clock
#
# ``AsyncRateLimiterContract`` wants an ``async_limiter`` fixture. The classes provide
# the ``clock`` fixture (a :class:`FakeClock`); the limiter must count time from it, in
# whole milliseconds. Each check is one flow, driven sync or async.


class RateLimiterContract:
    """Mix into a test class with a ``limiter`` fixture: a fresh ``RateLimiter``
    that reads its time from the ``clock`` fixture this class provides.

    The checks hold for any correct limiter, whatever its algorithm (fixed
    window, sliding log, GCRA): see ``docs/custom-backends.md``.
    """

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.mark.parametrize("check", sorted(RATE_LIMITER_CHECKS))
    def test_rate_limiter_contract(self, limiter: Any, clock: FakeClock, check: str) -> None:
        drive_sync(RATE_LIMITER_CHECKS[check](clock), Backends(limiter=limiter))

    @pytest.mark.parametrize("bad", sorted(BAD_RATE_LIMIT_REQUESTS))
    def test_rate_limiter_rejects(self, limiter: Any, bad: str) -> None:
        key, policies, cost = BAD_RATE_LIMIT_REQUESTS[bad]
        with pytest.raises(ValueError, match=r"."):
            limiter.hit(key, policies, cost)
        got = limiter.hit("k", (SOME_POLICY,), 0)
        check(got.states[0].remaining == 3, "a refused call must not count anything")


class AsyncRateLimiterContract:
    """Mix into a test class with an ``async_limiter`` fixture (an ``AsyncRateLimiter``
    on the ``clock`` fixture this class provides); see :class:`RateLimiterContract`."""

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.mark.anyio
    @pytest.mark.parametrize("check", sorted(RATE_LIMITER_CHECKS))
    async def test_async_rate_limiter_contract(
        self, async_limiter: Any, clock: FakeClock, check: str
    ) -> None:
        await drive_async(RATE_LIMITER_CHECKS[check](clock), Backends(limiter=async_limiter))

    @pytest.mark.anyio
    @pytest.mark.parametrize("bad", sorted(BAD_RATE_LIMIT_REQUESTS))
    async def test_async_rate_limiter_rejects(self, async_limiter: Any, bad: str) -> None:
        key, policies, cost = BAD_RATE_LIMIT_REQUESTS[bad]
        with pytest.raises(ValueError, match=r"."):
            await async_limiter.ahit(key, policies, cost)
        got = await async_limiter.ahit("k", (SOME_POLICY,), 0)
        check(got.states[0].remaining == 3, "a refused call must not count anything")


class GCRARateLimiterContract:
    """GCRA's exact figures, to the millisecond, for a ``limiter`` fixture on ``clock``.

    For limiters that implement GCRA (``keyguard.ratelimit.gcra``), as keyguard's
    memory and Redis limiters do, in addition to :class:`RateLimiterContract`.
    A limiter of another algorithm fails it, and need not run it.
    """

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.mark.parametrize("check", sorted(GCRA_RATE_LIMITER_CHECKS))
    def test_gcra_rate_limiter_contract(self, limiter: Any, clock: FakeClock, check: str) -> None:
        drive_sync(GCRA_RATE_LIMITER_CHECKS[check](clock), Backends(limiter=limiter))


class AsyncGCRARateLimiterContract:
    """:class:`GCRARateLimiterContract` for an ``async_limiter`` fixture."""

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.mark.anyio
    @pytest.mark.parametrize("check", sorted(GCRA_RATE_LIMITER_CHECKS))
    async def test_async_gcra_rate_limiter_contract(
        self, async_limiter: Any, clock: FakeClock, check: str
    ) -> None:
        await drive_async(GCRA_RATE_LIMITER_CHECKS[check](clock), Backends(limiter=async_limiter))
