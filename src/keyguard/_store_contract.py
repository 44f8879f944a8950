"""The checks of the key-store contract (``keyguard.testing.KeyStoreContract``).

Each check is one flow, written once and driven sync or async exactly as
keyguard drives its own operations, so a store is checked the way it is used.
The failure checks are the exception: they call the store's methods directly,
because the drivers would turn any exception into a ``StorageError`` and so
hide a store that lets a driver's error escape.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

from ._drive import Flow, Step
from ._errors import DuplicateKeyError, StorageError
from ._keys import generate_key
from ._records import KeyChanges, KeyRecord
from ._steps import AddKey, Backends, GetKey, ListKeys, RevokeKey, TouchKeys, UpdateKey
from .ratelimit._policy import Policy

__all__ = [
    "ASYNC_FAILING_OPERATIONS",
    "CANNOT_FAIL",
    "FAILING_OPERATIONS",
    "KEY_STORE_CHECKS",
    "check",
    "check_cannot_fail",
    "check_failure",
    "sample_record",
]

_T0: Final = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
#: Offsets a store may be given times in: east, west, and the farthest east there is.
_EAST: Final = timezone(timedelta(hours=5, minutes=30))
_WEST: Final = timezone(timedelta(hours=-8))
_FAR_EAST: Final = timezone(timedelta(hours=14))
_UNKNOWN_ID: Final = "AAAAAAAAAAAA"
#: The secret hash of the records the failure checks write: never to appear in an error.
_FAILURE_HASH: Final = "sha256$" + "5e" * 32


class _CannotFail:
    """The type of :data:`CANNOT_FAIL`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "CANNOT_FAIL"


#: What a ``broken_store`` fixture returns for a store that has no backend to fail.
CANNOT_FAIL: Final = _CannotFail()


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


def check(condition: bool, message: str) -> None:
    """Fail the check with ``message`` unless ``condition`` holds (not ``assert``: ``-O``)."""
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
    check(got == record, f"get returned {got!r}, expected {record!r}")
    bare = sample_record(scopes=frozenset(), expires_at=None, metadata={}, rate_limit=None, name="")
    yield from AddKey(bare)
    got = yield from GetKey(bare.key_id)
    check(got == bare, f"get returned {got!r} for a record with empty fields")


def _unknown() -> Flow[None]:
    got = yield from GetKey(_UNKNOWN_ID)
    check(got is None, "get of an unknown key_id must return None")
    got = yield from UpdateKey(_UNKNOWN_ID, KeyChanges(name="x"))
    check(got is None, "update of an unknown key_id must return None")
    got = yield from RevokeKey(_UNKNOWN_ID, _T0)
    check(got is None, "revoke of an unknown key_id must return None")
    yield from TouchKeys({_UNKNOWN_ID: _T0})


def _duplicate() -> Flow[None]:
    record = sample_record()
    yield from AddKey(record)
    try:
        yield from AddKey(replace(record, owner="someone-else"))
    except DuplicateKeyError:
        pass
    else:
        raise AssertionError("adding a second record with the same key_id must raise")
    got = yield from GetKey(record.key_id)
    check(got == record, "a refused duplicate must not change the stored record")


def _update() -> Flow[None]:
    record = sample_record()
    yield from AddKey(record)
    changes = KeyChanges(scopes=frozenset({"x"}), expires_at=None, metadata={"k": "v"})
    got = yield from UpdateKey(record.key_id, changes)
    expected = changes.apply(record)
    check(got == expected, f"update returned {got!r}, expected {expected!r}")
    got = yield from GetKey(record.key_id)
    check(got == expected, "update was not stored")
    changes = KeyChanges(secret_hash="sha256$" + "cd" * 32, rate_limit=None, replaced_by="B" * 12)
    got = yield from UpdateKey(record.key_id, changes)
    check(got == changes.apply(expected), "second update lost or changed other fields")


def _revoke() -> Flow[None]:
    record = sample_record()
    yield from AddKey(record)
    first = _T0 + timedelta(hours=1)
    got = yield from RevokeKey(record.key_id, first)
    check(got is not None and got.revoked_at == first, "revoke must set revoked_at")
    got = yield from RevokeKey(record.key_id, first + timedelta(hours=1))
    check(
        got is not None and got.revoked_at == first,
        "revoking again must keep the first revoked_at",
    )
    got = yield from GetKey(record.key_id)
    check(got is not None and got.revoked_at == first, "revoke was not stored")


def _list_keys() -> Flow[None]:
    a1 = sample_record("alpha", created_at=_T0)
    b1 = sample_record("beta", created_at=_T0 + timedelta(seconds=1))
    a2 = sample_record("alpha", created_at=_T0 + timedelta(seconds=2))
    for record in (a1, b1, a2):
        yield from AddKey(record)
    alpha = yield from ListKeys("alpha")
    check([r.key_id for r in alpha] == [a1.key_id, a2.key_id], "list_keys(owner) oldest first")
    everyone = yield from ListKeys(None)
    check(
        [r.key_id for r in everyone] == [a1.key_id, b1.key_id, a2.key_id],
        "list_keys() must list every key, oldest first",
    )
    nobody = yield from ListKeys("nobody")
    check(list(nobody) == [], "list_keys of an unknown owner must be empty")


