"""The revocation broadcast on a Redis Cluster, configured by the same URL as the limiter."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from keyguard.stores.redis_broadcast import RedisRevocationBroadcast

pytestmark = pytest.mark.redis

#: The default channel, and channels of this run whose random hash tags put them in random
#: slots: a subscription lives on the node that holds its channel's slot.
CHANNELS = ["keyguard:revocations", "a", "b", "c"]


def _channel(name: str) -> str:
    return name if name == "keyguard:revocations" else f"{name}{{{uuid.uuid4().hex}}}"


@pytest.mark.parametrize("name", CHANNELS)
def test_sync_publish_reaches_a_subscriber_on_the_cluster(
    redis_cluster_url: str, name: str
) -> None:
    channel = _channel(name)
    listener = RedisRevocationBroadcast(redis_cluster_url, channel=channel)
    talker = RedisRevocationBroadcast(redis_cluster_url, channel=channel)
    try:
        assert listener.poll() is None  # subscribed: nothing cached before may be trusted
        assert listener.poll() == []
        talker.publish("AAAAAAAAAAAA")
        talker.publish("BBBBBBBBBBBB")
        heard: list[str] = []
        deadline = time.monotonic() + 2
        while len(heard) < 2 and time.monotonic() < deadline:
            heard.extend(listener.poll() or [])
            time.sleep(0.01)  # delivery crosses the cluster bus
        assert heard == ["AAAAAAAAAAAA", "BBBBBBBBBBBB"]
    finally:
        listener.close()
        talker.close()


@pytest.mark.anyio
@pytest.mark.parametrize("name", CHANNELS)
async def test_async_publish_reaches_a_subscriber_on_the_cluster(
    redis_cluster_url: str, name: str
) -> None:
    channel = _channel(name)
    listener = RedisRevocationBroadcast(redis_cluster_url, channel=channel)
    talker = RedisRevocationBroadcast(redis_cluster_url, channel=channel)
    try:
        assert await listener.apoll() is None
        await talker.apublish("AAAAAAAAAAAA")
        heard: list[str] = []
        deadline = time.monotonic() + 2
        while not heard and time.monotonic() < deadline:
            heard.extend(await listener.apoll() or [])
            await asyncio.sleep(0.01)
        assert heard == ["AAAAAAAAAAAA"]
    finally:
        await listener.aclose()
        await talker.aclose()


def test_sync_and_async_flavours_hear_each_other(redis_cluster_url: str) -> None:
    """A CLI (sync) revoke reaches an ASGI app (async) through the cluster."""
    channel = _channel("a")
    listener = RedisRevocationBroadcast(redis_cluster_url, channel=channel)
    talker = RedisRevocationBroadcast(redis_cluster_url, channel=channel)

    async def listen() -> list[str]:
        assert await listener.apoll() is None
        talker.publish("CCCCCCCCCCCC")
        heard: list[str] = []
        deadline = time.monotonic() + 2
        while not heard and time.monotonic() < deadline:
            heard.extend(await listener.apoll() or [])
            await asyncio.sleep(0.01)
        await listener.aclose()
        return heard

    try:
        assert asyncio.run(listen()) == ["CCCCCCCCCCCC"]
    finally:
        talker.close()


def test_from_environment_takes_a_cluster_url(redis_cluster_url: str) -> None:
    broadcast = RedisRevocationBroadcast.from_environment({"KEYGUARD_REDIS_URL": redis_cluster_url})
    assert broadcast is not None
    try:
        assert broadcast.poll() is None
        broadcast.publish("DDDDDDDDDDDD")
    finally:
        broadcast.close()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://127.0.0.1:6379", id="http"),
        pytest.param("redis+cluster://127.0.0.1:7000/3", id="cluster-db"),
        pytest.param("127.0.0.1:6379", id="no-scheme"),
    ],
)
def test_an_unusable_url_is_refused_when_made(url: str) -> None:
    with pytest.raises(ValueError, match="Redis"):
        RedisRevocationBroadcast(url)
