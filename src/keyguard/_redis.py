"""Redis clients from one URL, for the rate limiter and the revocation broadcast (extra ``redis``).

One setting (``KEYGUARD_REDIS_URL`` in the examples and the CLI) names either
one Redis server or a Redis Cluster:

- ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS) and
  ``unix:///path/to/socket?db=N``: one server, a ``redis.Redis``.
- ``redis+cluster://[[user]:password@]host[:port]`` and ``rediss+cluster://...``:
  a Redis Cluster, a ``redis.cluster.RedisCluster``. The node named is where
  the client starts: it asks it for the cluster's layout (``CLUSTER SLOTS``)
  and talks to every node from then on. A cluster has one database, so a
  database number other than 0 is refused.

Every client made here differs from redis-py's defaults in three ways, each
because the caller's answer must come within a bound:

- No retries inside redis-py: the caller decides what a failure means (a
  rate-limit script retried after its answer was lost could count a request
  twice).
- Maintenance notifications off: redis-py's ``"auto"`` setting would stretch
  timeouts to 10 s during a server's maintenance, and (redis-py 8) it turns
  off the pool's check that a pooled connection was not closed by the server.
- asyncio connections check, just before a command is written, that the
  server has not closed them or sent something unasked (the kernel's socket,
  not only what the event loop has read so far); such a connection is
  replaced by a fresh one before anything is sent on it. The sync pools make
  the same check on the socket when they hand a connection out.
"""

from __future__ import annotations

import asyncio
import select
from collections.abc import Iterable
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.maint_notifications import MaintNotificationsConfig
from redis.retry import Retry

__all__ = ["LoopDeadline", "RedisTarget", "async_client", "redis_target", "sync_client"]

SyncClient = redis.Redis | redis.cluster.RedisCluster
AsyncClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_SCHEMES = ("redis", "rediss", "unix", *_CLUSTER_SCHEMES)


class RedisTarget(NamedTuple):
    """What a keyguard Redis URL names: redis-py's URL for it, and whether it is a cluster."""

    url: str
    cluster: bool

    def __str__(self) -> str:
        """The URL without its password, for logs and reprs."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        user = parts.username or ""
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def redis_target(url: str) -> RedisTarget:
    """Read a keyguard Redis URL (see the module docstring).

    Raises:
        ValueError: The scheme is not one of the above, or a cluster URL names
            a database other than 0.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise ValueError(
            "a Redis URL starts with redis://, rediss://, unix://, redis+cluster:// or "
            f"rediss+cluster://, got one starting with {scheme[:20]!r}"
        )
    plain = _CLUSTER_SCHEMES.get(scheme.lower())
    if plain is None:
        return RedisTarget(url, cluster=False)
    target = RedisTarget(f"{plain}://{rest}", cluster=True)
    db = urlsplit(target.url).path.strip("/")
    if db not in ("", "0"):
        raise ValueError(
            f"a Redis Cluster has only database 0; remove /{db} from the {scheme}:// URL"
        )
    return target


def _maintenance_off() -> dict[str, Any]:
    # Every client takes the setting from redis-py 8.1 on, the extra's floor.
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}


def sync_client(
    url: str,
    *,
    connect_timeout: float,
    timeout: float,
    max_connections: int,
    pool_timeout: float,
    health_check_interval: float = 0,
) -> SyncClient:
    """A sync client for ``url``, at most ``max_connections`` connections per server.

    A command that finds every connection in use waits up to ``pool_timeout``
    seconds for one (a ``redis.BlockingConnectionPool``); for a cluster the
    bound applies to each node.
    """
    target = redis_target(url)
    options: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": timeout,
        "health_check_interval": health_check_interval,
        **_maintenance_off(),
    }
    if target.cluster:
        return redis.cluster.RedisCluster.from_url(
            target.url,
            retry=Retry(NoBackoff(), 0),
            max_connections=max_connections,
            connection_pool_class=redis.BlockingConnectionPool,
            timeout=pool_timeout,
            **options,
        )
    pool = redis.BlockingConnectionPool.from_url(
        target.url,
        max_connections=max_connections,
        timeout=pool_timeout,
        retry=Retry(NoBackoff(), 0),
        **options,
    )
    return redis.Redis.from_pool(pool)


def async_client(
    url: str,
    *,
    connect_timeout: float | None,
    timeout: float | None,
    max_connections: int,
    pool_timeout: float,
    health_check_interval: float = 0,
    check_connections: bool = True,
) -> AsyncClient:
    """An asyncio client for ``url``, at most ``max_connections`` connections per server.

    It belongs to the event loop that first uses it. A standalone client
    waits up to ``pool_timeout`` seconds for a free connection; redis-py's
    cluster client has no such wait (it raises ``MaxConnectionsError``), so a
    caller that needs one bounds its own concurrency. ``check_connections``
    must be False for a client used for pub/sub, whose connections have
    messages waiting by design.
    """
    target = redis_target(url)
    options: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": timeout,
        "health_check_interval": health_check_interval,
        **_maintenance_off(),
    }
    if target.cluster:
        client = redis.asyncio.cluster.RedisCluster.from_url(
            target.url,
            retry=AsyncRetry(NoBackoff(), 0),
            max_connections=max_connections,
            **options,
        )
        if check_connections:
            _check_cluster_connections(client)
        return client
    if check_connections:
        base = redis.asyncio.connection.parse_url(target.url).get("connection_class")
        options["connection_class"] = _CHECKED[base or redis.asyncio.Connection]
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        target.url,
        max_connections=max_connections,
        timeout=pool_timeout,
        retry=AsyncRetry(NoBackoff(), 0),
        **options,
    )
    return redis.asyncio.Redis.from_pool(pool)


