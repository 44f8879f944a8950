"""last_used_at: noted by requests, written behind them by a background thread or task."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keyguard import AsyncKeyManager, KeyManager, LastUsedRecorder, StorageError
from keyguard import _last_used as last_used_module
from keyguard._drive import drive_sync
from keyguard._last_used import FLUSH_CHUNK, LOOP_FLUSH_CHUNK, touch_flow
from keyguard._steps import Backends
from keyguard.stores import MemoryKeyStore
from keyguard.stores.sql import SQLKeyStore
from keyguard.testing import FakeClock, sample_record

T0 = datetime(2026, 3, 1, tzinfo=UTC)
#: The longest a test waits for the writer (it takes milliseconds; the machine may be busy).
WAIT = 30.0


class TouchLog(MemoryKeyStore):
    """A memory store that records every touch batch, from whichever thread writes it.

    ``failing`` makes a touch fail; ``gate``, while set to an unset event, holds
    every touch until the test sets it (``entered`` tells that one is held).
    """

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[dict[str, datetime]] = []
        self.attempts = 0
        self.failing = False
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.changed = threading.Condition()

    def touch(self, last_used: Mapping[str, datetime]) -> None:
        with self.changed:
            self.attempts += 1
            self.changed.notify_all()
        if self.gate is not None:
            self.entered.set()
            assert self.gate.wait(WAIT), "the test never opened the gate"
        if self.failing:
            raise StorageError("touch failed (test)")
        super().touch(last_used)
        with self.changed:
            self.batches.append(dict(last_used))
            self.changed.notify_all()

    def wait_for(self, done: Callable[[], bool]) -> None:
        with self.changed:
            assert self.changed.wait_for(done, WAIT), "the last-used writer did not write"

    def written(self) -> dict[str, datetime]:
        merged: dict[str, datetime] = {}
        for batch in self.batches:
            merged.update(batch)
        return merged


def thread_of(manager: KeyManager) -> threading.Thread | None:
    """The manager's writer thread, when it is alive."""
    writer = manager._last_used_writer
    assert writer is not None
    return writer._thread if writer.running else None


def task_of(manager: AsyncKeyManager) -> asyncio.Task[None] | None:
    """The manager's writer task, when it runs."""
    writer = manager._last_used_writer
    assert writer is not None
    return writer._task if writer.running else None


async def eventually(done: Callable[[], bool]) -> None:
    """Let the loop run until ``done()``; fail after WAIT seconds."""
    async with asyncio.timeout(WAIT):
        while not done():
            await asyncio.sleep(0)


# -- the recorder -------------------------------------------------------------------------


def test_recorder_keeps_the_latest_time_and_restores_failed_batches(clock: FakeClock) -> None:
    recorder = LastUsedRecorder(10.0, clock=clock.monotonic)
    recorder.record("a", T0)
    recorder.record("a", T0 + timedelta(seconds=5))
    recorder.record("a", T0 + timedelta(seconds=2))  # out of order: ignored
    recorder.restore({"a": T0 + timedelta(seconds=1), "z": T0})
    assert recorder.flush() == {"a": T0 + timedelta(seconds=5), "z": T0}
    assert recorder.flush() == {}


def test_note_records_a_key_at_most_once_a_second(clock: FakeClock) -> None:
    recorder = LastUsedRecorder(60.0, clock=clock.monotonic)
    calls: list[datetime] = []

    def now() -> datetime:
        calls.append(clock.now())
        return clock.now()

    first = clock.now()
    recorder.note("a", now)
    clock.advance(0.5)
    recorder.note("a", now)  # within the second: not even the wall clock is read
    assert calls == [first]
    clock.advance(0.5)
    recorder.note("a", now)
    assert len(calls) == 2
    assert recorder.flush() == {"a": calls[-1]}
    recorder.note("a", now)  # a batch was taken: the next use is noted again
    assert len(calls) == 3


@pytest.mark.parametrize(
    "interval",
    [pytest.param(-1, id="negative"), pytest.param(float("nan"), id="nan")],
)
def test_recorder_refuses_a_bad_interval(interval: float) -> None:
    with pytest.raises(ValueError, match="interval"):
        LastUsedRecorder(interval)


