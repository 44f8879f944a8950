"""A rate limiter on Redis: one exact limit shared by every process and machine (extra ``redis``).

Each request is one Lua script run (``EVALSHA``, with ``EVAL`` when the
server does not have the script yet), covering every policy of the request:
one round trip, atomic, however many processes hit the same key. Time comes
from Redis ``TIME`` in whole milliseconds, so the clocks of the app servers do
not matter. The state of key ``k`` under policy ``p`` is one string at
``kg:rl:{k}:p``: the braces are a Redis Cluster hash tag, so all policies of a
key live in one slot and one script can touch them all. Each state expires by
itself (``PX``) once it is back to a full burst, so idle keys cost nothing.

The rate-limit key is stored in plain text in the Redis key name: pass a
key_id or a client address, never a token.

Load is not an outage. At most ``max_connections`` calls per process and
flavour are in flight; a request that finds them all busy waits up to
``pool_timeout`` for one. Only a failed call (connect, send or answer) is a
backend failure: ``on_backend_error`` answers it, and the limiter backs off,
not trying Redis again for ``backoff`` seconds (doubling after each backoff
that ends in a failure, up to ``max_backoff``), so requests in that time do
not each wait for a timeout. Then requests try Redis again: the first
success ends the outage, the first failure starts the next backoff, and calls
that set out before it do not lengthen it again. A request that ran out of
``pool_timeout`` is answered by ``on_backend_error`` too, but it is not a
backend failure: nothing backs off.

A script is sent at most once per request. A pooled connection the server
has closed is replaced before the script is written on it (see
:mod:`keyguard._redis`); once written, a script whose answer does not come
(a timeout, a connection lost) may have run, and sending it again could
count the request twice, so it is not sent again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, get_args

try:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster
    from redis.exceptions import MaxConnectionsError, NoScriptError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "keyguard.ratelimit.redis needs redis-py: pip install 'keyguard-auth[redis]'"
    ) from exc

from .. import _redis
from .._drive import Flow, Step, drive_async, drive_sync
from .._redis import LoopDeadline
from . import gcra
from ._base import BackendErrorMode, PolicyState, RateLimitDecision, check_request
from ._policy import Policy
from .memory import MemoryRateLimiter

__all__ = ["GCRA_SCRIPT", "RedisRateLimiter"]

logger = logging.getLogger("keyguard.ratelimit")

#: The script run once per request. It transcribes :func:`keyguard.ratelimit.gcra.check`
#: (``check_one`` per policy, all or nothing); the tests hold both to the same answers.
#: KEYS: one state key per policy. ARGV: now in ms ("" to read Redis TIME), cost,
#: extra ms to keep state keys (0 in production), then quota, window_ms, capacity
#: per policy. Returns {allowed (1/0), retry_ms, remaining_1, reset_ms_1, ...}.
GCRA_SCRIPT = """
local function ceil_div(a, b)
  local q = math.floor(a / b)
  if q * b < a then q = q + 1 end
  return q
end
local function floor_div(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 end
  return q
end
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[1])
end
local cost = tonumber(ARGV[2])
local keep = tonumber(ARGV[3])
local n = #KEYS
local stored = redis.call('MGET', unpack(KEYS))
local quota, window, capacity, ahead, after = {}, {}, {}, {}, {}
local allowed = 1
local retry = 0
for i = 1, n do
  quota[i] = tonumber(ARGV[3 * i + 1])
  window[i] = tonumber(ARGV[3 * i + 2])
  capacity[i] = tonumber(ARGV[3 * i + 3])
  local d = 0
  if stored[i] then
    local tat_ms, tat_frac = string.match(stored[i], '^(%d+):(%d+)$')
    tat_ms = tonumber(tat_ms)
    tat_frac = tonumber(tat_frac)
    if tat_ms and tat_frac and tat_ms >= now then
      d = (tat_ms - now) * quota[i] + math.min(tat_frac, quota[i] - 1)
    end
  end
  ahead[i] = d
  after[i] = d + cost * window[i]
  if after[i] > capacity[i] then
    allowed = 0
    retry = math.max(retry, ceil_div(after[i] - capacity[i], quota[i]))
  end
