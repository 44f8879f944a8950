"""CachedKeyStore: TTL, negative entries, size bounds, eviction, and the broadcast polling."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keyguard import KeyChanges, KeyManager, StorageError
from keyguard.stores import CachedKeyStore, MemoryKeyStore
from keyguard.testing import FakeClock, sample_record

T0 = datetime(2026, 3, 1, tzinfo=UTC)


class CountingStore(MemoryKeyStore):
    """A memory store that counts lookups, and can run a hook in the middle of one."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self.during_get: Any = None

    def get(self, key_id: str) -> Any:
        self.gets += 1
        record = super().get(key_id)
        if self.during_get is not None:
            self.during_get()
        return record


class SyncOnlyStore:
    def __init__(self) -> None:
        self._inner = MemoryKeyStore()

    def get(self, key_id: str) -> Any:
        return self._inner.get(key_id)

    def add(self, record: Any) -> None:
        self._inner.add(record)

    def update(self, key_id: str, changes: Any) -> Any:
        return self._inner.update(key_id, changes)

    def revoke(self, key_id: str, at: Any) -> Any:
        return self._inner.revoke(key_id, at)

    def list_keys(self, owner: str | None = None) -> Any:
        return self._inner.list_keys(owner)

    def touch(self, last_used: Any) -> None:
        self._inner.touch(last_used)

    def close(self) -> None:
        pass


class ListBroadcast:
    """An in-process broadcast: what was published is what the next poll returns."""

    def __init__(self) -> None:
        self.published: list[str] = []
        self.pending: list[str] | None = []
        self.polls = 0
        self.fail_publish = False

    def publish(self, key_id: str) -> None:
        if self.fail_publish:
            raise StorageError("revocation broadcast: publish failed (test)")
        self.published.append(key_id)

    def poll(self) -> Collection[str] | None:
        self.polls += 1
        pending, self.pending = self.pending, []
        return pending

    def close(self) -> None:
        pass

    async def apublish(self, key_id: str) -> None:
        self.publish(key_id)

    async def apoll(self) -> Collection[str] | None:
        return self.poll()

    async def aclose(self) -> None:
        pass


@pytest.fixture
def backing() -> CountingStore:
    return CountingStore()


@pytest.fixture
def cache(backing: CountingStore, clock: FakeClock) -> CachedKeyStore:
    return CachedKeyStore(backing, ttl=5.0, negative_ttl=1.0, clock=clock.monotonic)


def test_a_fresh_entry_is_served_from_memory(
    cache: CachedKeyStore, backing: CountingStore, clock: FakeClock
) -> None:
    record = sample_record()
    backing.add(record)
    assert cache.get(record.key_id) == record
    clock.advance(4.9)
    assert cache.get(record.key_id) == record
    assert backing.gets == 1


def test_ttl_bounds_staleness_of_a_change_made_elsewhere(
    cache: CachedKeyStore, backing: CountingStore, clock: FakeClock
) -> None:
    record = sample_record()
    backing.add(record)
    cache.get(record.key_id)
    backing.revoke(record.key_id, T0)  # another process, straight to the database
    clock.advance(4.9)
    assert cache.get(record.key_id).revoked_at is None  # type: ignore[union-attr]
    clock.advance(0.1)
    assert cache.get(record.key_id).revoked_at == T0  # type: ignore[union-attr]
    assert backing.gets == 2


def test_by_default_a_change_made_elsewhere_is_seen_within_ten_seconds(
    backing: CountingStore, clock: FakeClock
) -> None:
    """The staleness bound a user gets without choosing one: short, and the same for
    unknown key_ids, so that probing one again costs what a known key costs."""
    cache = CachedKeyStore(backing, clock=clock.monotonic)
    assert cache.ttl <= 10.0
    assert cache.negative_ttl == cache.ttl
    record = sample_record()
    backing.add(record)
    assert cache.get(record.key_id) == record
    backing.revoke(record.key_id, T0)  # another process, straight to the database
    clock.advance(10.0)
    assert cache.get(record.key_id).revoked_at == T0  # type: ignore[union-attr]