def test_a_recorder_serves_one_manager() -> None:
    recorder = LastUsedRecorder()
    KeyManager(MemoryKeyStore(), last_used=recorder)
    with pytest.raises(ValueError, match="another key manager"):
        KeyManager(MemoryKeyStore(), last_used=recorder)


def test_bad_last_used_option() -> None:
    with pytest.raises(TypeError, match="last_used"):
        KeyManager(MemoryKeyStore(), last_used="often")  # type: ignore[arg-type]


# -- the write ----------------------------------------------------------------------------


def test_a_batch_is_written_in_chunks() -> None:
    store = TouchLog()
    recorder = LastUsedRecorder()
    batch = {f"key{i:05d}": T0 + timedelta(seconds=i) for i in range(2 * FLUSH_CHUNK + 7)}
    drive_sync(touch_flow(recorder, batch), Backends(store))
    assert [len(b) for b in store.batches] == [FLUSH_CHUNK, FLUSH_CHUNK, 7]
    assert store.written() == batch
    assert len(recorder) == 0


def test_a_failed_chunk_and_the_rest_go_back_to_the_recorder(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = TouchLog()
    recorder = LastUsedRecorder()
    batch = {f"key{i:05d}": T0 for i in range(FLUSH_CHUNK + 1)}
    store.failing = True
    drive_sync(touch_flow(recorder, batch), Backends(store))
    assert store.attempts == 1  # the rest is not tried against a failing store
    assert recorder.flush() == batch
    assert f"could not record the last use of {FLUSH_CHUNK + 1} keys" in caplog.text


# -- the sync manager's thread ------------------------------------------------------------


def test_the_thread_starts_with_the_first_use_and_close_stops_it(clock: FakeClock) -> None:
    store = TouchLog()
    manager = KeyManager(store, clock=clock)
    issued = manager.create("acme")
    assert thread_of(manager) is None  # nothing started by making a manager or a key
    assert manager.authenticate(issued.token)
    store.wait_for(lambda: len(store.batches) == 1)  # the first use is written at once
    assert store.batches == [{issued.key_id: clock.now()}]
    thread = thread_of(manager)
    assert thread is not None
    assert thread.name == "keyguard-last-used"
    assert thread.daemon
    manager.close()
    assert not thread.is_alive()
    assert thread_of(manager) is None


def test_an_idle_thread_ends_and_the_next_use_starts_another(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(last_used_module, "IDLE_SECONDS", 0.01)
    store = TouchLog()
    store.gate = threading.Event()  # holds the first write, so that the thread is seen alive
    manager = KeyManager(store, clock=clock, last_used=0)
    a, b = manager.create("acme"), manager.create("acme")
    assert manager.authenticate(a.token)
    assert store.entered.wait(WAIT)
    first = thread_of(manager)
    assert first is not None
    store.gate.set()
    first.join(WAIT)  # nothing more to write: it ends on its own
    assert not first.is_alive()
    assert thread_of(manager) is None
    assert manager.authenticate(b.token)
    second = thread_of(manager)
    assert second is not None
    assert second is not first
    store.wait_for(lambda: len(store.batches) == 2)
    assert store.written() == {a.key_id: clock.now(), b.key_id: clock.now()}
    manager.close()


def test_no_request_waits_for_the_write(clock: FakeClock) -> None:
    store = TouchLog()
    store.gate = threading.Event()  # every write is held until the test lets it go
    manager = KeyManager(store, clock=clock)
    a, b = manager.create("acme"), manager.create("acme")
    try:
        assert manager.authenticate(a.token)
        assert store.entered.wait(WAIT)
        # The writer is stuck inside store.touch; requests go on regardless.
        for _ in range(3):
            clock.advance(1)
            assert manager.authenticate(a.token)
            assert manager.authenticate(b.token)
        assert store.batches == []
    finally:
        store.gate.set()
        manager.close()
    assert store.written() == {a.key_id: clock.now(), b.key_id: clock.now()}


def test_at_most_one_batch_per_interval_and_close_writes_the_rest(clock: FakeClock) -> None:
    store = TouchLog()
    manager = KeyManager(store, clock=clock, last_used=3600.0)
    a, b = manager.create("acme"), manager.create("acme")
    assert manager.authenticate(a.token)
    store.wait_for(lambda: len(store.batches) == 1)
    first = clock.now()
    for _ in range(5):
        clock.advance(2)
        assert manager.authenticate(a.token)
        assert manager.authenticate(b.token)
    # The next batch is an hour away: everything since waits in memory ...
    assert store.batches == [{a.key_id: first}]
    assert len(manager.last_used) == 2  # type: ignore[arg-type]
    manager.close()  # ... and the shutdown writes it: nothing noted is lost.
    assert store.batches[1:] == [{a.key_id: clock.now(), b.key_id: clock.now()}]
    assert store.get(a.key_id).last_used_at == clock.now()  # type: ignore[union-attr]


def test_a_failing_touch_never_denies_and_is_retried(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = TouchLog()
    store.failing = True
    manager = KeyManager(store, clock=clock)
    issued = manager.create("acme")
    assert manager.authenticate(issued.token)
    store.wait_for(lambda: store.attempts == 1)
    manager.close()  # stops the writer; its own write fails too, and keeps the times
    assert store.batches == []
    assert "could not record the last use of 1 keys" in caplog.text
    store.failing = False
    manager.flush_last_used()
    assert store.batches == [{issued.key_id: clock.now()}]


@pytest.mark.parametrize(
    ("option", "writes"),
    [
        pytest.param(None, 0, id="off"),
        pytest.param(0, 3, id="every-use"),
        pytest.param(3600.0, 1, id="interval"),
    ],
)
def test_last_used_option(clock: FakeClock, option: Any, writes: int) -> None:
    store = TouchLog()
    manager = KeyManager(store, clock=clock, last_used=option)
    issued = manager.create("acme")
    for use in range(1, 4):
        assert manager.authenticate(issued.token)
        if option is not None:
            expected = min(use, writes)
            store.wait_for(lambda: len(store.batches) >= expected)  # noqa: B023 (called here)
        clock.advance(1)
    assert len(store.batches) == writes
    manager.close()
    if option is not None:
        assert thread_of(manager) is None


def test_denied_requests_are_not_recorded(clock: FakeClock) -> None:
    store = TouchLog()
    manager = KeyManager(store, clock=clock)
    issued = manager.create("acme")
    manager.revoke(issued.key_id)
    assert not manager.authenticate(issued.token)
    assert thread_of(manager) is None
    manager.close()
    assert store.attempts == 0


# -- the async manager's task -------------------------------------------------------------


class LoopTouchLog:
    """A TouchLog behind async methods only, whose writes a test can hold on the event
    loop, as a slow database's are."""

    def __init__(self) -> None:
        self.log = TouchLog()
        self.batches = self.log.batches
        self.agate: asyncio.Event | None = None
        self.aentered: asyncio.Event | None = None
        self.order: list[str] = []

    async def aget(self, key_id: str) -> Any:
        return self.log.get(key_id)

    async def aadd(self, record: Any) -> None:
        self.log.add(record)

    async def aupdate(self, key_id: str, changes: Any) -> Any:
        return self.log.update(key_id, changes)

    async def arevoke(self, key_id: str, at: datetime) -> Any:
        return self.log.revoke(key_id, at)

    async def alist_keys(self, owner: str | None = None) -> Any:
        return self.log.list_keys(owner)

    async def atouch(self, last_used: Mapping[str, datetime]) -> None:
        if self.agate is not None:
            assert self.aentered is not None
            self.aentered.set()
            await self.agate.wait()
        self.order.append("touch")
        self.log.touch(last_used)

    async def aclose(self) -> None:
        pass


@pytest.mark.anyio
async def test_the_task_starts_with_the_first_use_and_aclose_stops_it(clock: FakeClock) -> None:
    store = TouchLog()
    manager = AsyncKeyManager(store, clock=clock, last_used=3600.0)
    issued = await manager.create("acme")
    assert task_of(manager) is None
    assert await manager.authenticate(issued.token)
    assert store.batches == []  # the request returned before anything was written
    task = task_of(manager)
    assert task is not None
    assert task.get_name() == "keyguard-last-used"
    await asyncio.sleep(0)  # one turn of the loop: the task writes the first use
    assert store.batches == [{issued.key_id: clock.now()}]
    clock.advance(5)
    assert await manager.authenticate(issued.token)
    await manager.aclose()  # the task was waiting out its interval: stopped, the rest written
    assert task.done()
    assert task_of(manager) is None
    assert store.batches[1:] == [{issued.key_id: clock.now()}]


@pytest.mark.anyio
async def test_the_task_lets_the_loop_serve_requests_between_chunks(clock: FakeClock) -> None:
    store = LoopTouchLog()
    manager = AsyncKeyManager(store, clock=clock, last_used=3600.0)
    assert manager.last_used is not None
    for i in range(3 * LOOP_FLUSH_CHUNK):
        store.log.add(sample_record(key_id=f"key{i:05d}"))
        manager.last_used.record(f"key{i:05d}", T0)
    stop = False

    async def heartbeat() -> None:
        while not stop:
            store.order.append("tick")
            await asyncio.sleep(0)

    beating = asyncio.create_task(heartbeat())
    task = task_of(manager)
    assert task is not None
    await eventually(lambda: len(store.batches) == 3)
    stop = True
    await beating
    touches = [i for i, what in enumerate(store.order) if what == "touch"]
    assert len(touches) == 3
    assert all("tick" in store.order[i:j] for i, j in itertools.pairwise(touches))
    assert [len(b) for b in store.batches] == [LOOP_FLUSH_CHUNK] * 3
    await manager.aclose()
    assert task.done()


@pytest.mark.anyio
async def test_aclose_waits_for_the_chunk_being_written(clock: FakeClock) -> None:
    store = LoopTouchLog()
    store.agate, store.aentered = asyncio.Event(), asyncio.Event()
    manager = AsyncKeyManager(store, clock=clock)
    issued = await manager.create("acme")
    first = clock.now()
    assert await manager.authenticate(issued.token)
    await store.aentered.wait()  # the task is inside atouch
    clock.advance(3)
    assert await manager.authenticate(issued.token)
    closing = asyncio.create_task(manager.aclose())
    await asyncio.sleep(0)
    assert not closing.done()  # it waits for the write in progress, never cancels it
    store.agate.set()
    await closing
    assert store.batches == [{issued.key_id: first}, {issued.key_id: clock.now()}]


def test_a_loop_that_ends_mid_write_loses_nothing_and_the_next_loop_writes(
    clock: FakeClock,
) -> None:
    """The decision for several event loops: the task follows the manager's use."""
    store = LoopTouchLog()
    manager = AsyncKeyManager(store, clock=clock)
    keys = asyncio.run(manager.create("acme")), asyncio.run(manager.create("acme"))
    first = clock.now()

    async def first_loop() -> None:
        store.agate, store.aentered = asyncio.Event(), asyncio.Event()
        assert await manager.authenticate(keys[0].token)
        await store.aentered.wait()
        # The loop ends here, with the write held: asyncio.run cancels the task.

    asyncio.run(first_loop())
    assert store.batches == []
    assert manager.last_used is not None
    assert len(manager.last_used) == 1  # the cancelled write went back to the recorder
    store.agate = None
    clock.advance(1)

    async def second_loop() -> None:
        assert await manager.authenticate(keys[1].token)
        task = task_of(manager)  # started on this loop
        assert task is not None
        assert task.get_loop() is asyncio.get_running_loop()
        await manager.aclose()
        assert task.done()

    asyncio.run(second_loop())
    assert store.log.written() == {keys[0].key_id: first, keys[1].key_id: clock.now()}


@pytest.mark.anyio
async def test_async_manager_writes_behind_to_sqlite(clock: FakeClock, sqlite_url: str) -> None:
    store = SQLKeyStore(sqlite_url)
    await store.acreate_schema()
    manager = AsyncKeyManager(
        store, clock=clock, last_used=LastUsedRecorder(3600.0, clock=clock.monotonic)
    )
    issued = await manager.create("acme")
    assert await manager.authenticate(issued.token)
    first = clock.now()
    task = task_of(manager)
    assert task is not None
    async with asyncio.timeout(WAIT):
        while (await store.aget(issued.key_id)).last_used_at is None:  # type: ignore[union-attr]
            await asyncio.sleep(0)
    clock.advance(10)
    assert await manager.authenticate(issued.token)
    assert (await store.aget(issued.key_id)).last_used_at == first  # type: ignore[union-attr]
    await manager.aclose()  # writes the rest
    assert task.done()
    reopened = SQLKeyStore(sqlite_url)
    assert reopened.get(issued.key_id).last_used_at == clock.now()  # type: ignore[union-attr]
    reopened.close()
