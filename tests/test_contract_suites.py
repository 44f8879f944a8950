"""The contract suites of keyguard.testing catch what they promise to catch: each backend
below breaks one promise, and the check named beside it fails it (run as pytest runs it)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from keyguard import KeyChanges, KeyRecord, StorageError
from keyguard.ratelimit import Policy, PolicyState, RateLimitDecision
from keyguard.stores import MemoryKeyStore
from keyguard.testing import (
    CANNOT_FAIL,
    FakeClock,
    KeyStoreContract,
    RateLimiterContract,
)
from tests.third_party.limiters import FixedWindowRateLimiter, SlidingLogRateLimiter

# -- stores -------------------------------------------------------------------------------


class NaiveTimes(MemoryKeyStore):
    """Hands datetimes back without their offset (a database column without a zone)."""

    def get(self, key_id: str) -> KeyRecord | None:
        record = super().get(key_id)
        if record is None or record.created_at is None:
            return record
        return replace(record, created_at=record.created_at.replace(tzinfo=None))


class WallClockTouch(MemoryKeyStore):
    """Compares last-used times by their wall-clock reading, not their instant."""

    def touch(self, last_used: Mapping[str, datetime]) -> None:
        for key_id, when in last_used.items():
            record = self._records.get(key_id)
            if record is not None and (
                record.last_used_at is None
                or record.last_used_at.replace(tzinfo=None) < when.replace(tzinfo=None)
            ):
                self._records[key_id] = replace(record, last_used_at=when)


class SortsByText(MemoryKeyStore):
    """Orders keys by the ISO text of created_at, which mixes up different offsets."""

    def list_keys(self, owner: str | None = None) -> list[KeyRecord]:
        records = super().list_keys(owner)
        return sorted(records, key=lambda r: r.created_at.isoformat() if r.created_at else "")


class LostUpdate(MemoryKeyStore):
    """Reads, lets the other writer read too, then writes the whole record back."""

    def __init__(self) -> None:
        super().__init__()
        self._both_read = threading.Barrier(2)

    def update(self, key_id: str, changes: KeyChanges) -> KeyRecord | None:
        record = self._records.get(key_id)
        self._both_read.wait(timeout=5)
        if record is None:
            return None
        record = self._records[key_id] = changes.apply(record)
        return record


class Failing(MemoryKeyStore):
    """Its backend is down, and its errors are the ``raise_`` callable's."""

    def __init__(self, raise_: Callable[[Any], Exception]) -> None:
        super().__init__()
        self._raise = raise_

    def _fail(self, *args: Any) -> Any:
        raise self._raise(args)

    get = add = update = revoke = list_keys = touch = _fail


class IOStore(MemoryKeyStore):
    """Says it cannot fail, but is not a store without I/O."""

    nonblocking = False  # type: ignore[misc]


def _quoted(args: Any) -> Exception:
    record = args[0] if args and isinstance(args[0], KeyRecord) else None
    secret = record.secret_hash if record else getattr(args[-1], "secret_hash", "")
    return StorageError(f"could not write {secret}")


@pytest.mark.parametrize(
    ("store", "check", "message"),
    [
        pytest.param(
            NaiveTimes, "aware_datetimes", "must come back timezone-aware", id="naive-datetimes"
        ),
        pytest.param(
            WallClockTouch,
            "aware_datetimes",
            "never backwards, by instant",
            id="touch-by-wall-clock",
        ),
        pytest.param(
            SortsByText, "aware_datetimes", "order by the instant", id="list-sorted-as-text"
        ),
        pytest.param(LostUpdate, "concurrent_updates", "undid one another", id="lost-update"),
    ],
)
def test_the_store_contract_catches(
    store: Callable[[], MemoryKeyStore], check: str, message: str
) -> None:
    with pytest.raises(AssertionError, match=message):
        KeyStoreContract().test_key_store_contract(store(), check)


class _Request:
    """The one fixture the failure check asks pytest for, in the CANNOT_FAIL case."""

    def __init__(self, store: object) -> None:
        self.store = store

    def getfixturevalue(self, name: str) -> object:
        return self.store


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        pytest.param(
            lambda: Failing(lambda _: ConnectionRefusedError(111, "refused")),
            "raised ConnectionRefusedError",
            id="driver-error-escapes",
        ),
        pytest.param(lambda: Failing(_quoted), "quotes the secret hash", id="hash-in-message"),
        pytest.param(MemoryKeyStore, "must raise StorageError, not return", id="never-fails"),
    ],
)
@pytest.mark.parametrize("operation", ["add", "update"])
def test_the_failure_check_catches(broken: Callable[[], Any], message: str, operation: str) -> None:
    with pytest.raises(AssertionError, match=message):
        KeyStoreContract().test_key_store_failure(broken(), operation, _Request(None))