def _touch() -> Flow[None]:
    r1, r2 = sample_record(), sample_record()
    for record in (r1, r2):
        yield from AddKey(record)
    later = _T0 + timedelta(minutes=5)
    yield from TouchKeys({r1.key_id: later, r2.key_id: _T0})
    got1 = _stored((yield from GetKey(r1.key_id)), "touch must keep the record")
    got2 = _stored((yield from GetKey(r2.key_id)), "touch must keep the record")
    check(got1.last_used_at == later and got2.last_used_at == _T0, "touch must set both")
    yield from TouchKeys({r1.key_id: _T0})
    got1 = _stored((yield from GetKey(r1.key_id)), "touch must keep the record")
    check(got1.last_used_at == later, "touch must never move last_used_at backwards")
    check(got1.secret_hash == r1.secret_hash, "touch must not change other fields")


def _check_times(got: KeyRecord, expected: KeyRecord, what: str) -> None:
    """Every datetime of ``got`` is timezone-aware and the same instant as in ``expected``."""
    for name in ("created_at", "expires_at", "revoked_at", "last_used_at"):
        value, wanted = getattr(got, name), getattr(expected, name)
        if wanted is None:
            check(value is None, f"{what}: {name} must stay None, got {value!r}")
            continue
        check(
            isinstance(value, datetime) and value.utcoffset() is not None,
            f"{what}: {name} must come back timezone-aware, got {value!r}",
        )
        check(value == wanted, f"{what}: {name} is {value!r}, expected the instant {wanted!r}")


def _aware_datetimes() -> Flow[None]:
    # Times given in other offsets than UTC: a store keeps the instant (to the microsecond)
    # and answers with aware datetimes, in whatever offset it likes.
    owner = "tz-" + generate_key().key_id
    record = sample_record(
        owner,
        created_at=_T0.astimezone(_EAST),
        expires_at=(_T0 + timedelta(days=30)).astimezone(_WEST),
    )
    yield from AddKey(record)
    got = _stored((yield from GetKey(record.key_id)), "the record must be stored")
    _check_times(got, record, "get")
    expiry = (_T0 + timedelta(days=7, microseconds=1)).astimezone(_FAR_EAST)
    updated = _stored(
        (yield from UpdateKey(record.key_id, KeyChanges(expires_at=expiry))), "update must answer"
    )
    record = replace(record, expires_at=expiry)
    _check_times(updated, record, "update")
    revoked_at = (_T0 + timedelta(hours=1)).astimezone(_WEST)
    revoked = _stored((yield from RevokeKey(record.key_id, revoked_at)), "revoke must answer")
    record = replace(record, revoked_at=revoked_at)
    _check_times(revoked, record, "revoke")
    used = (_T0 + timedelta(hours=2)).astimezone(_EAST)
    yield from TouchKeys({record.key_id: used})
    # An earlier instant whose wall-clock reading is later (+14:00): a store that compares
    # readings instead of instants would move last_used_at backwards here.
    yield from TouchKeys({record.key_id: (_T0 + timedelta(hours=1)).astimezone(_FAR_EAST)})
    got = _stored((yield from GetKey(record.key_id)), "touch must keep the record")
    _check_times(got, replace(record, last_used_at=used), "touch (never backwards, by instant)")
    # Oldest first by instant: the first is created earlier, but reads later on a wall clock.
    later = sample_record(owner, created_at=(_T0 + timedelta(seconds=1)).astimezone(_WEST))
    yield from AddKey(later)
    listed = yield from ListKeys(owner)
    check(
        [r.key_id for r in listed] == [record.key_id, later.key_id],
        "list_keys must order by the instant of created_at, whatever its offset",
    )
    for one, stored in zip(listed, (got, later), strict=True):
        _check_times(one, stored, "list_keys")


class _Concurrently(Step[list[Any]]):
    """Several steps at once: in threads released together (sync), as tasks (async)."""

    __slots__ = ("steps",)

    def __init__(self, *steps: Step[Any]) -> None:
        self.steps = steps

    def __repr__(self) -> str:
        return f"_Concurrently{self.steps!r}"

    def run(self, io: Backends) -> list[Any]:
        results: list[Any] = [None] * len(self.steps)
        errors: list[BaseException] = []
        start = threading.Barrier(len(self.steps))

        def perform(index: int, step: Step[Any]) -> None:
            try:
                start.wait(timeout=10)
                results[index] = step.run(io)
            except Exception as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=perform, args=(i, step), name="keyguard-contract")
            for i, step in enumerate(self.steps)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return results

    async def arun(self, io: Backends) -> list[Any]:
        import anyio  # noqa: PLC0415 (the testing extra's, only for async stores)

        results: list[Any] = [None] * len(self.steps)
        errors: list[BaseException] = []

        async def perform(index: int, step: Step[Any]) -> None:
            try:
                results[index] = await step.arun(io)
            except Exception as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tasks:
            for index, step in enumerate(self.steps):
                tasks.start_soon(perform, index, step)
        if errors:
            raise errors[0]
        return results


