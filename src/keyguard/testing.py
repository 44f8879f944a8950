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
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ._flow import Call, Flow, drive_async, drive_sync
from ._keys import generate_key
from ._records import KeyChanges, KeyRecord
from .ratelimit._policy import Policy

__all__ = ["AsyncKeyStoreContract", "FakeClock", "KeyStoreContract", "sample_record"]


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


def _round_trip() -> Flow[None]:
    record = sample_record()
    yield Call("store", "add", (record,))
    got = yield Call("store", "get", (record.key_id,))
    _check(got == record, f"get returned {got!r}, expected {record!r}")
    bare = sample_record(scopes=frozenset(), expires_at=None, metadata={}, rate_limit=None, name="")
    yield Call("store", "add", (bare,))
    got = yield Call("store", "get", (bare.key_id,))
    _check(got == bare, f"get returned {got!r} for a record with empty fields")


def _unknown() -> Flow[None]:
    got = yield Call("store", "get", ("AAAAAAAAAAAA",))
    _check(got is None, "get of an unknown key_id must return None")
    got = yield Call("store", "update", ("AAAAAAAAAAAA", KeyChanges(name="x")))
    _check(got is None, "update of an unknown key_id must return None")
    got = yield Call("store", "revoke", ("AAAAAAAAAAAA", _T0))
    _check(got is None, "revoke of an unknown key_id must return None")
    yield Call("store", "touch", ({"AAAAAAAAAAAA": _T0},))


def _duplicate() -> Flow[None]:
    from ._errors import DuplicateKeyError  # noqa: PLC0415 (keeps the namespace small)

    record = sample_record()
    yield Call("store", "add", (record,))
    try:
        yield Call("store", "add", (replace(record, owner="someone-else"),))
    except DuplicateKeyError:
        pass
    else:
        raise AssertionError("adding a second record with the same key_id must raise")
    got = yield Call("store", "get", (record.key_id,))
    _check(got == record, "a refused duplicate must not change the stored record")


def _update() -> Flow[None]:
    record = sample_record()
    yield Call("store", "add", (record,))
    changes = KeyChanges(scopes=frozenset({"x"}), expires_at=None, metadata={"k": "v"})
    got = yield Call("store", "update", (record.key_id, changes))
    expected = changes.apply(record)
    _check(got == expected, f"update returned {got!r}, expected {expected!r}")
    got = yield Call("store", "get", (record.key_id,))
    _check(got == expected, "update was not stored")
    changes = KeyChanges(secret_hash="sha256$" + "cd" * 32, rate_limit=None, replaced_by="B" * 12)
    got = yield Call("store", "update", (record.key_id, changes))
    _check(got == changes.apply(expected), "second update lost or changed other fields")


def _revoke() -> Flow[None]:
    record = sample_record()
    yield Call("store", "add", (record,))
    first = _T0 + timedelta(hours=1)
    got = yield Call("store", "revoke", (record.key_id, first))
    _check(got is not None and got.revoked_at == first, "revoke must set revoked_at")
    got = yield Call("store", "revoke", (record.key_id, first + timedelta(hours=1)))
    _check(
        got is not None and got.revoked_at == first,
        "revoking again must keep the first revoked_at",
    )
    got = yield Call("store", "get", (record.key_id,))
    _check(got is not None and got.revoked_at == first, "revoke was not stored")


def _list_keys() -> Flow[None]:
    a1 = sample_record("alpha", created_at=_T0)
    b1 = sample_record("beta", created_at=_T0 + timedelta(seconds=1))
    a2 = sample_record("alpha", created_at=_T0 + timedelta(seconds=2))
    for record in (a1, b1, a2):
        yield Call("store", "add", (record,))
    alpha = yield Call("store", "list_keys", ("alpha",))
    _check([r.key_id for r in alpha] == [a1.key_id, a2.key_id], "list_keys(owner) oldest first")
    everyone = yield Call("store", "list_keys", (None,))
    _check(
        [r.key_id for r in everyone] == [a1.key_id, b1.key_id, a2.key_id],
        "list_keys() must list every key, oldest first",
    )
    nobody = yield Call("store", "list_keys", ("nobody",))
    _check(list(nobody) == [], "list_keys of an unknown owner must be empty")


def _touch() -> Flow[None]:
    r1, r2 = sample_record(), sample_record()
    for record in (r1, r2):
        yield Call("store", "add", (record,))
    later = _T0 + timedelta(minutes=5)
    yield Call("store", "touch", ({r1.key_id: later, r2.key_id: _T0},))
    got1 = yield Call("store", "get", (r1.key_id,))
    got2 = yield Call("store", "get", (r2.key_id,))
    _check(got1.last_used_at == later and got2.last_used_at == _T0, "touch must set both")
    yield Call("store", "touch", ({r1.key_id: _T0},))
    got1 = yield Call("store", "get", (r1.key_id,))
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
        drive_sync(KEY_STORE_CHECKS[check](), {"store": store})


class AsyncKeyStoreContract:
    """Mix into a test class with an ``async_store`` fixture (a fresh, empty ``AsyncKeyStore``)."""

    @pytest.mark.anyio
    @pytest.mark.parametrize("check", sorted(KEY_STORE_CHECKS))
    async def test_async_key_store_contract(self, async_store: Any, check: str) -> None:
        await drive_async(KEY_STORE_CHECKS[check](), {"store": async_store})
