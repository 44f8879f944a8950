"""A fixed-window and a sliding-log limiter, written as a third party would, keep what
every limiter promises (``RateLimiterContract``) and are not GCRA: the GCRA suite fails
them, which is why it is a suite of its own."""

from __future__ import annotations

import pytest

from keyguard.testing import (
    GCRA_RATE_LIMITER_CHECKS,
    AsyncRateLimiterContract,
    FakeClock,
    GCRARateLimiterContract,
    RateLimiterContract,
)
from tests.third_party.limiters import FixedWindowRateLimiter, SlidingLogRateLimiter


class TestFixedWindow(RateLimiterContract):
    @pytest.fixture
    def limiter(self, clock: FakeClock) -> FixedWindowRateLimiter:
        return FixedWindowRateLimiter(clock=clock.monotonic)


class TestFixedWindowAsync(AsyncRateLimiterContract):
    @pytest.fixture
    def async_limiter(self, clock: FakeClock) -> FixedWindowRateLimiter:
        return FixedWindowRateLimiter(clock=clock.monotonic)


class TestSlidingLog(RateLimiterContract):
    @pytest.fixture
    def limiter(self, clock: FakeClock) -> SlidingLogRateLimiter:
        return SlidingLogRateLimiter(clock=clock.monotonic)


class TestSlidingLogAsync(AsyncRateLimiterContract):
    @pytest.fixture
    def async_limiter(self, clock: FakeClock) -> SlidingLogRateLimiter:
        return SlidingLogRateLimiter(clock=clock.monotonic)


def _gcra_failures(make: type[FixedWindowRateLimiter | SlidingLogRateLimiter]) -> set[str]:
    """The checks of the GCRA suite that ``make``'s limiter fails, run as pytest would."""
    failed = set()
    for check in GCRA_RATE_LIMITER_CHECKS:
        clock = FakeClock()
        try:
            GCRARateLimiterContract().test_gcra_rate_limiter_contract(
                make(clock=clock.monotonic), clock, check
            )
        except AssertionError:
            failed.add(check)
    return failed


@pytest.mark.parametrize(
    ("make", "gcra_only"),
    [
        # An idle client's burst, then one request per window/quota: GCRA's shape.
        pytest.param(FixedWindowRateLimiter, "sustained_rate", id="fixed-window"),
        pytest.param(SlidingLogRateLimiter, "sustained_rate", id="sliding-log"),
        # Fewer at once than the quota, then the rate: no window has such a burst.
        pytest.param(FixedWindowRateLimiter, "burst_below_quota", id="fixed-window-burst"),
        pytest.param(SlidingLogRateLimiter, "burst_below_quota", id="sliding-log-burst"),
    ],
)
def test_other_algorithms_fail_the_gcra_suite(
    make: type[FixedWindowRateLimiter | SlidingLogRateLimiter], gcra_only: str
) -> None:
    failed = _gcra_failures(make)
    assert gcra_only in failed
    assert "no_policies" not in failed  # the suite ran, and judged each check on its own
