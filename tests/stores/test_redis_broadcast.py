"""The Redis revocation broadcast, against the real server."""

from __future__ import annotations

import multiprocessing
import time
import uuid

import pytest

from keyguard import KeyManager, StorageError
from keyguard.stores import CachedKeyStore
from keyguard.stores.redis_broadcast import DEFAULT_CHANNEL, RedisRevocationBroadcast
from keyguard.stores.sql import SQLKeyStore
from keyguard.testing import FakeClock

from . import _workers
from .test_sql import closed_port

pytestmark = pytest.mark.redis


@pytest.fixture
def channel() -> str:
    return f"keyguard-test:{uuid.uuid4().hex}"


def wait_for(condition: object, *, seconds: float = 2.0) -> bool:
    """Poll a real server's effect with short waits (delivery crosses a socket)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_first_poll_subscribes_and_reports_a_fresh_start(redis_url: str, channel: str) -> None:
    listener = RedisRevocationBroadcast(redis_url, channel=channel)
    talker = RedisRevocationBroadcast(redis_url, channel=channel)
    try:
        assert listener.poll() is None  # nothing cached before this may be trusted
        assert listener.poll() == []
        talker.publish("AAAAAAAAAAAA")
        talker.publish("BBBBBBBBBBBB")
        heard: list[str] = []
        assert wait_for(lambda: heard.extend(listener.poll() or []) or len(heard) == 2)
        assert heard == ["AAAAAAAAAAAA", "BBBBBBBBBBBB"]
    finally:
        listener.close()
        talker.close()


@pytest.mark.anyio
async def test_async_poll_and_publish(redis_url: str, channel: str) -> None:
    listener = RedisRevocationBroadcast(redis_url, channel=channel)
    talker = RedisRevocationBroadcast(redis_url, channel=channel)
    try:
        assert await listener.apoll() is None
        await talker.apublish("AAAAAAAAAAAA")
        heard: list[str] = []
        deadline = time.monotonic() + 2
        while not heard and time.monotonic() < deadline:
            heard.extend(await listener.apoll() or [])
        assert heard == ["AAAAAAAAAAAA"]
    finally:
        await listener.aclose()
        await talker.aclose()


def test_unreachable_redis(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    broadcast = RedisRevocationBroadcast(
        f"redis://127.0.0.1:{closed_port()}/0", retry_interval=5.0, clock=clock.monotonic
    )
    with pytest.raises(StorageError, match="publish failed"):
        broadcast.publish("AAAAAAAAAAAA")
    assert broadcast.poll() is None  # may have lost messages: caches clear themselves
    assert "caches fall back to their TTL" in caplog.text
    assert broadcast.poll() == []  # no reconnect attempt before retry_interval
    clock.advance(5)
    assert broadcast.poll() is None
    broadcast.close()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({}, None, id="unset"),
        pytest.param({"KEYGUARD_REDIS_URL": "redis://127.0.0.1:6379/0"}, DEFAULT_CHANNEL, id="set"),
    ],
)
def test_from_environment(environ: dict[str, str], expected: str | None) -> None:
    broadcast = RedisRevocationBroadcast.from_environment(environ)
    assert (broadcast.channel if broadcast else None) == expected


@pytest.mark.slow
def test_a_revoke_in_another_process_evicts_here_within_a_second(
    redis_url: str, channel: str, sqlite_url: str
) -> None:
    """Two processes on one database and one channel: the TTL is not what saves us here."""
    clock = FakeClock()
    store = SQLKeyStore(sqlite_url)
    store.create_schema()
    manager = KeyManager(store, last_used=None)
    key_id = manager.create("acme").key_id
    broadcast = RedisRevocationBroadcast(redis_url, channel=channel)
    cache = CachedKeyStore(store, ttl=5.0, clock=clock.monotonic, broadcast=broadcast)
    unannounced = CachedKeyStore(SQLKeyStore(sqlite_url), ttl=5.0, clock=clock.monotonic)
    try:
        assert cache.get(key_id).revoked_at is None  # type: ignore[union-attr]
        assert unannounced.get(key_id).revoked_at is None  # type: ignore[union-attr]

        ctx = multiprocessing.get_context("spawn")
        results = ctx.Queue()
        proc = ctx.Process(
            target=_workers.revoke_and_announce,
            args=(sqlite_url, redis_url, channel, key_id, results),
        )
        proc.start()
        assert results.get(timeout=60)[0] == "ok"
        proc.join(timeout=30)

        advanced = 0.0

        def evicted() -> bool:
            nonlocal advanced
            clock.advance(0.25)  # the cache polls at most every 0.2 s
            advanced += 0.25
            return cache.get(key_id).revoked_at is not None  # type: ignore[union-attr]

        assert wait_for(evicted, seconds=3.0)
        assert advanced < 5.0, "the TTL expired first: the broadcast did not arrive"
        # Without the broadcast the revoked key is still served from memory until the TTL.
        assert unannounced.get(key_id).revoked_at is None  # type: ignore[union-attr]
    finally:
        cache.close()
        unannounced.close()
