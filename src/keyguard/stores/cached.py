"""A lookup cache in front of any key store, with bounded staleness for revocations.

The guarantee, in one sentence: a revoke (or any change) made through this
cache is seen at once in this process, is seen in every other process within
about a second when they share a revocation broadcast and serve traffic, and
is seen everywhere within ``ttl`` seconds (5 s by default) even if every
broadcast message is lost, or within ``ttl + stale_ttl`` seconds while the
store itself fails.

Each decision is written once, as a flow (``_drive.py``): a lookup that
misses, each write (evict, announce, warn) and each poll of the broadcast
yield their steps against the wrapped store and the broadcast, and the sync
and async methods drive the same flows.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Final, TypeVar

from .._drive import Flow, Step, drive_async, drive_sync
from .._errors import KeyguardError, StorageError
from .._records import KeyChanges, KeyRecord
from .._steps import AddKey, GetKey, RevokeKey, TouchKeys, UpdateKey
from ._base import AsyncKeyStore, AsyncRevocationBroadcast, KeyStore, RevocationBroadcast

__all__ = ["DEFAULT_CACHE_TTL", "DEFAULT_NEGATIVE_TTL", "DEFAULT_STALE_TTL", "CachedKeyStore"]

logger = logging.getLogger("keyguard")

#: Seconds a cached record is trusted: the bound on how stale a revocation can be.
DEFAULT_CACHE_TTL = 5.0
#: Seconds "no such key" is remembered: as long as a record, so that looking up
#: an unknown key_id again costs what looking up a known one again does.
DEFAULT_NEGATIVE_TTL = DEFAULT_CACHE_TTL
#: Seconds past its TTL a cached lookup may still answer, only while the store fails.
DEFAULT_STALE_TTL = 30.0
#: Seconds between two non-blocking polls of the revocation broadcast.
DEFAULT_POLL_INTERVAL = 0.2
#: Longest TTL the staleness guarantee in the docs holds for.
MAX_RECOMMENDED_TTL = 10.0

R = TypeVar("R")


class _Missing:
    """No cached answer to fall back on (``None`` is one: "no such key")."""

    __slots__ = ()


_MISSING: Final = _Missing()


class CachedKeyStore:
    """Keeps recent lookups in memory so that a warm request costs no query.

    Implements ``KeyStore`` when the wrapped store does, and ``AsyncKeyStore``
    when the wrapped store does. Records are kept for ``ttl`` seconds (the
    least recently used go first beyond ``max_size``); unknown key_ids are
    remembered for ``negative_ttl`` seconds (by default as long as records),
    in a separate, smaller table so that a flood of made-up key_ids cannot
    push out real keys.

    While the wrapped store fails (it raises :class:`~keyguard.StorageError`:
    unreachable, timed out, or its circuit open), a lookup whose entry ran
    out of its TTL less than ``stale_ttl`` seconds ago is answered from that
    entry, so keys in use keep working through a short outage. Only then:
    as long as the store answers, nothing older than ``ttl`` is served.

    Writes go straight to the wrapped store and evict the key from this cache
    at once, except ``touch``, which gives a cached record its new
    ``last_used_at`` in place (no re-read); ``update`` and ``revoke`` are
    also announced on ``broadcast``, whose announcements this cache polls
    without blocking at most every ``poll_interval`` seconds, from its own
    lookups (no thread, no task).

    Security: until its TTL runs out, a record cached in another process that
    missed the broadcast still authenticates a key revoked elsewhere. Keep
    ``ttl`` short (at most 10 s); ``ttl`` is the worst case, and
    ``ttl + stale_ttl`` while the store is failing.

    Args:
        store: The store to cache.
        max_size: Most records kept.
        ttl: Seconds a record is trusted.
        negative_ttl: Seconds an unknown key_id is remembered; at most ``ttl``,
            and ``ttl`` when not given.
        negative_max_size: Most unknown key_ids remembered.
        stale_ttl: Seconds past its TTL an entry may still answer while the
            store fails (30); 0 never serves a stale entry.
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
        negative_ttl: float | None = None,
        negative_max_size: int = 1_000,
        stale_ttl: float = DEFAULT_STALE_TTL,
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
        if negative_ttl is None:
            negative_ttl = ttl
        if not 0 < negative_ttl <= ttl:
            raise ValueError("negative_ttl must be positive and at most ttl")
        if not stale_ttl >= 0:
            raise ValueError("stale_ttl must be 0 or a positive number of seconds")
        if not poll_interval > 0:
            raise ValueError("poll_interval must be a positive number of seconds")
        self.store = store
        self.broadcast = broadcast
        broadcast_sync: RevocationBroadcast | None = (
            broadcast if isinstance(broadcast, RevocationBroadcast) else None
        )
        broadcast_async: AsyncRevocationBroadcast | None = (
            broadcast if isinstance(broadcast, AsyncRevocationBroadcast) else None
        )
        if broadcast is not None and broadcast_sync is None and broadcast_async is None:
            raise TypeError(f"broadcast must be a RevocationBroadcast, got {broadcast!r}")
        self._io = None if self._sync is None else _CacheIO(self._sync, broadcast_sync)
        self._aio = None if self._async is None else _CacheIO(self._async, broadcast_async)
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.stale_ttl = stale_ttl
        self._max_size = max_size
        self._negative_max_size = negative_max_size
        self._clock = clock
        self._poll_interval = poll_interval
        self._next_poll = float("-inf")
        self._next_stale_warning = float("-inf")
        self._records: OrderedDict[str, tuple[KeyRecord, float]] = OrderedDict()
        self._unknown: OrderedDict[str, float] = OrderedDict()
        # Bumped by every eviction: a lookup that raced with one is not cached.
        self._epoch = 0
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        #: The async lookups under way, by key_id: a burst of requests for a key that is
        #: not cached makes one lookup, not one each (which would empty the pool).
        self._fetching: dict[str, asyncio.Future[KeyRecord | None]] = {}

    def __repr__(self) -> str:
        return (
            f"CachedKeyStore({self.store!r}, size={len(self)}, ttl={self.ttl}, "
            f"broadcast={self.broadcast!r})"
        )

    def __len__(self) -> int:
        return len(self._records) + len(self._unknown)

    # -- the entries ----------------------------------------------------------------------

    def _lookup(self, key_id: str) -> tuple[bool, KeyRecord | _Missing | None, int]:
        """(hit, answer, epoch): a fresh entry's answer; or a miss, the answer to fall
        back on should the store fail (a stale entry, or ``_MISSING``), and the epoch
        to fetch under."""
        now = self._clock()
        stale = self.stale_ttl
        fallback: KeyRecord | _Missing | None = _MISSING
        with self._lock:
            entry = self._records.get(key_id)
            if entry is not None:
                if now < entry[1]:
                    self._records.move_to_end(key_id)
                    return True, entry[0], self._epoch
                if now < entry[1] + stale:
                    fallback = entry[0]
                else:
                    del self._records[key_id]
            expires = self._unknown.get(key_id)
            if expires is not None:
                if now < expires:
                    return True, None, self._epoch
                if now >= expires + stale:
                    del self._unknown[key_id]
                elif fallback is _MISSING:
                    fallback = None
            return False, fallback, self._epoch

    def _remember(self, key_id: str, record: KeyRecord | None, epoch: int) -> None:
        now = self._clock()
        with self._lock:
            if epoch != self._epoch:
                return
            if record is None:
                self._records.pop(key_id, None)
                self._unknown[key_id] = now + self.negative_ttl
                self._unknown.move_to_end(key_id)
                while len(self._unknown) > self._negative_max_size:
                    self._unknown.popitem(last=False)
            else:
                self._unknown.pop(key_id, None)
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

    def _poll_due(self) -> bool:
        if self.broadcast is None:
            return False
        now = self._clock()
        with self._lock:
            if now < self._next_poll:
                return False
            self._next_poll = now + self._poll_interval
        return True

    def _sync_io(self) -> _CacheIO:
        if self._io is None:
            raise TypeError(f"{self.store!r} has no synchronous methods; use the a-methods")
        return self._io

    def _async_io(self) -> _CacheIO:
        if self._aio is None:
            raise TypeError(f"{self.store!r} has no async methods; use the sync methods")
        return self._aio

    # -- the decisions, written once as flows ----------------------------------------------

    def _poll_flow(self) -> Flow[None]:
        """Apply what the broadcast announced; a poll already running elsewhere is enough."""
        if not self._poll_lock.acquire(blocking=False):
            return
        try:
            announced = yield from _Poll()
        finally:
            self._poll_lock.release()
        if announced is None:
            self.clear()
            return
        for key_id in announced:
            self.evict(key_id)

    def _fetch_flow(
        self, key_id: str, epoch: int, fallback: KeyRecord | _Missing | None
    ) -> Flow[KeyRecord | None]:
        """A lookup that missed: ask the store; while it fails, answer from a stale entry."""
        try:
            record = yield from _Passing(GetKey(key_id))
        except StorageError:
            if isinstance(fallback, _Missing):
                raise
            self._warn_stale()
            return fallback
        self._remember(key_id, record, epoch)
        return record

    def _warn_stale(self) -> None:
        now = self._clock()
        if now < self._next_stale_warning:
            return
        self._next_stale_warning = now + self.ttl
        logger.warning(
            "the key store is failing: answering lookups from cached entries up to %s s "
            "past their TTL",
            self.stale_ttl,
            exc_info=True,
        )

    def _add_flow(self, record: KeyRecord) -> Flow[None]:
        try:
            yield from _Passing(AddKey(record))
        finally:
            self.evict(record.key_id)  # forgets a remembered "unknown" for the key_id

    def _update_flow(self, key_id: str, changes: KeyChanges) -> Flow[KeyRecord | None]:
        try:
            result = yield from _Passing(UpdateKey(key_id, changes))
        finally:
            self.evict(key_id)
        yield from self._announce_flow(key_id)
        return result

    def _revoke_flow(self, key_id: str, at: datetime) -> Flow[KeyRecord | None]:
        try:
            result = yield from _Passing(RevokeKey(key_id, at))
        finally:
            self.evict(key_id)
        yield from self._announce_flow(key_id)
        return result

    def _touch_flow(self, last_used: Mapping[str, datetime]) -> Flow[None]:
        yield from _Passing(TouchKeys(last_used))
        self._touched(last_used)

    def _announce_flow(self, key_id: str) -> Flow[None]:
        """Tell other processes; a failure is logged: the write stands, and the TTL
        bounds how long the others take to see it."""
        try:
            yield from _Publish(key_id)
        except StorageError:
            logger.warning(
                "could not announce the change of key %s; other processes see it within %s s",
                key_id,
                self.ttl,
                exc_info=True,
            )

    # -- sync -----------------------------------------------------------------------------

    def _drive(self, flow: Flow[R]) -> R:
        io = self._sync_io()
        try:
            return drive_sync(flow, io)
        except _Refused as refused:
            error = refused.error
        raise error  # outside the handler: the store's own error, as it raised it

    def get(self, key_id: str) -> KeyRecord | None:
        """The record for ``key_id``: from memory when fresh, else one store lookup."""
        if self._poll_due():
            self._drive(self._poll_flow())
        hit, answer, epoch = self._lookup(key_id)
        if hit:
            return answer  # type: ignore[return-value]
        return self._drive(self._fetch_flow(key_id, epoch, answer))

    def add(self, record: KeyRecord) -> None:
        """Insert into the store; forgets a remembered "unknown" for the key_id."""
        self._drive(self._add_flow(record))

    def update(self, key_id: str, changes: KeyChanges) -> KeyRecord | None:
        """Update the store, evict here, announce to other processes."""
        return self._drive(self._update_flow(key_id, changes))

    def revoke(self, key_id: str, at: datetime) -> KeyRecord | None:
        """Revoke in the store, evict here, announce to other processes."""
        return self._drive(self._revoke_flow(key_id, at))

    def list_keys(self, owner: str | None = None) -> Sequence[KeyRecord]:
        """Straight from the store (never cached)."""
        return self._sync_io().store.list_keys(owner)  # type: ignore[no-any-return]

    def touch(self, last_used: Mapping[str, datetime]) -> None:
        """Straight to the store; cached records get the new times in place."""
        self._drive(self._touch_flow(last_used))

    def close(self) -> None:
        """Close the wrapped store and the broadcast."""
        io = self._sync_io()
        self.clear()
        if io.broadcast is not None:
            io.broadcast.close()
        io.store.close()

    # -- async ----------------------------------------------------------------------------

    async def _adrive(self, flow: Flow[R]) -> R:
        io = self._async_io()
        try:
            return await drive_async(flow, io)
        except _Refused as refused:
            error = refused.error
        raise error  # outside the handler: the store's own error, as it raised it

    async def aget(self, key_id: str) -> KeyRecord | None:
        """See :meth:`get`. Concurrent lookups of one key on one event loop share one
        store lookup, and its answer or its error."""
        if self._poll_due():
            await self._adrive(self._poll_flow())
        hit, answer, epoch = self._lookup(key_id)
        if hit:
            return answer  # type: ignore[return-value]
        loop = asyncio.get_running_loop()
        fetching = self._fetching.get(key_id)
        if fetching is not None and fetching.get_loop() is loop:
            try:
                return await asyncio.shield(fetching)
            except asyncio.CancelledError:
                if not fetching.cancelled():
                    raise  # this request itself was cancelled
                # The request that was looking it up was cancelled: look it up here.
        fetching = self._fetching[key_id] = loop.create_future()
        try:
            record = await self._adrive(self._fetch_flow(key_id, epoch, answer))
        except Exception as exc:
            fetching.set_exception(exc)
            fetching.exception()  # retrieved: no "never retrieved" warning when alone
            raise
        except BaseException:  # cancelled: the others look it up themselves
            fetching.cancel()
            raise
        else:
            fetching.set_result(record)
            return record
        finally:
            if self._fetching.get(key_id) is fetching:
                del self._fetching[key_id]

    async def aadd(self, record: KeyRecord) -> None:
        """See :meth:`add`."""
        await self._adrive(self._add_flow(record))

    async def aupdate(self, key_id: str, changes: KeyChanges) -> KeyRecord | None:
        """See :meth:`update`."""
        return await self._adrive(self._update_flow(key_id, changes))

    async def arevoke(self, key_id: str, at: datetime) -> KeyRecord | None:
        """See :meth:`revoke`."""
        return await self._adrive(self._revoke_flow(key_id, at))

    async def alist_keys(self, owner: str | None = None) -> Sequence[KeyRecord]:
        """See :meth:`list_keys`."""
        return await self._async_io().store.alist_keys(owner)  # type: ignore[no-any-return]

    async def atouch(self, last_used: Mapping[str, datetime]) -> None:
        """See :meth:`touch`."""
        await self._adrive(self._touch_flow(last_used))

    async def aclose(self) -> None:
        """See :meth:`close`."""
        io = self._async_io()
        self.clear()
        if io.broadcast is not None:
            await io.broadcast.aclose()
        await io.store.aclose()


