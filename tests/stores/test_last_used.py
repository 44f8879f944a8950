"""last_used_at: written behind, at most once per key per interval, in batches."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keyguard import AsyncKeyManager, KeyManager, LastUsedRecorder, StorageError
from keyguard.stores import MemoryKeyStore
from keyguard.stores.sql import SQLKeyStore
from keyguard.testing import FakeClock

T0 = datetime(2026, 3, 1, tzinfo=UTC)


class TouchLog(MemoryKeyStore):
    """A memory store that records every touch batch, and can be made to fail them."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[dict[str, datetime]] = []
        self.failing = False

    def touch(self, last_used: Mapping[str, datetime]) -> None:
        if self.failing:
            raise StorageError("touch failed (test)")
        self.batches.append(dict(last_used))
        super().touch(last_used)


def test_recorder_batches_at_most_once_per_interval(clock: FakeClock) -> None:
    recorder = LastUsedRecorder(60.0, clock=clock.monotonic)
    assert recorder.record("a", T0) == {"a": T0}  # the first use is written at once
    assert recorder.record("a", T0 + timedelta(seconds=1)) is None
    assert recorder.record("b", T0 + timedelta(seconds=2)) is None
    assert recorder.record("a", T0 + timedelta(seconds=3)) is None
    clock.advance(59.9)
    assert recorder.record("c", T0 + timedelta(seconds=4)) is None
    clock.advance(0.1)
    batch = recorder.record("b", T0 + timedelta(seconds=5))
    assert batch == {
        "a": T0 + timedelta(seconds=3),
        "b": T0 + timedelta(seconds=5),
        "c": T0 + timedelta(seconds=4),
    }
    assert len(recorder) == 0


def test_recorder_keeps_the_latest_time_and_restores_failed_batches(clock: FakeClock) -> None:
    recorder = LastUsedRecorder(10.0, clock=clock.monotonic)
    recorder.record("a", T0)
    recorder.record("a", T0 + timedelta(seconds=5))
    recorder.record("a", T0 + timedelta(seconds=2))  # out of order: ignored
    recorder.restore({"a": T0 + timedelta(seconds=1), "z": T0})
    assert recorder.flush() == {"a": T0 + timedelta(seconds=5), "z": T0}
    assert recorder.flush() == {}


def test_recorder_refuses_a_negative_interval() -> None:
    with pytest.raises(ValueError, match="interval"):
        LastUsedRecorder(-1)


def test_manager_writes_last_used_behind(clock: FakeClock) -> None:
    store = TouchLog()
    manager = KeyManager(store, clock=clock, last_used=60.0)
    a, b = manager.create("acme"), manager.create("acme")
    for _ in range(10):
        assert manager.authenticate(a.token)
        assert manager.authenticate(b.token)
    assert store.batches == [{a.key_id: clock.now()}]
    clock.advance(60)
    assert manager.authenticate(a.token)
    assert store.batches[1] == {
        a.key_id: clock.now(),
        b.key_id: clock.now() - timedelta(seconds=60),
    }
    assert store.get(a.key_id).last_used_at == clock.now()  # type: ignore[union-attr]


def test_a_failing_touch_never_denies_and_is_retried(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = TouchLog()
    manager = KeyManager(store, clock=clock)
    issued = manager.create("acme")
    store.failing = True
    assert manager.authenticate(issued.token)
    assert "could not record the last use of 1 keys" in caplog.text
    store.failing = False
    clock.advance(60)
    assert manager.authenticate(issued.token)
    assert store.batches == [{issued.key_id: clock.now()}]


def test_close_flushes_what_is_pending(clock: FakeClock) -> None:
    store = TouchLog()
    manager = KeyManager(store, clock=clock)
    issued = manager.create("acme")
    manager.authenticate(issued.token)
    clock.advance(5)
    manager.authenticate(issued.token)
    manager.close()
    assert store.batches[-1] == {issued.key_id: clock.now()}


@pytest.mark.parametrize(
    ("option", "touches"),
    [
        pytest.param(None, 0, id="off"),
        pytest.param(0, 3, id="every-request"),
        pytest.param(60.0, 1, id="interval"),
    ],
)
def test_last_used_option(clock: FakeClock, option: Any, touches: int) -> None:
    store = TouchLog()
    manager = KeyManager(store, clock=clock, last_used=option)
    issued = manager.create("acme")
    for _ in range(3):
        manager.authenticate(issued.token)
    assert len(store.batches) == touches


def test_denied_requests_are_not_recorded(clock: FakeClock) -> None:
    store = TouchLog()
    manager = KeyManager(store, clock=clock)
    issued = manager.create("acme")
    manager.revoke(issued.key_id)
    manager.authenticate(issued.token)
    manager.close()
    assert store.batches == []


def test_bad_last_used_option() -> None:
    with pytest.raises(TypeError, match="last_used"):
        KeyManager(MemoryKeyStore(), last_used="often")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_async_manager_writes_behind_to_sqlite(clock: FakeClock, sqlite_url: str) -> None:
    store = SQLKeyStore(sqlite_url)
    await store.acreate_schema()
    manager = AsyncKeyManager(
        store, clock=clock, last_used=LastUsedRecorder(30.0, clock=clock.monotonic)
    )
    issued = await manager.create("acme")
    assert await manager.authenticate(issued.token)
    first = clock.now()
    clock.advance(10)
    assert await manager.authenticate(issued.token)
    assert (await store.aget(issued.key_id)).last_used_at == first  # type: ignore[union-attr]
    await manager.aclose()  # flushes
    reopened = SQLKeyStore(sqlite_url)
    assert reopened.get(issued.key_id).last_used_at == clock.now()  # type: ignore[union-attr]
    reopened.close()