def test_unknown_ids_are_remembered_for_the_shorter_ttl(
    cache: CachedKeyStore, backing: CountingStore, clock: FakeClock
) -> None:
    assert cache.get("AAAAAAAAAAAA") is None
    clock.advance(0.9)
    assert cache.get("AAAAAAAAAAAA") is None
    assert backing.gets == 1
    backing.add(sample_record(key_id="AAAAAAAAAAAA"))
    clock.advance(0.1)
    assert cache.get("AAAAAAAAAAAA") is not None
    assert backing.gets == 2


def test_add_through_the_cache_forgets_a_negative_entry(cache: CachedKeyStore) -> None:
    assert cache.get("AAAAAAAAAAAA") is None
    record = sample_record(key_id="AAAAAAAAAAAA")
    cache.add(record)
    assert cache.get("AAAAAAAAAAAA") == record


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda c, k: c.revoke(k, T0), id="revoke"),
        pytest.param(lambda c, k: c.update(k, KeyChanges(scopes=frozenset({"x"}))), id="update"),
    ],
)
def test_writes_evict_in_process_at_once(
    cache: CachedKeyStore, backing: CountingStore, write: Any
) -> None:
    record = sample_record()
    backing.add(record)
    cache.get(record.key_id)
    write(cache, record.key_id)
    assert cache.get(record.key_id) == backing.get(record.key_id)
    assert cache.get(record.key_id) != record


@pytest.mark.parametrize(
    ("before", "written", "after"),
    [
        pytest.param(None, T0, T0, id="first-use"),
        pytest.param(T0, T0 + timedelta(seconds=60), T0 + timedelta(seconds=60), id="later-use"),
        pytest.param(T0 + timedelta(seconds=60), T0, T0 + timedelta(seconds=60), id="never-back"),
    ],
)
def test_touch_updates_the_cached_record_in_place(
    cache: CachedKeyStore,
    backing: CountingStore,
    before: datetime | None,
    written: datetime,
    after: datetime,
) -> None:
    """A written last use changes nothing else: the cached record is not read again."""
    record = sample_record(last_used_at=before)
    backing.add(record)
    other = sample_record()
    backing.add(other)
    cache.get(record.key_id)
    cache.get(other.key_id)
    cache.touch({record.key_id: written, "AAAAAAAAAAAA": written})
    assert cache.get(record.key_id) == replace(record, last_used_at=after)
    assert cache.get(other.key_id) is other
    assert backing.gets == 2  # the two first lookups only: nothing was evicted
    assert backing.get(record.key_id) == replace(record, last_used_at=after)


def test_a_failed_touch_leaves_the_cache_as_it_was(
    backing: CountingStore, clock: FakeClock
) -> None:
    class FailingTouch(CountingStore):
        def touch(self, last_used: Any) -> None:
            raise StorageError("touch failed (test)")

    failing = FailingTouch()
    cache = CachedKeyStore(failing, clock=clock.monotonic)
    record = sample_record()
    failing.add(record)
    cache.get(record.key_id)
    with pytest.raises(StorageError):
        cache.touch({record.key_id: T0})
    assert cache.get(record.key_id) is failing.get(record.key_id)
    assert failing.gets == 2


@pytest.mark.anyio
async def test_atouch_updates_the_cached_record_in_place(
    cache: CachedKeyStore, backing: CountingStore
) -> None:
    record = sample_record()
    backing.add(record)
    await cache.aget(record.key_id)
    await cache.atouch({record.key_id: T0})
    assert await cache.aget(record.key_id) == replace(record, last_used_at=T0)
    assert backing.gets == 1


def test_revoke_through_a_manager_takes_effect_at_once(clock: FakeClock) -> None:
    cache = CachedKeyStore(MemoryKeyStore(), clock=clock.monotonic)
    manager = KeyManager(cache, clock=clock)
    issued = manager.create("acme")
    assert manager.authenticate(issued.token)
    manager.revoke(issued.key_id)
    denial = manager.authenticate(issued.token)
    assert not denial
    assert denial.reason.value == "revoked"  # type: ignore[union-attr]


def test_a_lookup_that_races_with_an_eviction_is_not_cached(
    cache: CachedKeyStore, backing: CountingStore
) -> None:
    record = sample_record()
    backing.add(record)

    def revoke_meanwhile() -> None:
        backing.during_get = None
        backing.revoke(record.key_id, T0)
        cache.evict(record.key_id)

    backing.during_get = revoke_meanwhile
    stale = cache.get(record.key_id)
    assert stale is not None
    assert stale.revoked_at is None  # read before the revoke landed
    assert cache.get(record.key_id).revoked_at == T0  # type: ignore[union-attr]


