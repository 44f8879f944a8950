"""Revocation broadcast over Redis pub/sub (extra ``redis``).

Every process that caches keys subscribes to one channel; a revoke, rotate
or update publishes the key_id there, and each subscriber's
:class:`~keyguard.stores.CachedKeyStore` drops it on its next poll. No thread
and no background task: the cache polls the subscription without blocking
(at most every 0.2 s) from its own lookups, so an announcement takes effect
within about a second on a process serving traffic. Pub/sub delivery is at
most once; a message lost to a disconnect is bounded by the cache TTL, and a
broken or renewed subscription makes the cache drop everything it holds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from .._errors import StorageError

try:
    import redis

    from .. import _redis
except ImportError as exc:  # pragma: no cover (the extra is installed in tests)
    raise ImportError(
        "keyguard.stores.redis_broadcast needs redis: pip install 'keyguard-auth[redis]'"
    ) from exc

__all__ = ["DEFAULT_CHANNEL", "RedisRevocationBroadcast"]

logger = logging.getLogger("keyguard")

#: The channel every process of one deployment shares.
DEFAULT_CHANNEL = "keyguard:revocations"
_MAX_MESSAGES_PER_POLL = 10_000
_MAX_CONNECTIONS = 4


def _decode(data: Any) -> str | None:
    if isinstance(data, bytes):
        try:
            return data.decode("ascii")
        except UnicodeDecodeError:
            return None
    return data if isinstance(data, str) else None


class RedisRevocationBroadcast:
    """Announce changed keys on a Redis channel, and hear the announcements of others.

    Implements ``RevocationBroadcast`` and ``AsyncRevocationBroadcast``; the
    sync and async flavours use separate connections, each made on first use.
    A poll never waits for messages. When Redis is unreachable a poll reports
    "messages may be lost" (the cache then empties itself) and the next
    attempt to subscribe is made only after ``retry_interval`` seconds, so a
    dead Redis costs a request at most one ``connect_timeout`` per interval.

    Args:
        url: ``redis://host:port/db``; the database number does not matter
            to pub/sub. ``redis+cluster://host:port`` (or ``rediss+cluster://``)
            names a Redis Cluster by any one of its nodes: a message published
            on one node reaches the subscribers of every node. The same URL
            configures :meth:`keyguard.ratelimit.redis.RedisRateLimiter.from_url`.
        channel: Shared by every process of one deployment.
        connect_timeout: Seconds to connect before giving up.
        socket_timeout: Seconds to wait for a reply (publish, subscribe).
        retry_interval: Seconds between two attempts to re-subscribe.
        health_check_interval: Seconds between pings of an idle subscription,
            which finds a connection that died silently.
        clock: Monotonic seconds.
    """

    def __init__(
        self,
        url: str,
        *,
        channel: str = DEFAULT_CHANNEL,
        connect_timeout: float = 1.0,
        socket_timeout: float = 1.0,
        retry_interval: float = 5.0,
        health_check_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not channel:
            raise ValueError("channel must be a non-empty string")
        _redis.redis_target(url)  # a URL it cannot use fails here, not on first use
        self.url = url
        self.channel = channel
        # Errors reach us instead of a silent reconnect that would hide lost messages:
        # the clients made by keyguard._redis have redis-py's retries off.
        self._options: dict[str, Any] = {
            "connect_timeout": connect_timeout,
            "timeout": socket_timeout,
            "health_check_interval": health_check_interval,
            # One subscription and one publish at a time, per flavour.
            "max_connections": _MAX_CONNECTIONS,
            "pool_timeout": socket_timeout,
        }
        self._retry_interval = retry_interval
        self._clock = clock
        self._client: _redis.SyncClient | None = None
        self._pubsub: Any = None
        self._retry_at = float("-inf")
        self._aclient: _redis.AsyncClient | None = None
        self._apubsub: Any = None
        self._aretry_at = float("-inf")

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, **options: Any
    ) -> RedisRevocationBroadcast | None:
        """A broadcast on ``$KEYGUARD_REDIS_URL``, or ``None`` when it is not set."""
        env = os.environ if environ is None else environ
        url = env.get("KEYGUARD_REDIS_URL", "").strip()
        return cls(url, **options) if url else None

    def __repr__(self) -> str:
        return f"RedisRevocationBroadcast(channel={self.channel!r})"

    def _error(self, what: str, exc: Exception) -> StorageError:
        return StorageError(f"revocation broadcast: {what} failed ({type(exc).__name__}: {exc})")

    # -- sync -----------------------------------------------------------------------------

    def _sync_client(self) -> _redis.SyncClient:
        if self._client is None:
            self._client = _redis.sync_client(self.url, **self._options)
        return self._client

    def publish(self, key_id: str) -> None:
        """Announce ``key_id``. Raises :class:`~keyguard.StorageError` when Redis fails."""
        try:
            self._sync_client().publish(self.channel, key_id)
        except redis.RedisError as exc:
            raise self._error("publish", exc) from exc

    def _drop_subscription(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                pubsub.close()

    def poll(self) -> list[str] | None:
        """The key_ids announced since the last poll; ``None`` when some may be lost."""
        try:
            if self._pubsub is None:
                if self._clock() < self._retry_at:
                    return []
                self._pubsub = self._sync_client().pubsub()  # type: ignore[no-untyped-call]
                self._pubsub.subscribe(self.channel)
                # Wait for the confirmation: from here on nothing announced is missed.
                self._pubsub.get_message(timeout=self._options["timeout"])
                return None
            announced: list[str] = []
            while len(announced) < _MAX_MESSAGES_PER_POLL:
                message = self._pubsub.get_message(timeout=0)
                if message is None:
                    break
                if message.get("type") == "message":
                    key_id = _decode(message.get("data"))
                    if key_id:
                        announced.append(key_id)
        except (redis.RedisError, OSError) as exc:
            self._drop_subscription()
            self._retry_at = self._clock() + self._retry_interval
            logger.warning(
                "revocation broadcast unavailable (%s); caches fall back to their TTL",
                type(exc).__name__,
            )
            return None
        return announced

    def close(self) -> None:
        """Close the sync connections."""
        self._drop_subscription()
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- async ----------------------------------------------------------------------------

    def _async_client(self) -> _redis.AsyncClient:
        if self._aclient is None:
            self._aclient = _redis.async_client(self.url, check_connections=False, **self._options)
        return self._aclient

    async def apublish(self, key_id: str) -> None:
        """See :meth:`publish`."""
        try:
            await self._async_client().publish(self.channel, key_id)
        except redis.RedisError as exc:
            raise self._error("publish", exc) from exc

    async def _adrop_subscription(self) -> None:
        pubsub, self._apubsub = self._apubsub, None
        if pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                await pubsub.aclose()

    async def apoll(self) -> list[str] | None:
        """See :meth:`poll`."""
        try:
            if self._apubsub is None:
                if self._clock() < self._aretry_at:
                    return []
                client = self._async_client()
                # A cluster client learns the layout here; the subscription needs it.
                await client.initialize()
                self._apubsub = client.pubsub()
                await self._apubsub.subscribe(self.channel)
                await self._apubsub.get_message(timeout=self._options["timeout"])
                return None
            announced: list[str] = []
            while len(announced) < _MAX_MESSAGES_PER_POLL:
                message = await self._apubsub.get_message(timeout=0)
                if message is None:
                    break
                if message.get("type") == "message":
                    key_id = _decode(message.get("data"))
                    if key_id:
                        announced.append(key_id)
        except (redis.RedisError, OSError) as exc:
            await self._adrop_subscription()
            self._aretry_at = self._clock() + self._retry_interval
            logger.warning(
                "revocation broadcast unavailable (%s); caches fall back to their TTL",
                type(exc).__name__,
            )
            return None
        return announced

    async def aclose(self) -> None:
        """Close the async connections."""
        await self._adrop_subscription()
        if self._aclient is not None:
            await self._aclient.aclose()
            self._aclient = None
