"""A lookup cache in front of any key store, with bounded staleness for revocations.

The guarantee, in one sentence: a revoke (or any change) made through this
cache is seen at once in this process, is seen in every other process within
about a second when they share a revocation broadcast and serve traffic, and
is seen everywhere within ``ttl`` seconds (5 s by default) even if every
broadcast message is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from .._errors import StorageError
from .._records import KeyChanges, KeyRecord
from ._base import AsyncKeyStore, AsyncRevocationBroadcast, KeyStore, RevocationBroadcast

__all__ = ["DEFAULT_CACHE_TTL", "DEFAULT_NEGATIVE_TTL", "CachedKeyStore"]

logger = logging.getLogger("keyguard")

#: Seconds a cached record is trusted: the bound on how stale a revocation can be.
DEFAULT_CACHE_TTL = 5.0
#: Seconds "no such key" is remembered.
DEFAULT_NEGATIVE_TTL = 1.0
#: Seconds between two non-blocking polls of the revocation broadcast.
DEFAULT_POLL_INTERVAL = 0.2
#: Longest TTL the staleness guarantee in the docs holds for.
MAX_RECOMMENDED_TTL = 10.0


class CachedKeyStore:
    """Keeps recent lookups in memory so that a warm request costs no query.

    Implements ``KeyStore`` when the wrapped store does, and ``AsyncKeyStore``
    when the wrapped store does. Records are kept for ``ttl`` seconds (the
    least recently used go first beyond ``max_size``); unknown key_ids are
    remembered for ``negative_ttl`` seconds, in a separate, smaller table so
    that a flood of made-up key_ids cannot push out real keys.

    Writes go straight to the wrapped store and evict the key from this cache
    at once, except ``touch``, which gives a cached record its new
    ``last_used_at`` in place (no re-read); ``update`` and ``revoke`` are
    also announced on ``broadcast``, whose announcements this cache polls
    without blocking at most every ``poll_interval`` seconds, from its own
    lookups (no thread, no task).

    Security: until its TTL runs out, a record cached in another process that
    missed the broadcast still authenticates a key revoked elsewhere. Keep
    ``ttl`` short (at most 10 s); ``ttl`` is the worst case.

    Args:
        store: The store to cache.
        max_size: Most records kept.
        ttl: Seconds a record is trusted.
        negative_ttl: Seconds an unknown key_id is remembered; at most ``ttl``.
        negative_max_size: Most unknown key_ids remembered.
        clock: Monotonic seconds (``FakeClock().monotonic`` in tests).
        broadcast: A :class:`~keyguard.stores.redis_broadcast.RedisRevocationBroadcast`
            (or another ``RevocationBroadcast``) shared by every process.
        poll_interval: Seconds between two polls of ``broadcast``.

    Raises:
        TypeError: ``store`` is not a key store.
        ValueError: A size or a time is out of range.
    """

    def __init__(
        self,
        store: KeyStore | AsyncKeyStore,
        *,
        max_size: int = 10_000,
        ttl: float = DEFAULT_CACHE_TTL,
        negative_ttl: float = DEFAULT_NEGATIVE_TTL,
        negative_max_size: int = 1_000,
        clock: Callable[[], float] = time.monotonic,
        broadcast: RevocationBroadcast | AsyncRevocationBroadcast | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        self._sync: KeyStore | None = store if isinstance(store, KeyStore) else None
        self._async: AsyncKeyStore | None = store if isinstance(store, AsyncKeyStore) else None
        if self._sync is None and self._async is None:
            raise TypeError(f"CachedKeyStore needs a KeyStore or AsyncKeyStore, got {store!r}")
        if max_size < 1 or negative_max_size < 1:
            raise ValueError("max_size and negative_max_size must be at least 1")
        if not ttl > 0:
            raise ValueError("ttl must be a positive number of seconds")
        if not 0 < negative_ttl <= ttl:
            raise ValueError("negative_ttl must be positive and at most ttl")
        if not poll_interval > 0:
            raise ValueError("poll_interval must be a positive number of seconds")
        self.store = store
        self.broadcast = broadcast
        self._broadcast: RevocationBroadcast | None = (
            broadcast if isinstance(broadcast, RevocationBroadcast) else None
        )
        self._abroadcast: AsyncRevocationBroadcast | None = (
            broadcast if isinstance(broadcast, AsyncRevocationBroadcast) else None
        )
        if broadcast is not None and self._broadcast is None and self._abroadcast is None:
            raise TypeError(f"broadcast must be a RevocationBroadcast, got {broadcast!r}")
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self._max_size = max_size
        self._negative_max_size = negative_max_size
        self._clock = clock
        self._poll_interval = poll_interval
        self._next_poll = float("-inf")
        self._records: OrderedDict[str, tuple[KeyRecord, float]] = OrderedDict()
        self._unknown: OrderedDict[str, float] = OrderedDict()
        # Bumped by every eviction: a lookup that raced with one is not cached.
        self._epoch = 0
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"CachedKeyStore({self.store!r}, size={len(self)}, ttl={self.ttl}, "
            f"broadcast={self.broadcast!r})"
        )

    def __len__(self) -> int:
        return len(self._records) + len(self._unknown)

    # -- the decisions, shared by the sync and the async methods -------------------------

    def _lookup(self, key_id: str) -> tuple[bool, KeyRecord | None, int]:
        """(hit, record, epoch): a fresh entry, or a miss and the epoch to fetch under."""
        now = self._clock()
        with self._lock:
            entry = self._records.get(key_id)
            if entry is not None:
                if now < entry[1]:
                    self._records.move_to_end(key_id)
                    return True, entry[0], self._epoch
                del self._records[key_id]
            expires = self._unknown.get(key_id)
            if expires is not None:
                if now < expires:
                    return True, None, self._epoch
                del self._unknown[key_id]
            return False, None, self._epoch

    def _remember(self, key_id: str, record: KeyRecord | None, epoch: int) -> None:
        now = self._clock()
        with self._lock:
            if epoch != self._epoch:
                return
            if record is None:
                self._unknown[key_id] = now + self.negative_ttl
                self._unknown.move_to_end(key_id)
                while len(self._unknown) > self._negative_max_size:
                    self._unknown.popitem(last=False)
            else:
                self._records[key_id] = (record, now + self.ttl)
                self._records.move_to_end(key_id)
                while len(self._records) > self._max_size:
                    self._records.popitem(last=False)

    def evict(self, key_id: str) -> None:
        """Forget ``key_id`` in this process; the next lookup reads the store."""
        with self._lock:
            self._epoch += 1
            self._records.pop(key_id, None)
            self._unknown.pop(key_id, None)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._epoch += 1
            self._records.clear()
            self._unknown.clear()

    def _touched(self, last_used: Mapping[str, datetime]) -> None:
        """Give the cached records their new ``last_used_at``: a written last use changes
        nothing else, so it costs no re-read. Each keeps its expiry and place."""
        records = self._records
        updates = []
        for key_id, when in last_used.items():
            entry = records.get(key_id)
            if entry is not None:
                before = entry[0].last_used_at
                if before is None or before < when:
                    updates.append(
                        (key_id, entry, (replace(entry[0], last_used_at=when), entry[1]))
                    )
        if updates:
            with self._lock:
                for key_id, entry, touched in updates:
                    if records.get(key_id) is entry:  # else changed meanwhile: leave it
                        records[key_id] = touched

    def _apply(self, announced: Collection[str] | None) -> None:
        if announced is None:
            self.clear()
            return
        for key_id in announced:
            self.evict(key_id)

    def _poll_due(self) -> bool:
        if self.broadcast is None:
            return False
        now = self._clock()
        with self._lock:
            if now < self._next_poll:
                return False
            self._next_poll = now + self._poll_interval
        return True

    def _sync_store(self) -> KeyStore:
        if self._sync is None:
            raise TypeError(f"{self.store!r} has no synchronous methods; use the a-methods")
        return self._sync

    def _async_store(self) -> AsyncKeyStore:
        if self._async is None:
            raise TypeError(f"{self.store!r} has no async methods; use the sync methods")
        return self._async

    # -- sync -----------------------------------------------------------------------------

    def _poll(self) -> None:
        if self._broadcast is None:
            return
        if not self._poll_lock.acquire(blocking=False):
            return
        try:
            self._apply(self._broadcast.poll())
        finally:
            self._poll_lock.release()

    def _announce(self, key_id: str) -> None:
        if self._broadcast is None:
            return
        try:
            self._broadcast.publish(key_id)
        except StorageError:
            logger.warning(
                "could not announce the change of key %s; other processes see it within %s s",
                key_id,
                self.ttl,
                exc_info=True,
            )

    def get(self, key_id: str) -> KeyRecord | None:
        """The record for ``key_id``: from memory when fresh, else one store lookup."""
        if self._poll_due():
            self._poll()
        hit, record, epoch = self._lookup(key_id)
        if hit:
            return record
        record = self._sync_store().get(key_id)
        self._remember(key_id, record, epoch)
        return record

    def add(self, record: KeyRecord) -> None:
        """Insert into the store; forgets a remembered "unknown" for the key_id."""
        try:
            self._sync_store().add(record)
        finally:
            self.evict(record.key_id)

    def update(self, key_id: str, changes: KeyChanges) -> KeyRecord | None:
        """Update the store, evict here, announce to other processes."""
        try:
            result = self._sync_store().update(key_id, changes)
        finally:
            self.evict(key_id)
        self._announce(key_id)
        return result

    def revoke(self, key_id: str, at: datetime) -> KeyRecord | None:
        """Revoke in the store, evict here, announce to other processes."""
        try:
            result = self._sync_store().revoke(key_id, at)
        finally:
            self.evict(key_id)
        self._announce(key_id)
        return result

    def list_keys(self, owner: str | None = None) -> Sequence[KeyRecord]:
        """Straight from the store (never cached)."""
        return self._sync_store().list_keys(owner)

    def touch(self, last_used: Mapping[str, datetime]) -> None:
        """Straight to the store; cached records get the new times in place."""
        self._sync_store().touch(last_used)
        self._touched(last_used)

    def close(self) -> None:
        """Close the wrapped store and the broadcast."""
        self.clear()
        if self._broadcast is not None:
            self._broadcast.close()
        self._sync_store().close()

    # -- async ----------------------------------------------------------------------------

    async def _apoll(self) -> None:
        if self._abroadcast is None:
            return
        if not self._poll_lock.acquire(blocking=False):
            return
        try:
            self._apply(await self._abroadcast.apoll())
        finally:
            self._poll_lock.release()

    async def _aannounce(self, key_id: str) -> None:
        if self._abroadcast is None:
            return
        try:
            await self._abroadcast.apublish(key_id)
        except StorageError:
            logger.warning(
                "could not announce the change of key %s; other processes see it within %s s",
                key_id,
                self.ttl,
                exc_info=True,
            )

    async def aget(self, key_id: str) -> KeyRecord | None:
        """See :meth:`get`."""
        if self._poll_due():
            await self._apoll()
        hit, record, epoch = self._lookup(key_id)
        if hit:
            return record
        record = await self._async_store().aget(key_id)
        self._remember(key_id, record, epoch)
        return record

    async def aadd(self, record: KeyRecord) -> None:
        """See :meth:`add`."""
        try:
            await self._async_store().aadd(record)
        finally:
            self.evict(record.key_id)

    async def aupdate(self, key_id: str, changes: KeyChanges) -> KeyRecord | None:
        """See :meth:`update`."""
        try:
            result = await self._async_store().aupdate(key_id, changes)
        finally:
            self.evict(key_id)
        await self._aannounce(key_id)
        return result

    async def arevoke(self, key_id: str, at: datetime) -> KeyRecord | None:
        """See :meth:`revoke`."""
        try:
            result = await self._async_store().arevoke(key_id, at)
        finally:
            self.evict(key_id)
        await self._aannounce(key_id)
        return result

    async def alist_keys(self, owner: str | None = None) -> Sequence[KeyRecord]:
        """See :meth:`list_keys`."""
        return await self._async_store().alist_keys(owner)

    async def atouch(self, last_used: Mapping[str, datetime]) -> None:
        """See :meth:`touch`."""
        await self._async_store().atouch(last_used)
        self._touched(last_used)

    async def aclose(self) -> None:
        """See :meth:`close`."""
        self.clear()
        if self._abroadcast is not None:
            await self._abroadcast.aclose()
        await self._async_store().aclose()