# -- deadlines in event-loop time ----------------------------------------------------------

#: A deadline is checked this many times over its length; each check counts at most
#: one share of it, however late the loop ran the check.
_DEADLINE_CHECKS = 20
#: Whatever the loop's load, a deadline expires after this many times its length.
_DEADLINE_HARD_FACTOR = 8


class LoopDeadline:
    """``asyncio.timeout(seconds)``, with the time the event loop spends elsewhere not counted.

    On an event loop busy with hundreds of requests, a connection that is
    ready waits for the loop's next pass, which may come later than a whole
    ``asyncio.timeout``: the timeout then fires although the server answered
    in time, and load looks like an outage. This deadline is checked
    :data:`_DEADLINE_CHECKS` times over its length, and a check that the
    loop ran late counts only its share: on an idle loop it expires after
    ``seconds``, on a busy one after at least that many passes of the loop,
    and never later than :data:`_DEADLINE_HARD_FACTOR` times ``seconds``.
    When it expires, the expiry waits for one more pass, so an answer the
    loop has already read is taken rather than thrown away.

    Raises:
        TimeoutError: On leaving the block when the deadline expired inside it.
    """

    __slots__ = ("_handle", "_last", "_left", "_loop", "_seconds", "_stop_at", "_timeout")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    async def __aenter__(self) -> LoopDeadline:
        loop = self._loop = asyncio.get_running_loop()
        self._timeout = asyncio.timeout(None)
        await self._timeout.__aenter__()
        now = self._last = loop.time()
        self._left = self._seconds
        self._stop_at = now + self._seconds * _DEADLINE_HARD_FACTOR
        self._handle: asyncio.TimerHandle | None = loop.call_at(
            now + self._seconds / _DEADLINE_CHECKS, self._check
        )
        return self

    def _check(self) -> None:
        now = self._loop.time()
        share = self._seconds / _DEADLINE_CHECKS
        self._left -= min(now - self._last, share)
        self._last = now
        if self._left <= share * 1e-6 or now >= self._stop_at:
            self._handle = None
            self._timeout.reschedule(now)  # runs after what this pass has already woken
        else:
            self._handle = self._loop.call_at(now + min(share, self._left), self._check)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        await self._timeout.__aexit__(exc_type, exc, tb)


# -- asyncio connections that are checked before each command ---------------------------


def _pending_on_socket(connection: redis.asyncio.connection.AbstractConnection) -> bool:
    """True when the kernel holds bytes or an end-of-file the event loop has not read yet.

    A connection at rest in a pool has nothing to read; anything there means
    the server closed it (an outage, a restart, ``CLIENT KILL``, its idle
    ``timeout``) or said something unasked. The event loop sees an
    end-of-file only on its next pass, which a busy loop makes late.
    """
    writer = getattr(connection, "_writer", None)
    if writer is None or not hasattr(select, "poll"):
        return False
    sock = writer.transport.get_extra_info("socket")
    if sock is None:
        return False
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


async def _replace_if_stale(connection: _Checked) -> None:
    if not connection.is_connected or connection.settling:
        return  # connecting: the handshake's replies are expected
    try:
        stale = await connection.can_read() or _pending_on_socket(connection)
    except (redis.ConnectionError, OSError):
        stale = True
    if stale:
        # Nothing of the coming command has been sent: replacing the connection now
        # cannot make the server run it twice. redis-py connects again on send.
        await connection.disconnect()


class _Checked(redis.asyncio.connection.AbstractConnection):
    """Checks that the server has not closed the connection before each command is written.

    Only for request/response use: a pub/sub connection has messages waiting by design.
    """

    settling = False  # true while connecting, when the handshake's replies are due

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        self.settling = True
        try:
            await super().connect_check_health(check_health, retry_socket_connect)
        finally:
            self.settling = False

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        await _replace_if_stale(self)
        await super().send_packed_command(command, check_health)


class _CheckedConnection(_Checked, redis.asyncio.Connection):
    pass


class _CheckedSSLConnection(_Checked, redis.asyncio.SSLConnection):
    pass


class _CheckedUnixConnection(_Checked, redis.asyncio.UnixDomainSocketConnection):
    pass


_CHECKED: dict[Any, type[redis.asyncio.connection.AbstractConnection]] = {
    redis.asyncio.Connection: _CheckedConnection,
    redis.asyncio.SSLConnection: _CheckedSSLConnection,
    redis.asyncio.UnixDomainSocketConnection: _CheckedUnixConnection,
}


def _check_cluster_connections(client: redis.asyncio.cluster.RedisCluster) -> None:
    """Make the cluster client's nodes open checked connections.

    redis-py's asyncio cluster client takes no connection class; the class
    sits in the keyword arguments it gives every node it finds (shared with
    its node manager) and on the node it starts from.
    """
    kwargs = client.connection_kwargs
    checked = _CHECKED[kwargs.get("connection_class", redis.asyncio.Connection)]
    kwargs["connection_class"] = checked
    for node in client.nodes_manager.startup_nodes.values():
        node.connection_class = checked  # type: ignore[assignment]