def _concurrent_updates() -> Flow[None]:
    # Writers that change different fields of one record at the same moment (an admin's
    # scope change, a rotation's replaced_by, a revoke, the last-used write-behind) must
    # not undo each other: each write changes only its own fields.
    for round_ in range(8):
        record = sample_record()
        yield from AddKey(record)
        scopes = frozenset({f"round:{round_}"})
        metadata = {"round": round_}
        revoked_at = _T0 + timedelta(minutes=round_ + 1)
        used = _T0 + timedelta(minutes=round_ + 2)
        yield from _Concurrently(
            UpdateKey(record.key_id, KeyChanges(scopes=scopes, name=f"n{round_}")),
            UpdateKey(record.key_id, KeyChanges(metadata=metadata, replaced_by="R" * 12)),
            RevokeKey(record.key_id, revoked_at),
            TouchKeys({record.key_id: used}),
        )
        got = _stored((yield from GetKey(record.key_id)), "concurrent writes lost the record")
        expected = replace(
            record,
            scopes=scopes,
            name=f"n{round_}",
            metadata=metadata,
            replaced_by="R" * 12,
            revoked_at=revoked_at,
            last_used_at=used,
        )
        check(
            got == expected,
            f"round {round_}: concurrent writes of different fields undid one another: "
            f"got {got!r}, expected {expected!r}",
        )


#: Every check of the key-store contract, by name.
KEY_STORE_CHECKS: Final[dict[str, Callable[[], Flow[None]]]] = {
    "round_trip": _round_trip,
    "unknown_key_id": _unknown,
    "duplicate_key_id": _duplicate,
    "update": _update,
    "revoke": _revoke,
    "list_keys": _list_keys,
    "touch": _touch,
    "aware_datetimes": _aware_datetimes,
    "concurrent_updates": _concurrent_updates,
}


def _failing_record() -> KeyRecord:
    return sample_record(secret_hash=_FAILURE_HASH)


#: Each operation of a store, called directly, for the failure checks: (store) -> result.
FAILING_OPERATIONS: Final[dict[str, Callable[[Any], object]]] = {
    "get": lambda store: store.get(_UNKNOWN_ID),
    "add": lambda store: store.add(_failing_record()),
    "update": lambda store: store.update(_UNKNOWN_ID, KeyChanges(secret_hash=_FAILURE_HASH)),
    "revoke": lambda store: store.revoke(_UNKNOWN_ID, _T0),
    "list_keys": lambda store: store.list_keys(),
    "touch": lambda store: store.touch({_UNKNOWN_ID: _T0}),
}

#: The same, for an ``AsyncKeyStore``.
ASYNC_FAILING_OPERATIONS: Final[dict[str, Callable[[Any], Awaitable[object]]]] = {
    "get": lambda store: store.aget(_UNKNOWN_ID),
    "add": lambda store: store.aadd(_failing_record()),
    "update": lambda store: store.aupdate(_UNKNOWN_ID, KeyChanges(secret_hash=_FAILURE_HASH)),
    "revoke": lambda store: store.arevoke(_UNKNOWN_ID, _T0),
    "list_keys": lambda store: store.alist_keys(),
    "touch": lambda store: store.atouch({_UNKNOWN_ID: _T0}),
}


def check_failure(operation: str, error: BaseException | None) -> None:
    """What a broken store's ``operation`` raised (None: nothing) must be a clean StorageError."""
    check(error is not None, f"{operation} on a broken store must raise StorageError, not return")
    check(
        isinstance(error, StorageError),
        f"{operation} on a broken store raised {type(error).__name__}: every failure of the "
        f"system underneath must surface as keyguard.StorageError (raise ... from exc)",
    )
    text = f"{error} {error!r}"
    check(
        _FAILURE_HASH not in text and _FAILURE_HASH.split("$")[1] not in text,
        f"the StorageError of {operation} quotes the secret hash it was given",
    )


def check_cannot_fail(store: object) -> None:
    """A store whose ``broken_store`` is :data:`CANNOT_FAIL` must do no I/O at all."""
    check(
        getattr(store, "nonblocking", False) is True,
        f"only a store that does no I/O (nonblocking = True, as MemoryKeyStore) can have "
        f"nothing underneath to fail; give {type(store).__name__}'s test class a broken_store "
        f"fixture instead of CANNOT_FAIL",
    )
