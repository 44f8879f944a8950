"""The key-store protocols. A store keeps :class:`KeyRecord` objects by key_id.

Sync and async are sibling protocols with the same operations; the async ones
carry an ``a`` prefix (``get`` / ``aget``, ``close`` / ``aclose``) so that a
backend with both flavours, such as :class:`~keyguard.stores.MemoryKeyStore`,
can be one object. ``keyguard.testing`` has a contract suite any store can run.

Every failure of the underlying system must surface as
:class:`~keyguard.StorageError` (with the driver error chained); keyguard
treats it as "store unavailable" and fails closed. A store must also bound
every call (connecting, each operation, the wait for a pooled connection):
a call that never returns holds a request, and enough of them stop the whole
app. :class:`~keyguard.CircuitBreaker` makes a store that keeps failing fail
fast; :class:`~keyguard.stores.sql.SQLKeyStore` shows both.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from .._records import KeyChanges, KeyRecord

__all__ = ["AsyncKeyStore", "AsyncRevocationBroadcast", "KeyStore", "RevocationBroadcast"]


@runtime_checkable
class KeyStore(Protocol):
    """**Protocol**: a synchronous key store."""

    def get(self, key_id: str) -> KeyRecord | None:
        """Return the record for ``key_id``, or ``None``. One indexed lookup."""
        ...

    def add(self, record: KeyRecord) -> None:
        """Insert a new record.

        Raises:
            DuplicateKeyError: A record with that key_id exists.
        """
        ...

    def update(self, key_id: str, changes: KeyChanges) -> KeyRecord | None:
        """Apply ``changes`` in one write; return the new record, or ``None`` if unknown."""
        ...

    def revoke(self, key_id: str, at: datetime) -> KeyRecord | None:
        """Set ``revoked_at`` unless already set (idempotent); return the record or ``None``."""
        ...

    def list_keys(self, owner: str | None = None) -> Sequence[KeyRecord]:
        """All records, or those of ``owner``, oldest first."""
        ...

    def touch(self, last_used: Mapping[str, datetime]) -> None:
        """Record last-used times (key_id -> time) in one batch; never moves one backwards."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class AsyncKeyStore(Protocol):
    """**Protocol**: an asynchronous key store; the same operations as :class:`KeyStore`."""

    async def aget(self, key_id: str) -> KeyRecord | None:
        """See :meth:`KeyStore.get`."""
        ...

    async def aadd(self, record: KeyRecord) -> None:
        """See :meth:`KeyStore.add`."""
        ...

    async def aupdate(self, key_id: str, changes: KeyChanges) -> KeyRecord | None:
        """See :meth:`KeyStore.update`."""
        ...

    async def arevoke(self, key_id: str, at: datetime) -> KeyRecord | None:
        """See :meth:`KeyStore.revoke`."""
        ...

    async def alist_keys(self, owner: str | None = None) -> Sequence[KeyRecord]:
        """See :meth:`KeyStore.list_keys`."""
        ...

    async def atouch(self, last_used: Mapping[str, datetime]) -> None:
        """See :meth:`KeyStore.touch`."""
        ...

    async def aclose(self) -> None:
        """See :meth:`KeyStore.close`."""
        ...


@runtime_checkable
class RevocationBroadcast(Protocol):
    """**Protocol**: tells other processes that a key changed, so their caches drop it.

    Delivery is best effort: a lost announcement is bounded by the cache TTL.
    Implementations never block for long and never start threads.
    """

    def publish(self, key_id: str) -> None:
        """Announce that ``key_id`` was revoked or changed.

        Raises:
            StorageError: The announcement could not be sent.
        """
        ...

    def poll(self) -> Collection[str] | None:
        """Return the key_ids announced since the last poll, without waiting.

        ``None`` means announcements may have been missed (the subscription
        started, failed or was re-established): the caller must drop every
        cached record.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class AsyncRevocationBroadcast(Protocol):
    """**Protocol**: :class:`RevocationBroadcast` for async apps."""

    async def apublish(self, key_id: str) -> None:
        """See :meth:`RevocationBroadcast.publish`."""
        ...

    async def apoll(self) -> Collection[str] | None:
        """See :meth:`RevocationBroadcast.poll`."""
        ...

    async def aclose(self) -> None:
        """See :meth:`RevocationBroadcast.close`."""
        ...