def test_only_a_store_without_io_can_claim_it_cannot_fail() -> None:
    contract = KeyStoreContract()
    contract.test_key_store_failure(CANNOT_FAIL, "get", _Request(MemoryKeyStore()))
    with pytest.raises(AssertionError, match="does no I/O"):
        contract.test_key_store_failure(CANNOT_FAIL, "get", _Request(IOStore()))


# -- limiters -----------------------------------------------------------------------------


class Doctored:
    """A correct limiter whose decisions are changed on the way out by ``edit``."""

    def __init__(self, clock: FakeClock, edit: Callable[[RateLimitDecision], RateLimitDecision]):
        self._inner = FixedWindowRateLimiter(clock=clock.monotonic)
        self._edit = edit

    def hit(self, key: str, policies: Sequence[Policy], cost: int = 1) -> RateLimitDecision:
        return self._edit(self._inner.hit(key, policies, cost))


class SpendsWhenRefused(FixedWindowRateLimiter):
    """Counts a refused request against every policy that had room for it."""

    def hit(self, key: str, policies: Sequence[Policy], cost: int = 1) -> RateLimitDecision:
        got = super().hit(key, policies, cost)
        if not got.allowed:
            for policy in policies:
                super().hit(key, [policy], cost)
        return got


class LogsRefusals(SlidingLogRateLimiter):
    """Logs a refused request as if it had passed: a client that keeps trying never gets
    through (``INCR`` before the comparison, in a log that slides)."""

    def hit(self, key: str, policies: Sequence[Policy], cost: int = 1) -> RateLimitDecision:
        got = super().hit(key, policies, cost)
        if not got.allowed:
            now_ms = round(self._clock() * 1000)
            for policy in policies:
                self._logs[key, policy.name].append((now_ms, cost))
        return got


class TwiceTheQuota(FixedWindowRateLimiter):
    """Counts against a policy of twice the quota, and reports it as the one asked for."""

    def hit(self, key: str, policies: Sequence[Policy], cost: int = 1) -> RateLimitDecision:
        doubled = [Policy(p.name, p.quota * 2, p.window) for p in policies]
        got = super().hit(key, doubled, cost)
        states = tuple(  # what is left of the quota asked for, as if it were counted
            PolicyState(p, max(0, s.remaining - p.quota), s.reset_after)
            for p, s in zip(policies, got.states, strict=True)
        )
        return got._replace(states=states)


def _states(edit: Callable[[PolicyState], PolicyState]) -> Callable[..., RateLimitDecision]:
    return lambda got: got._replace(states=tuple(edit(s) for s in got.states))


def _doctored(edit: Callable[[RateLimitDecision], RateLimitDecision]) -> Callable[..., Any]:
    return lambda clock: Doctored(clock, edit)


@pytest.mark.parametrize(
    ("make", "check", "message"),
    [
        pytest.param(
            _doctored(_states(lambda s: s._replace(remaining=s.remaining or -1))),
            "fresh_key_spends_its_quota",
            "never negative",
            id="remaining-below-zero",
        ),
        pytest.param(
            _doctored(lambda got: got if got.allowed else got._replace(retry_after=0.0)),
            "fresh_key_spends_its_quota",
            "retry_after > 0",
            id="refused-without-retry-after",
        ),
        pytest.param(
            _doctored(lambda got: got._replace(retry_after=got.retry_after / 2)),
            "waiting_is_enough",
            "waiting retry_after",
            id="retry-after-too-short",
        ),
        pytest.param(
            _doctored(_states(lambda s: s._replace(reset_after=0.0))),
            "cost",
            "reset_after must be 0 exactly when",
            id="reset-after-zero-with-requests-spent",
        ),
        pytest.param(
            _doctored(lambda got: got._replace(states=got.states[::-1])),
            "all_or_nothing",
            "in the order given",
            id="states-out-of-order",
        ),
        pytest.param(
            lambda clock: LogsRefusals(clock=clock.monotonic),
            "refused_spends_nothing",
            "must fare like one that was not",
            id="refusal-spends",
        ),
        pytest.param(
            lambda clock: SpendsWhenRefused(clock=clock.monotonic),
            "all_or_nothing",
            "must count against none",
            id="refusal-spends-other-policies",
        ),
        pytest.param(
            lambda clock: TwiceTheQuota(clock=clock.monotonic),
            "at_most_quota_per_window",
            r"passed within \d window\(s\)",
            id="twice-the-quota",
        ),
    ],
)
def test_the_limiter_contract_catches(
    make: Callable[[FakeClock], Any], check: str, message: str
) -> None:
    clock = FakeClock()
    with pytest.raises(AssertionError, match=message):
        RateLimiterContract().test_rate_limiter_contract(make(clock), clock, check)