class _CacheIO:
    """What the cache's flows run against: the wrapped store and the broadcast, both of
    the driver's flavour (``store.get`` for the sync driver, ``store.aget`` for the other)."""

    __slots__ = ("broadcast", "store")

    def __init__(self, store: Any, broadcast: Any) -> None:
        self.store = store
        self.broadcast = broadcast

    def __repr__(self) -> str:
        return f"_CacheIO({self.store!r}, {self.broadcast!r})"


class _Refused(KeyguardError):
    """The wrapped store refused its arguments (a ValueError or TypeError); carried past
    the driver, which would report it as a StorageError, to reach the caller as itself."""

    def __init__(self, error: Exception) -> None:
        super().__init__(type(error).__name__)
        self.error = error


class _Passing(Step[R]):
    """A step of the wrapped store whose refusals (ValueError, TypeError) stay what they are."""

    __slots__ = ("step",)

    def __init__(self, step: Step[R]) -> None:
        self.step = step

    def __repr__(self) -> str:
        return repr(self.step)

    def run(self, io: _CacheIO) -> R:
        try:
            return self.step.run(io)
        except (ValueError, TypeError) as exc:
            if isinstance(exc, KeyguardError):
                raise
            raise _Refused(exc) from exc

    async def arun(self, io: _CacheIO) -> R:
        try:
            return await self.step.arun(io)
        except (ValueError, TypeError) as exc:
            if isinstance(exc, KeyguardError):
                raise
            raise _Refused(exc) from exc


class _Poll(Step[Collection[str] | None]):
    """The key_ids announced since the last poll; None: announcements may be lost."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "_Poll()"

    def run(self, io: _CacheIO) -> Collection[str] | None:
        return () if io.broadcast is None else io.broadcast.poll()

    async def arun(self, io: _CacheIO) -> Collection[str] | None:
        if io.broadcast is None:
            return ()
        return await io.broadcast.apoll()  # type: ignore[no-any-return]


class _Publish(Step[None]):
    """Announce that ``key_id`` changed."""

    __slots__ = ("key_id",)

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id

    def __repr__(self) -> str:
        return f"_Publish({self.key_id!r})"

    def run(self, io: _CacheIO) -> None:
        if io.broadcast is not None:
            io.broadcast.publish(self.key_id)

    async def arun(self, io: _CacheIO) -> None:
        if io.broadcast is not None:
            await io.broadcast.apublish(self.key_id)
