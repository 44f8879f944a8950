"""The I/O steps of keyguard's flows, and the backends they run against.

Each step is one call of a backend Protocol (a :class:`~keyguard.stores.KeyStore`,
a :class:`~keyguard.ratelimit.RateLimiter`, a request body), typed with what it
answers, so a flow reads ``record = yield from GetKey(key_id)`` and mypy checks
both sides (see ``_drive.py``). Steps carry key_ids, never tokens: a failed
step is named in a :class:`~keyguard.StorageError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ._drive import Step
from ._records import KeyChanges, KeyRecord
from .ratelimit._base import RateLimitDecision
from .ratelimit._policy import Policy

__all__ = [
    "AddKey",
    "Backends",
    "GetKey",
    "HitLimit",
    "ListKeys",
    "ReadForm",
    "RevokeKey",
    "TouchKeys",
    "UpdateKey",
]


class Backends:
    """What the key flows run against: a store, a limiter, a body reader.

    The sync driver calls their plain methods (``store.get``), the async one
    their ``a``-prefixed siblings (``store.aget``). A flow that needs a
    backend that was not given fails with :class:`AttributeError` on ``None``:
    a bug in the caller, never a client's doing.
    """

    __slots__ = ("body", "limiter", "store")

    def __init__(self, store: Any = None, limiter: Any = None, body: Any = None) -> None:
        self.store = store
        self.limiter = limiter
        self.body = body

    def __repr__(self) -> str:
        return f"Backends(store={self.store!r}, limiter={self.limiter!r})"

    def with_body(self, body: Any) -> Backends:
        """These backends, and ``body`` to read a request body from."""
        return Backends(self.store, self.limiter, body)


class GetKey(Step[KeyRecord | None]):
    __slots__ = ("key_id",)

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id

    def __repr__(self) -> str:
        return f"GetKey({self.key_id!r})"

    def run(self, io: Backends) -> KeyRecord | None:
        return io.store.get(self.key_id)  # type: ignore[no-any-return]

    async def arun(self, io: Backends) -> KeyRecord | None:
        return await io.store.aget(self.key_id)  # type: ignore[no-any-return]


class AddKey(Step[None]):
    __slots__ = ("record",)

    def __init__(self, record: KeyRecord) -> None:
        self.record = record

    def __repr__(self) -> str:
        return f"AddKey({self.record.key_id!r})"

    def run(self, io: Backends) -> None:
        io.store.add(self.record)

    async def arun(self, io: Backends) -> None:
        await io.store.aadd(self.record)


class UpdateKey(Step[KeyRecord | None]):
    __slots__ = ("changes", "key_id")

    def __init__(self, key_id: str, changes: KeyChanges) -> None:
        self.key_id = key_id
        self.changes = changes

    def __repr__(self) -> str:
        return f"UpdateKey({self.key_id!r})"

    def run(self, io: Backends) -> KeyRecord | None:
        return io.store.update(self.key_id, self.changes)  # type: ignore[no-any-return]

    async def arun(self, io: Backends) -> KeyRecord | None:
        return await io.store.aupdate(self.key_id, self.changes)  # type: ignore[no-any-return]


class RevokeKey(Step[KeyRecord | None]):
    __slots__ = ("at", "key_id")

    def __init__(self, key_id: str, at: datetime) -> None:
        self.key_id = key_id
        self.at = at

    def __repr__(self) -> str:
        return f"RevokeKey({self.key_id!r})"

    def run(self, io: Backends) -> KeyRecord | None:
        return io.store.revoke(self.key_id, self.at)  # type: ignore[no-any-return]

    async def arun(self, io: Backends) -> KeyRecord | None:
        return await io.store.arevoke(self.key_id, self.at)  # type: ignore[no-any-return]


class ListKeys(Step[Sequence[KeyRecord]]):
    __slots__ = ("owner",)

    def __init__(self, owner: str | None) -> None:
        self.owner = owner

    def __repr__(self) -> str:
        return f"ListKeys({self.owner!r})"

    def run(self, io: Backends) -> Sequence[KeyRecord]:
        return io.store.list_keys(self.owner)  # type: ignore[no-any-return]

    async def arun(self, io: Backends) -> Sequence[KeyRecord]:
        return await io.store.alist_keys(self.owner)  # type: ignore[no-any-return]


class TouchKeys(Step[None]):
    __slots__ = ("last_used",)

    def __init__(self, last_used: Mapping[str, datetime]) -> None:
        self.last_used = last_used

    def __repr__(self) -> str:
        return f"TouchKeys({len(self.last_used)} keys)"

    def run(self, io: Backends) -> None:
        io.store.touch(self.last_used)

    async def arun(self, io: Backends) -> None:
        await io.store.atouch(self.last_used)


class HitLimit(Step[RateLimitDecision]):
    """Count a request (of ``cost``) for ``key`` against every policy at once."""

    __slots__ = ("cost", "key", "policies")

    def __init__(self, key: str, policies: Sequence[Policy], cost: int = 1) -> None:
        self.key = key
        self.policies = policies
        self.cost = cost

    def __repr__(self) -> str:
        return f"HitLimit({self.key!r}, {[p.name for p in self.policies]!r})"

    def run(self, io: Backends) -> RateLimitDecision:
        return io.limiter.hit(self.key, self.policies, self.cost)  # type: ignore[no-any-return]

    async def arun(self, io: Backends) -> RateLimitDecision:
        return await io.limiter.ahit(self.key, self.policies, self.cost)  # type: ignore[no-any-return]


class ReadForm(Step[bytes | None]):
    """The request's form body, up to ``limit`` bytes; None when larger or unreadable."""

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def __repr__(self) -> str:
        return f"ReadForm({self.limit})"

    def run(self, io: Backends) -> bytes | None:
        return io.body.read_form(self.limit)  # type: ignore[no-any-return]

    async def arun(self, io: Backends) -> bytes | None:
        return await io.body.aread_form(self.limit)  # type: ignore[no-any-return]