def test_size_is_bounded_least_recently_used_first(
    backing: CountingStore, clock: FakeClock
) -> None:
    cache = CachedKeyStore(backing, max_size=2, negative_max_size=2, clock=clock.monotonic)
    a, b, c = sample_record(), sample_record(), sample_record()
    for record in (a, b, c):
        backing.add(record)
    cache.get(a.key_id)
    cache.get(b.key_id)
    cache.get(a.key_id)  # a is now the most recent
    cache.get(c.key_id)  # pushes out b
    backing.gets = 0
    cache.get(a.key_id)
    cache.get(c.key_id)
    assert backing.gets == 0
    cache.get(b.key_id)
    assert backing.gets == 1
    for unknown in ("AAAAAAAAAAA1", "AAAAAAAAAAA2", "AAAAAAAAAAA3"):
        cache.get(unknown)
    assert len(cache) == 2 + 2  # unknown ids never push out real records


def test_clear_and_evict(cache: CachedKeyStore, backing: CountingStore) -> None:
    record = sample_record()
    backing.add(record)
    cache.get(record.key_id)
    cache.evict(record.key_id)
    cache.get(record.key_id)
    cache.clear()
    cache.get(record.key_id)
    assert backing.gets == 3


def test_list_keys_is_never_cached(cache: CachedKeyStore, backing: CountingStore) -> None:
    record = sample_record()
    cache.add(record)
    assert cache.list_keys() == [record]
    backing.revoke(record.key_id, T0)
    assert cache.list_keys()[0].revoked_at == T0


