"""Test support: a fake clock and the backend contract suites (needs pytest).

Run the key-store contract against your own store::

    from keyguard.testing import AsyncKeyStoreContract, KeyStoreContract

    class TestMyStore(KeyStoreContract):
        @pytest.fixture
        def store(self):
            store = MyStore(...)  # fresh and empty
            yield store
            store.close()

``AsyncKeyStoreContract`` wants an ``async_store`` fixture and runs under
``pytest.mark.anyio``. Each check is written once, as a flow, and driven sync
or async exactly as keyguard drives its own operations.

``RateLimiterContract`` and ``AsyncRateLimiterContract`` do the same for
rate limiters (``limiter`` and ``async_limiter`` fixtures, on the ``clock``
fixture those classes provide).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ._drive import Flow, drive_async, drive_sync
from ._keys import generate_key
from ._records import KeyChanges, KeyRecord
from ._steps import (
    AddKey,
    Backends,
    GetKey,
    HitLimit,
    ListKeys,
    RevokeKey,
    TouchKeys,
    UpdateKey,
)
from .ratelimit._policy import Policy

__all__ = [
    "AsyncKeyStoreContract",
    "AsyncRateLimiterContract",
    "FakeClock",
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


_T0 = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


def sample_record(owner: str = "acme", **overrides: Any) -> KeyRecord:
    """A record with every field filled in, for store tests."""
    key = generate_key()
    fields: dict[str, Any] = {
        "key_id": key.key_id,
        "owner": owner,
        "name": "ci deploy",
        "environment": "live",
        "secret_hash": "sha256$" + "ab" * 32,
        "scopes": frozenset({"billing:read", "billing:write"}),
        "created_at": _T0,
        "expires_at": _T0 + timedelta(days=30),
        "metadata": {"team": "payments", "limits": [1, 2], "nested": {"a": None}},
        "rate_limit": Policy("per-key", quota=50, window=60.0, burst=10),
    }
    fields.update(overrides)
    return KeyRecord(**fields)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _stored(record: KeyRecord | None, message: str) -> KeyRecord:
    if record is None:
        raise AssertionError(message)
    return record


def _round_trip() -> Flow[None]:
    record = sample_record()
    yield from AddKey(record)
    got = yield from GetKey(record.key_id)
    _check(got == record, f"get returned {got!r}, expected {record!r}")
    bare = sample_record(scopes=frozenset(), expires_at=None, metadata={}, rate_limit=None, name="")
    yield from AddKey(bare)
    got = yield from GetKey(bare.key_id)
    _check(got == bare, f"get returned {got!r} for a record with empty fields")


def _unknown() -> Flow[None]:
    got = yield from GetKey("AAAAAAAAAAAA")
    _check(got is None, "get of an unknown key_id must return None")
    got = yield from UpdateKey("AAAAAAAAAAAA", KeyChanges(name="x"))
    _check(got is None, "update of an unknown key_id must return None")
    got = yield from RevokeKey("AAAAAAAAAAAA", _T0)
    _check(got is None, "revoke of an unknown key_id must return None")
    yield from TouchKeys({"AAAAAAAAAAAA": _T0})


def _duplicate() -> Flow[None]:
    from ._errors import DuplicateKeyError  # noqa: PLC0415 (keeps the namespace small)

    record = sample_record()
    yield from AddKey(record)
    try:
        yield from AddKey(replace(record, owner="someone-else"))
    except DuplicateKeyError:
        pass
    else:
        raise AssertionError("adding a second record with the same key_id must raise")
    got = yield from GetKey(record.key_id)
    _check(got == record, "a refused duplicate must not change the stored record")


def _update() -> Flow[None]:
    record = sample_record()
    yield from AddKey(record)
    changes = KeyChanges(scopes=frozenset({"x"}), expires_at=None, metadata={"k": "v"})
    got = yield from UpdateKey(record.key_id, changes)
    expected = changes.apply(record)
    _check(got == expected, f"update returned {got!r}, expected {expected!r}")
    got = yield from GetKey(record.key_id)
    _check(got == expected, "update was not stored")
    changes = KeyChanges(secret_hash="sha256$" + "cd" * 32, rate_limit=None, replaced_by="B" * 12)
    got = yield from UpdateKey(record.key_id, changes)
    _check(got == changes.apply(expected), "second update lost or changed other fields")


def _revoke() -> Flow[None]:
    record = sample_record()
    yield from AddKey(record)
    first = _T0 + timedelta(hours=1)
    got = yield from RevokeKey(record.key_id, first)
    _check(got is not None and got.revoked_at == first, "revoke must set revoked_at")
    got = yield from RevokeKey(record.key_id, first + timedelta(hours=1))
    _check(
        got is not None and got.revoked_at == first,
        "revoking again must keep the first revoked_at",
    )
    got = yield from GetKey(record.key_id)
    _check(got is not None and got.revoked_at == first, "revoke was not stored")


def _list_keys() -> Flow[None]:
    a1 = sample_record("alpha", created_at=_T0)
    b1 = sample_record("beta", created_at=_T0 + timedelta(seconds=1))
    a2 = sample_record("alpha", created_at=_T0 + timedelta(seconds=2))
    for record in (a1, b1, a2):
        yield from AddKey(record)
    alpha = yield from ListKeys("alpha")
    _check([r.key_id for r in alpha] == [a1.key_id, a2.key_id], "list_keys(owner) oldest first")
    everyone = yield from ListKeys(None)
    _check(
        [r.key_id for r in everyone] == [a1.key_id, b1.key_id, a2.key_id],
        "list_keys() must list every key, oldest first",
    )
    nobody = yield from ListKeys("nobody")
    _check(list(nobody) == [], "list_keys of an unknown owner must be empty")


def _touch() -> Flow[None]:
    r1, r2 = sample_record(), sample_record()
    for record in (r1, r2):
        yield from AddKey(record)
    later = _T0 + timedelta(minutes=5)
    yield from TouchKeys({r1.key_id: later, r2.key_id: _T0})
    got1 = _stored((yield from GetKey(r1.key_id)), "touch must keep the record")
    got2 = _stored((yield from GetKey(r2.key_id)), "touch must keep the record")
    _check(got1.last_used_at == later and got2.last_used_at == _T0, "touch must set both")
    yield from TouchKeys({r1.key_id: _T0})
    got1 = _stored((yield from GetKey(r1.key_id)), "touch must keep the record")
    _check(got1.last_used_at == later, "touch must never move last_used_at backwards")
    _check(got1.secret_hash == r1.secret_hash, "touch must not change other fields")


#: Every check of the key-store contract, by name.
KEY_STORE_CHECKS: dict[str, Callable[[], Flow[None]]] = {
    "round_trip": _round_trip,
    "unknown_key_id": _unknown,
    "duplicate_key_id": _duplicate,
    "update": _update,
    "revoke": _revoke,
    "list_keys": _list_keys,
    "touch": _touch,
}


class KeyStoreContract:
    """Mix into a test class that has a ``store`` fixture (a fresh, empty ``KeyStore``)."""

    @pytest.mark.parametrize("check", sorted(KEY_STORE_CHECKS))
    def test_key_store_contract(self, store: Any, check: str) -> None:
        drive_sync(KEY_STORE_CHECKS[check](), Backends(store))


class AsyncKeyStoreContract:
    """Mix into a test class with an ``async_store`` fixture (a fresh, empty ``AsyncKeyStore``)."""

    @pytest.mark.anyio
    @pytest.mark.parametrize("check", sorted(KEY_STORE_CHECKS))
    async def test_async_key_store_contract(self, async_store: Any, check: str) -> None:
        await drive_async(KEY_STORE_CHECKS[check](), Backends(async_store))


# -- the rate-limiter contract ----------------------------------------------------------
#
# Run it against your own limiter:
#
#     class TestMyLimiter(RateLimiterContract):
#         @pytest.fixture
#         def limiter(self, clock):
#             return MyLimiter(clock=clock.monotonic)  # fresh, on the contract's clock
#
# ``AsyncRateLimiterContract`` wants an ``async_limiter`` fixture. Both classes
# provide the ``clock`` fixture (a :class:`FakeClock`); the limiter must count
# time from it, in whole milliseconds. Each check is one flow, driven sync or async.


def _limit_key() -> str:
    return "contract-" + uuid.uuid4().hex[:16]


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
    _check(decision.allowed is allowed, f"expected allowed={allowed}, {what}")
    _check(decision.degraded is None, f"a working backend must decide itself, {what}")
    _check(
        [s.remaining for s in decision.states] == list(remaining),
        f"expected remaining {list(remaining)}, {what}",
    )
    if reset_after is not None:
        _check(
            [s.reset_after for s in decision.states] == pytest.approx(list(reset_after)),
            f"expected reset_after {list(reset_after)}, {what}",
        )
    _check(
        decision.retry_after == pytest.approx(retry_after),
        f"expected retry_after {retry_after}, {what}",
    )


def _burst_then_refuse(clock: FakeClock) -> Flow[None]:
    key, policy = _limit_key(), Policy("default", quota=5, window=10)  # one every 2 s
    for n in range(1, 6):
        got = yield from _hit(key, policy)
        _check(got.states[0].policy == policy, f"the state must name its policy, got {got!r}")
        _expect(got, True, [5 - n], [2.0 * n])
    got = yield from _hit(key, policy)
    _expect(got, False, [0], [10.0], retry_after=2.0)


def _refused_consumes_nothing(clock: FakeClock) -> Flow[None]:
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


def _sustained_rate(clock: FakeClock) -> Flow[None]:
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


def _idle_restores_burst(clock: FakeClock) -> Flow[None]:
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


def _burst_below_quota(clock: FakeClock) -> Flow[None]:
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


def _all_or_nothing(clock: FakeClock) -> Flow[None]:
    key = _limit_key()
    wide, narrow = Policy("wide", quota=10, window=10), Policy("narrow", quota=2, window=10)
    got = yield from _hit(key, wide, narrow)
    _expect(got, True, [9, 1], [1.0, 5.0])
    _check([s.policy for s in got.states] == [wide, narrow], "states follow the policies' order")
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


def _longest_wait_wins(clock: FakeClock) -> Flow[None]:
    key = _limit_key()
    short, long = Policy("short", quota=1, window=2), Policy("long", quota=1, window=5)
    got = yield from _hit(key, short, long)
    _expect(got, True, [0, 0], [2.0, 5.0])
    got = yield from _hit(key, short, long)
    _expect(got, False, [0, 0], [2.0, 5.0], retry_after=5.0)
    clock.advance(2.0)
    got = yield from _hit(key, short, long)
    _expect(got, False, [1, 0], [0.0, 3.0], retry_after=3.0)


def _keys_and_names_are_separate(clock: FakeClock) -> Flow[None]:
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


def _cost(clock: FakeClock) -> Flow[None]:
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


def _sub_millisecond_interval(clock: FakeClock) -> Flow[None]:
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


def _fractional_interval(clock: FakeClock) -> Flow[None]:
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


def _stricter_policy_same_name(clock: FakeClock) -> Flow[None]:
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


def _no_policies(clock: FakeClock) -> Flow[None]:
    got = yield from HitLimit(_limit_key(), (), 1)
    _expect(got, True, [])


#: Every check of the rate-limiter contract, by name. Each takes the limiter's FakeClock.
RATE_LIMITER_CHECKS: dict[str, Callable[[FakeClock], Flow[None]]] = {
    "burst_then_refuse": _burst_then_refuse,
    "refused_consumes_nothing": _refused_consumes_nothing,
    "sustained_rate": _sustained_rate,
    "idle_restores_burst": _idle_restores_burst,
    "burst_below_quota": _burst_below_quota,
    "all_or_nothing": _all_or_nothing,
    "longest_wait_wins": _longest_wait_wins,
    "keys_and_names_are_separate": _keys_and_names_are_separate,
    "cost": _cost,
    "sub_millisecond_interval": _sub_millisecond_interval,
    "fractional_interval": _fractional_interval,
    "stricter_policy_same_name": _stricter_policy_same_name,
    "no_policies": _no_policies,
}

_SOME = Policy("some", quota=3, window=1)

#: Requests every limiter must refuse with ValueError before counting anything.
BAD_RATE_LIMIT_REQUESTS: dict[str, tuple[object, tuple[Policy, ...], object]] = {
    "empty_key": ("", (_SOME,), 1),
    "key_not_a_string": (123, (_SOME,), 1),
    "negative_cost": ("k", (_SOME,), -1),
    "cost_not_whole": ("k", (_SOME,), 1.0),
    "cost_a_bool": ("k", (_SOME,), True),
    "cost_above_burst": ("k", (_SOME,), 4),
    "duplicate_policy_names": ("k", (_SOME, Policy("some", quota=9, window=9)), 1),
}


class RateLimiterContract:
    """Mix into a test class with a ``limiter`` fixture: a fresh ``RateLimiter``
    that reads its time from the ``clock`` fixture this class provides."""

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
        got = limiter.hit("k", (_SOME,), 0)
        _check(got.states[0].remaining == 3, "a refused call must not count anything")


class AsyncRateLimiterContract:
    """Mix into a test class with an ``async_limiter`` fixture (an ``AsyncRateLimiter``
    on the ``clock`` fixture this class provides)."""

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
        got = await async_limiter.ahit("k", (_SOME,), 0)
        _check(got.states[0].remaining == 3, "a refused call must not count anything")