end
local out = {allowed, retry}
for i = 1, n do
  local used = ahead[i]
  if allowed == 1 then used = after[i] end
  out[2 * i + 1] = math.max(0, floor_div(capacity[i] - used, window[i]))
  out[2 * i + 2] = ceil_div(used, quota[i])
  if allowed == 1 and cost > 0 then
    local whole = floor_div(used, quota[i])
    redis.call('SET', KEYS[i],
      string.format('%.0f:%.0f', now + whole, used - whole * quota[i]),
      'PX', ceil_div(used, quota[i]) + keep)
  end
end
return out
"""

_SCRIPT_SHA = hashlib.sha1(GCRA_SCRIPT.encode()).hexdigest()  # noqa: S324 (Redis names scripts by SHA-1)
_MODES: tuple[str, ...] = get_args(BackendErrorMode)
_CONSEQUENCE = {
    "open": "requests are allowed without any limit",
    "closed": "requests are refused (503)",
    "local": "limits now apply per process, not across processes",
}
#: Defaults of the bounds; docs/rate-limiting.md explains each.
DEFAULT_CONNECT_TIMEOUT = 0.25
DEFAULT_TIMEOUT = 0.25
DEFAULT_POOL_TIMEOUT = 0.5
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_BACKOFF = 0.25
DEFAULT_MAX_BACKOFF = 2.0
_POOL_WARNING_INTERVAL = 10
# With an injected clock, real time passes while the fake one stands still: keep state
# keys a minute longer than they are needed so that they cannot expire under a test.
_TEST_CLOCK_KEEP_MS = 60_000


SyncClient = redis.Redis | redis.cluster.RedisCluster
AsyncClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster


class _NoConnectionInTime(Exception):
    """Every connection stayed busy for ``pool_timeout``: load, not an outage."""


class _OutageFoundMeanwhile(Exception):
    """While this request waited for a connection, another found Redis failing."""


class _SyncCalls:
    """The I/O context of the sync flavour: the client, and the bound on calls in flight."""

    __slots__ = ("backing_off", "client", "gate", "pool_timeout")

    def __init__(
        self, client: SyncClient, size: int, pool_timeout: float, backing_off: Callable[[], bool]
    ) -> None:
        self.client = client
        self.gate = threading.BoundedSemaphore(size)
        self.pool_timeout = pool_timeout
        self.backing_off = backing_off


class _AsyncCalls:
    """The I/O context of the asyncio flavour; its bound belongs to the running event loop."""

    __slots__ = ("_gate", "_loop", "_size", "backing_off", "call_timeout", "client", "pool_timeout")

    def __init__(
        self,
        client: AsyncClient,
        size: int,
        pool_timeout: float,
        call_timeout: float | None,
        backing_off: Callable[[], bool],
    ) -> None:
        self.client = client
        self.pool_timeout = pool_timeout
        self.call_timeout = call_timeout
        self.backing_off = backing_off
        self._size = size
        self._gate = asyncio.Semaphore(size)
        self._loop: asyncio.AbstractEventLoop | None = None

    def gate(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._gate, self._loop = asyncio.Semaphore(self._size), loop
        return self._gate


class _RunScript(Step[Any]):
    """Run the GCRA script by its SHA-1 (``EVALSHA``), or by its text (``EVAL``) when the
    server does not have it yet, on one of the calls the I/O context allows in flight."""

    __slots__ = ("args", "keys")

    def __init__(self, keys: list[str], args: list[str | int]) -> None:
        self.keys = keys
        self.args = args

    def __repr__(self) -> str:
        return "_RunScript()"

    def run(self, io: _SyncCalls) -> Any:
        gate = io.gate
        if not gate.acquire(blocking=False):
            if not gate.acquire(timeout=io.pool_timeout):
                raise _NoConnectionInTime
            if io.backing_off():
                gate.release()
                raise _OutageFoundMeanwhile
        try:
            n = len(self.keys)
            try:
                return io.client.evalsha(_SCRIPT_SHA, n, *self.keys, *self.args)
            except NoScriptError:  # the server never ran it: sending the text is safe
                return io.client.eval(GCRA_SCRIPT, n, *self.keys, *self.args)
        finally:
            gate.release()

    async def arun(self, io: _AsyncCalls) -> Any:
        gate = io.gate()
        if gate.locked():
            try:
                async with LoopDeadline(io.pool_timeout):
                    await gate.acquire()
            except TimeoutError:
                raise _NoConnectionInTime from None
            if io.backing_off():
                gate.release()
                raise _OutageFoundMeanwhile
        else:
            await gate.acquire()  # free: returns at once
        try:
            if io.call_timeout is None:
                return await self._acall(io.client)
            async with LoopDeadline(io.call_timeout):
                return await self._acall(io.client)
        finally:
            gate.release()

    async def _acall(self, client: AsyncClient) -> Any:
        n = len(self.keys)
        try:
            return await client.evalsha(_SCRIPT_SHA, n, *self.keys, *self.args)
        except NoScriptError:
            return await client.eval(GCRA_SCRIPT, n, *self.keys, *self.args)


class RedisRateLimiter:
    """GCRA limits in Redis or a Redis Cluster. Implements ``RateLimiter`` (with ``client``)
    and ``AsyncRateLimiter`` (with ``async_client``); :meth:`from_url` sets up both.

    Args:
        client: A ``redis.Redis`` or ``redis.cluster.RedisCluster`` for
            :meth:`hit`, or None.
        async_client: A ``redis.asyncio.Redis`` or
            ``redis.asyncio.cluster.RedisCluster`` for :meth:`ahit`, or None.
            An asyncio client belongs to one event loop.
        on_backend_error: What to do while Redis fails: ``"open"`` (allow every
            request, counted in :attr:`degraded_hits` and logged), ``"closed"``
            (refuse every request: the middleware answers 503 with
            ``Retry-After``) or ``"local"`` (limit in this process's memory,
            with a logged warning that the limit now applies per process).
            No default: which failure is acceptable is the application's call.
        prefix: Prepended to every Redis key; the default gives
            ``kg:rl:{<key>}:<policy>``.
        max_connections: Calls to Redis in flight at once, per flavour (sync,
            asyncio). Size the clients' pools to at least this (``from_url``
            does); a client whose pool is smaller makes requests wait in
            redis-py instead, or fail there.
        pool_timeout: Seconds a request waits for one of those calls when all
            are in flight; then ``on_backend_error`` answers it, without
            counting a backend failure.
        call_timeout: asyncio only: seconds one call may take, connecting
            included, counted in event-loop time (a loop busy with other
            requests does not use it up; see :class:`keyguard._redis.LoopDeadline`).
            None leaves the bound to the client's own socket timeouts, which
            count wall-clock time and so can expire under load while Redis
            answers in time. :meth:`from_url` sets ``connect_timeout + timeout``.
        backoff: Seconds not to try Redis after a failure; doubles with each
            failure after a backoff, up to ``max_backoff``.
        max_backoff: The longest backoff, in seconds: after Redis is back,
            limits are shared again within about this long.
        fallback: The in-process limiter for ``"local"`` (default: a new
            :class:`MemoryRateLimiter`).
        monotonic: Seconds, for the backoff (inject a fake in tests).
        clock: **For tests only.** Seconds whose whole ms replace Redis
            ``TIME``, so that a fake clock can drive a real Redis. In
            production leave it None: app servers' clocks differ, Redis has
            one.
        owns_clients: Close the clients in :meth:`close` / :meth:`aclose`
            (true for :meth:`from_url`; clients passed in stay the caller's).

    Raises:
        ValueError: ``on_backend_error`` is not one of the modes, a backoff or
            a bound is not positive, or no client is given.
    """

    def __init__(
        self,
        client: SyncClient | None = None,
        *,
        async_client: AsyncClient | None = None,
        on_backend_error: BackendErrorMode,
        prefix: str = "kg:rl:",
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
        call_timeout: float | None = None,
        backoff: float = DEFAULT_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        fallback: MemoryRateLimiter | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] | None = None,
        owns_clients: bool = False,
    ) -> None:
        if on_backend_error not in _MODES:
            raise ValueError(
                f"on_backend_error must be one of {', '.join(map(repr, _MODES))}, "
                f"got {on_backend_error!r}"
            )
        if client is None and async_client is None:
            raise ValueError("give a redis.Redis client, a redis.asyncio.Redis one, or both")
        if not (backoff > 0 and max_backoff >= backoff):
            raise ValueError(
                f"backoff must be positive and at most max_backoff, got {backoff!r} "
                f"and {max_backoff!r}"
            )
        if isinstance(max_connections, bool) or not (
            isinstance(max_connections, int) and max_connections > 0
        ):
            raise ValueError(
                f"max_connections must be a whole number >= 1, got {max_connections!r}"
            )
        for name, value in (("pool_timeout", pool_timeout), ("call_timeout", call_timeout)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        self._client = client
        self._async_client = async_client
        self._sync_calls = (
            None
            if client is None
            else _SyncCalls(client, max_connections, pool_timeout, self._backing_off)
        )
        self._async_calls = (
            None
            if async_client is None
            else _AsyncCalls(
                async_client, max_connections, pool_timeout, call_timeout, self._backing_off
            )
        )
        self.on_backend_error: BackendErrorMode = on_backend_error
        self._prefix = prefix + "{"
        self._backoff = float(backoff)
        self._max_backoff = float(max_backoff)
        self._monotonic = monotonic
        self._clock = clock
        self._keep = "0" if clock is None else str(_TEST_CLOCK_KEEP_MS)
        self._fallback = MemoryRateLimiter(clock=monotonic) if fallback is None else fallback
        self._owns_clients = owns_clients
        self._state_lock = threading.Lock()
        self._failing = False
        self._retry_at = 0.0
        self._next_backoff = self._backoff
        # Bumped whenever the outage state changes. A call remembers the generation it
        # set out in, so that a call begun before a change cannot undo or repeat it.
        self._generation = 0
        self._backend_failures = 0
        self._degraded_hits = 0
        self._pool_timeouts = 0
        self._next_pool_warning = float("-inf")

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        on_backend_error: BackendErrorMode,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        timeout: float = DEFAULT_TIMEOUT,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        prefix: str = "kg:rl:",
        backoff: float = DEFAULT_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        fallback: MemoryRateLimiter | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] | None = None,
    ) -> RedisRateLimiter:
        """A limiter with a sync and an asyncio client for ``url``.

        The timeouts are short on purpose: a rate limiter that waits seconds
        for Redis stalls every request. redis-py's own retries are off (see
        the module docstring); the limiter's backoff takes their place.
        Connections open on first use, at most ``max_connections`` per
        flavour (and, on a cluster, per node).

        Args:
            url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://``,
                ``unix://``, or ``redis+cluster://host:port`` /
                ``rediss+cluster://`` for a Redis Cluster (any one node; the
                client finds the others). See docs/rate-limiting.md.
            on_backend_error: See the class.
            connect_timeout: Seconds to wait for a new connection.
            timeout: Seconds to wait for an answer.
            pool_timeout: Seconds to wait for a free connection; see the class.
            max_connections: See the class.
            prefix: See the class.
            backoff: See the class.
            max_backoff: See the class.
            fallback: See the class.
            monotonic: See the class.
            clock: See the class.

        Raises:
            ValueError: The URL's scheme is not one of the above, or a bound is
                not positive.
        """
        for name, value in (("connect_timeout", connect_timeout), ("timeout", timeout)):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        bounds: dict[str, Any] = {
            "connect_timeout": connect_timeout,
            "timeout": timeout,
            "max_connections": max_connections,
            "pool_timeout": pool_timeout,
        }
        return cls(
            _redis.sync_client(url, **bounds),
            # The asyncio client's calls are bounded by call_timeout, in loop time: socket
            # timeouts in wall-clock time would mistake a busy event loop for an outage.
            async_client=_redis.async_client(
                url, **{**bounds, "connect_timeout": None, "timeout": None}
            ),
            on_backend_error=on_backend_error,
            prefix=prefix,
            max_connections=max_connections,
            pool_timeout=pool_timeout,
            call_timeout=connect_timeout + timeout,
            backoff=backoff,
            max_backoff=max_backoff,
            fallback=fallback,
            monotonic=monotonic,
            clock=clock,
            owns_clients=True,
        )

    def __repr__(self) -> str:
        state = "failing" if self._failing else "ok"
        return (
            f"RedisRateLimiter(prefix={self._prefix[:-1]!r}, "
            f"on_backend_error={self.on_backend_error!r}, backend={state})"
        )

    @property
    def backend_failures(self) -> int:
        """How many calls to Redis failed since this limiter was made."""
        return self._backend_failures

    @property
    def degraded_hits(self) -> int:
        """How many requests ``on_backend_error`` decided instead of Redis."""
        return self._degraded_hits

    @property
    def pool_timeouts(self) -> int:
        """How many requests found every connection busy for ``pool_timeout``.

        They are among :attr:`degraded_hits`, not among :attr:`backend_failures`.
        """
        return self._pool_timeouts

    def redis_key(self, key: str, policy: Policy) -> str:
        """The Redis key that holds ``key``'s state under ``policy``."""
        return f"{self._prefix}{key}}}:{policy.name}"

    # -- the decision, written once ---------------------------------------------------

    def _hit_flow(self, key: str, policies: Sequence[Policy], cost: int) -> Flow[RateLimitDecision]:
        check_request(key, policies, cost)
        if not policies:
            return RateLimitDecision(True, ())
        params = [gcra.params(p) for p in policies]
        gcra.check_costs(cost, params)
        generation = self._generation
        if self._failing:
            now = self._monotonic()
            if now < self._retry_at:
                return self._degraded(key, policies, cost, now)
            # The backoff is over: this request and those beside it try Redis again (at most
            # max_connections at once). The first failure starts the next backoff, and the
            # others then stop waiting; the first success ends the outage.
        argv: list[str | int] = [
            "" if self._clock is None else int(self._clock() * 1000 + 0.5),
            cost,
            self._keep,
        ]
        for p in params:
            argv += (p.quota, p.window_ms, p.capacity)
        keys = [f"{self._prefix}{key}}}:{p.name}" for p in policies]
        try:
            raw = yield from _RunScript(keys, argv)
            decision = _parse(raw, policies)
        except Exception as exc:  # any failure of the backend is on_backend_error's to answer
            cause = exc.__cause__ or exc
            now = self._monotonic()  # after the failure: a timeout may have taken a while
            if isinstance(cause, _NoConnectionInTime | MaxConnectionsError):
                self._record_pool_timeout(now)
            elif not isinstance(cause, _OutageFoundMeanwhile):
                self._record_failure(cause, generation, now)
            return self._degraded(key, policies, cost, now)
        if self._failing:
            self._record_recovery(generation)
        return decision

    def _backing_off(self) -> bool:
        return self._failing and self._monotonic() < self._retry_at

    def _degraded(
        self, key: str, policies: Sequence[Policy], cost: int, now: float
    ) -> RateLimitDecision:
        with self._state_lock:
            self._degraded_hits += 1
        mode = self.on_backend_error
        if mode == "open":
            return RateLimitDecision(True, (), 0.0, "open")
        if mode == "closed":
            return RateLimitDecision(False, (), max(1.0, self._retry_at - now), "closed")
        local = self._fallback.hit(key, policies, cost)
        return RateLimitDecision(local.allowed, local.states, local.retry_after, "local")

    def _record_failure(self, exc: BaseException, generation: int, now: float) -> None:
        with self._state_lock:
            self._backend_failures += 1
            if generation != self._generation:
                # Set out before the outage was recorded (or before the last probe):
                # the same outage, already answered; it must not double the backoff again.
                return
            wait = self._next_backoff
            self._failing = True
            self._retry_at = now + wait
            self._next_backoff = min(wait * 2, self._max_backoff)
            self._generation += 1
        logger.warning(
            "rate-limit backend failed (%s: %s); on_backend_error=%r: %s; next attempt in %.2f s",
            type(exc).__name__,
            exc,
            self.on_backend_error,
            _CONSEQUENCE[self.on_backend_error],
            wait,
        )

    def _record_recovery(self, generation: int) -> None:
        with self._state_lock:
            if not self._failing or generation != self._generation:
                return  # an answer to a call made before the outage says nothing about now
            self._failing = False
            self._retry_at = 0.0
            self._next_backoff = self._backoff
            self._generation += 1
        logger.warning("rate-limit backend is reachable again; limits are shared again")

    def _record_pool_timeout(self, now: float) -> None:
        with self._state_lock:
            self._pool_timeouts += 1
            if now < self._next_pool_warning:
                return
            self._next_pool_warning = now + _POOL_WARNING_INTERVAL
        logger.warning(
            "rate-limit backend: every connection stayed busy for the pool timeout; "
            "on_backend_error=%r answered the request (%s). Redis is not counted as failing; "
            "raise max_connections or pool_timeout if this repeats (logged at most every %d s)",
            self.on_backend_error,
            _CONSEQUENCE[self.on_backend_error],
            _POOL_WARNING_INTERVAL,
        )

    # -- thin sync and async shells ---------------------------------------------------

    def hit(self, key: str, policies: Sequence[Policy], cost: int = 1) -> RateLimitDecision:
        """See :meth:`keyguard.ratelimit.RateLimiter.hit`. Never raises for a Redis failure.

        Raises:
            TypeError: The limiter has no sync client.
        """
        calls = self._sync_calls
        if calls is None:
            raise TypeError("this RedisRateLimiter has no redis.Redis client; use ahit()")
        return drive_sync(self._hit_flow(key, policies, cost), calls)

    async def ahit(self, key: str, policies: Sequence[Policy], cost: int = 1) -> RateLimitDecision:
        """See :meth:`keyguard.ratelimit.AsyncRateLimiter.ahit`. Never raises for a Redis failure.

        Raises:
            TypeError: The limiter has no asyncio client.
        """
        calls = self._async_calls
        if calls is None:
            raise TypeError("this RedisRateLimiter has no redis.asyncio.Redis client; use hit()")
        return await drive_async(self._hit_flow(key, policies, cost), calls)

    def close(self) -> None:
        """Close the sync client if this limiter made it (see ``owns_clients``)."""
        if self._owns_clients and self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        """Close both clients if this limiter made them (see ``owns_clients``)."""
        if self._owns_clients:
            if self._async_client is not None:
                await self._async_client.aclose()
            self.close()


def _parse(raw: Sequence[int], policies: Sequence[Policy]) -> RateLimitDecision:
    """The script's answer as a decision."""
    if len(raw) != 2 + 2 * len(policies):
        raise ValueError(f"unexpected answer from the rate-limit script: {raw!r}")
    return RateLimitDecision(
        raw[0] == 1,
        tuple(
            PolicyState(policy, int(raw[2 + 2 * i]), int(raw[3 + 2 * i]) / 1000)
            for i, policy in enumerate(policies)
        ),
        int(raw[1]) / 1000,
    )