@pytest.mark.parametrize(
    ("options", "error"),
    [
        pytest.param({"ttl": 0}, "ttl", id="zero-ttl"),
        pytest.param({"negative_ttl": 10.0}, "negative_ttl", id="negative-longer-than-ttl"),
        pytest.param({"negative_ttl": 0}, "negative_ttl", id="zero-negative-ttl"),
        pytest.param({"max_size": 0}, "max_size", id="zero-size"),
        pytest.param({"poll_interval": 0}, "poll_interval", id="zero-poll-interval"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        CachedKeyStore(MemoryKeyStore(), **options)


def test_not_a_store_is_refused() -> None:
    with pytest.raises(TypeError, match="KeyStore"):
        CachedKeyStore(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="RevocationBroadcast"):
        CachedKeyStore(MemoryKeyStore(), broadcast=object())  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_async_methods_of_a_sync_only_store_say_so() -> None:
    cache = CachedKeyStore(SyncOnlyStore())
    with pytest.raises(TypeError, match="no async methods"):
        await cache.aget("AAAAAAAAAAAA")


# -- the broadcast -----------------------------------------------------------------------


def test_announced_keys_are_evicted_on_the_next_poll(
    backing: CountingStore, clock: FakeClock
) -> None:
    broadcast = ListBroadcast()
    cache = CachedKeyStore(backing, clock=clock.monotonic, broadcast=broadcast, poll_interval=0.2)
    record = sample_record()
    backing.add(record)
    cache.get(record.key_id)
    backing.revoke(record.key_id, T0)
    broadcast.pending = [record.key_id]
    clock.advance(0.1)
    assert cache.get(record.key_id).revoked_at is None  # type: ignore[union-attr]
    assert broadcast.polls == 1  # not due yet: polls are at most every poll_interval
    clock.advance(0.1)
    assert cache.get(record.key_id).revoked_at == T0  # type: ignore[union-attr]
    assert broadcast.polls == 2


def test_a_poll_that_may_have_lost_messages_clears_everything(
    backing: CountingStore, clock: FakeClock
) -> None:
    broadcast = ListBroadcast()
    cache = CachedKeyStore(backing, clock=clock.monotonic, broadcast=broadcast)
    records = [sample_record() for _ in range(3)]
    for record in records:
        backing.add(record)
        cache.get(record.key_id)
    broadcast.pending = None
    clock.advance(1)
    cache.get(records[0].key_id)
    assert len(cache) == 1


def test_writes_are_announced(backing: CountingStore, clock: FakeClock) -> None:
    broadcast = ListBroadcast()
    cache = CachedKeyStore(backing, clock=clock.monotonic, broadcast=broadcast)
    record = sample_record()
    cache.add(record)
    cache.update(record.key_id, KeyChanges(name="new"))
    cache.revoke(record.key_id, T0)
    cache.touch({record.key_id: T0})
    assert broadcast.published == [record.key_id, record.key_id]


def test_a_failed_announcement_does_not_undo_the_revoke(
    backing: CountingStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    broadcast = ListBroadcast()
    broadcast.fail_publish = True
    cache = CachedKeyStore(backing, clock=clock.monotonic, broadcast=broadcast)
    record = sample_record()
    cache.add(record)
    revoked = cache.revoke(record.key_id, T0)
    assert revoked == replace(record, revoked_at=T0)
    assert record.key_id in caplog.text
    assert "within 5.0 s" in caplog.text


@pytest.mark.anyio
async def test_async_path(clock: FakeClock) -> None:
    backing = CountingStore()
    broadcast = ListBroadcast()
    cache = CachedKeyStore(backing, clock=clock.monotonic, broadcast=broadcast)
    record = sample_record()
    await cache.aadd(record)
    assert await cache.aget(record.key_id) == record
    assert await cache.aget(record.key_id) == record
    assert backing.gets == 1
    await cache.arevoke(record.key_id, T0)
    assert (await cache.aget(record.key_id)).revoked_at == T0  # type: ignore[union-attr]
    assert broadcast.published == [record.key_id]
    backing.revoke(record.key_id, T0)
    broadcast.pending = [record.key_id]
    await cache.aupdate(record.key_id, KeyChanges(name="renamed"))
    clock.advance(1)
    assert (await cache.aget(record.key_id)).name == "renamed"  # type: ignore[union-attr]
    assert [r.key_id for r in await cache.alist_keys()] == [record.key_id]
    await cache.atouch({record.key_id: T0})
    await cache.aclose()
    assert len(cache) == 0


# -- while the store fails ---------------------------------------------------------------


class FailingStore(CountingStore):
    """A memory store that can be switched to fail every lookup, as a store in an outage."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def get(self, key_id: str) -> Any:
        if self.down:
            self.gets += 1
            raise StorageError("store down (test)")
        return super().get(key_id)


@pytest.fixture
def failing() -> FailingStore:
    return FailingStore()


def test_an_entry_past_its_ttl_answers_only_while_the_store_fails(
    failing: FailingStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    cache = CachedKeyStore(failing, ttl=5.0, stale_ttl=30.0, clock=clock.monotonic)
    record = sample_record()
    failing.add(record)
    cache.get(record.key_id)
    clock.advance(6.0)
    failing.revoke(record.key_id, T0)  # another process, while the store still answers
    assert cache.get(record.key_id).revoked_at == T0  # type: ignore[union-attr]
    clock.advance(6.0)
    failing.down = True
    assert cache.get(record.key_id).revoked_at == T0  # type: ignore[union-attr]
    assert cache.get(record.key_id).revoked_at == T0  # type: ignore[union-attr]
    assert failing.gets == 4  # each lookup still asks the store first
    assert "up to 30.0 s past their TTL" in caplog.text
    assert caplog.text.count("is failing") == 1  # one warning per TTL, not per lookup
    failing.down = False
    clock.advance(1.0)
    assert cache.get(record.key_id).revoked_at == T0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("stale_ttl", "age", "served"),
    [
        pytest.param(30.0, 34.9, True, id="within-the-bound"),
        pytest.param(30.0, 35.0, False, id="at-the-bound"),
        pytest.param(0.0, 5.0, False, id="turned-off"),
    ],
)
def test_the_stale_bound(
    failing: FailingStore, clock: FakeClock, stale_ttl: float, age: float, served: bool
) -> None:
    cache = CachedKeyStore(failing, ttl=5.0, stale_ttl=stale_ttl, clock=clock.monotonic)
    record = sample_record()
    failing.add(record)
    cache.get(record.key_id)
    assert cache.get("AAAAAAAAAAAA") is None
    clock.advance(age)
    failing.down = True
    for key_id, answer in ((record.key_id, record), ("AAAAAAAAAAAA", None)):
        if served:
            assert cache.get(key_id) == answer
        else:
            with pytest.raises(StorageError, match="store down"):
                cache.get(key_id)


def test_a_key_never_looked_up_is_unavailable_during_an_outage(failing: FailingStore) -> None:
    cache = CachedKeyStore(failing)
    failing.add(sample_record(key_id="AAAAAAAAAAAA"))
    failing.down = True
    with pytest.raises(StorageError, match="store down"):
        cache.get("AAAAAAAAAAAA")


def test_an_announced_revocation_reaches_a_stale_entry_during_an_outage(
    failing: FailingStore, clock: FakeClock
) -> None:
    broadcast = ListBroadcast()
    cache = CachedKeyStore(failing, clock=clock.monotonic, broadcast=broadcast)
    record = sample_record()
    failing.add(record)
    cache.get(record.key_id)
    clock.advance(6.0)
    failing.down = True
    assert cache.get(record.key_id) == record
    broadcast.pending = [record.key_id]
    clock.advance(1.0)
    with pytest.raises(StorageError):
        cache.get(record.key_id)


@pytest.mark.anyio
async def test_async_lookups_serve_stale_entries_too(
    failing: FailingStore, clock: FakeClock
) -> None:
    cache = CachedKeyStore(failing, clock=clock.monotonic)
    record = sample_record()
    failing.add(record)
    assert await cache.aget(record.key_id) == record
    clock.advance(10.0)
    failing.down = True
    assert await cache.aget(record.key_id) == record
    with pytest.raises(StorageError):
        await cache.aget("AAAAAAAAAAAA")


def test_unknown_and_known_key_ids_cost_the_same_lookups(
    backing: CountingStore, clock: FakeClock
) -> None:
    """Probing one key_id again and again costs one store lookup per TTL, known or not."""
    cache = CachedKeyStore(backing, clock=clock.monotonic)
    record = sample_record()
    backing.add(record)
    for key_id in (record.key_id, "AAAAAAAAAAAA"):
        backing.gets = 0
        for _ in range(20):
            cache.get(key_id)
            clock.advance(0.5)
        assert backing.gets == 2, key_id  # at 0 s and at 5 s


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda c, r: c.add(r), id="add"),
        pytest.param(lambda c, r: c.update(r.key_id, KeyChanges(name=None)), id="update"),
    ],
)
def test_a_record_the_store_refuses_is_its_own_error_through_the_cache(
    sqlite_store: Any, write: Any
) -> None:
    """The SQL store refuses a text field that is not a string with ValueError; the cache
    passes it on as it is, not as a failure of the store."""
    cache = CachedKeyStore(sqlite_store)
    stored = sample_record()
    cache.add(stored)
    with pytest.raises(ValueError, match="name must be a string") as caught:
        write(cache, replace(stored, key_id="AAAAAAAAAAAA", name=None))
    assert not isinstance(caught.value, StorageError)


class SlowAsyncStore(MemoryKeyStore):
    """An async store whose lookups take a while and are counted."""

    nonblocking = False  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0
        self.fail: Exception | None = None

    async def aget(self, key_id: str) -> Any:
        import asyncio

        self.lookups += 1
        await asyncio.sleep(0)  # others arrive while this lookup is under way
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        return self.get(key_id)


@pytest.mark.anyio
async def test_a_burst_of_lookups_of_one_key_makes_one_store_lookup() -> None:
    import asyncio

    store = SlowAsyncStore()
    record = sample_record()
    store.add(record)
    cache = CachedKeyStore(store)
    answers = await asyncio.gather(*[cache.aget(record.key_id) for _ in range(50)])
    assert answers == [record] * 50
    assert store.lookups == 1
    store.fail = StorageError("down")
    cache.clear()
    results = await asyncio.gather(
        *[cache.aget(record.key_id) for _ in range(5)], return_exceptions=True
    )
    assert all(isinstance(r, StorageError) for r in results)
    assert store.lookups == 2, "the failure is shared too"


@pytest.mark.anyio
async def test_a_cancelled_lookup_leaves_the_others_to_look_up_themselves() -> None:
    import asyncio

    store = SlowAsyncStore()
    record = sample_record()
    store.add(record)
    cache = CachedKeyStore(store)
    first = asyncio.ensure_future(cache.aget(record.key_id))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(cache.aget(record.key_id))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == record
    assert store.lookups == 2
