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

When Redis fails, ``on_backend_error`` decides (see
:class:`~keyguard.ratelimit.BackendErrorMode`), and the limiter backs off:
it does not try Redis again for ``backoff`` seconds (doubling on each failure
up to ``max_backoff``), so requests in that time do not each wait for a
timeout. Then one request probes Redis while the others still get the
fallback answer.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, get_args

try:
    import redis
    import redis.asyncio
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import NoBackoff
    from redis.exceptions import NoScriptError
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "keyguard.ratelimit.redis needs redis-py: pip install 'keyguard[redis]'"
    ) from exc

from .._drive import Flow, Step, drive_async, drive_sync
from .._errors import StorageError
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
# With an injected clock, real time passes while the fake one stands still: keep state
# keys a minute longer than they are needed so that they cannot expire under a test.
_TEST_CLOCK_KEEP_MS = 60_000


class _RunScript(Step[Any]):
    """Run the GCRA script by its SHA-1 (``EVALSHA``), or by its text (``EVAL``) when the
    server does not have it yet. The I/O is a ``redis.Redis`` or a ``redis.asyncio.Redis``."""

    __slots__ = ("args", "by_sha", "keys")

    def __init__(self, by_sha: bool, keys: list[str], args: list[str | int]) -> None:
        self.by_sha = by_sha
        self.keys = keys
        self.args = args

    def __repr__(self) -> str:
        return f"_RunScript(by_sha={self.by_sha})"

    def run(self, io: redis.Redis) -> Any:
        if self.by_sha:
            return io.evalsha(_SCRIPT_SHA, len(self.keys), *self.keys, *self.args)
        return io.eval(GCRA_SCRIPT, len(self.keys), *self.keys, *self.args)

    async def arun(self, io: redis.asyncio.Redis) -> Any:
        if self.by_sha:
            return await io.evalsha(_SCRIPT_SHA, len(self.keys), *self.keys, *self.args)
        return await io.eval(GCRA_SCRIPT, len(self.keys), *self.keys, *self.args)


class RedisRateLimiter:
    """GCRA limits in Redis. Implements ``RateLimiter`` (with ``client``) and
    ``AsyncRateLimiter`` (with ``async_client``); :meth:`from_url` sets up both.

    Args:
        client: A ``redis.Redis`` for :meth:`hit`, or None.
        async_client: A ``redis.asyncio.Redis`` for :meth:`ahit`, or None. An
            asyncio client belongs to one event loop.
        on_backend_error: What to do while Redis fails: ``"open"`` (allow every
            request, counted in :attr:`degraded_hits` and logged), ``"closed"``
            (refuse every request: the middleware answers 503 with
            ``Retry-After``) or ``"local"`` (limit in this process's memory,
            with a logged warning that the limit now applies per process).
            No default: which failure is acceptable is the application's call.
        prefix: Prepended to every Redis key; the default gives
            ``kg:rl:{<key>}:<policy>``.
        backoff: Seconds not to try Redis after a failure; doubles with each
            failure in a row, up to ``max_backoff``.
        max_backoff: The longest backoff, in seconds.
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
        ValueError: ``on_backend_error`` is not one of the modes, a backoff is
            not positive, or no client is given.
    """

    def __init__(
        self,
        client: redis.Redis | None = None,
        *,
        async_client: redis.asyncio.Redis | None = None,
        on_backend_error: BackendErrorMode,
        prefix: str = "kg:rl:",
        backoff: float = 1.0,
        max_backoff: float = 30.0,
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
        self._client = client
        self._async_client = async_client
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
        self._backend_failures = 0
        self._degraded_hits = 0

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        on_backend_error: BackendErrorMode,
        connect_timeout: float = 0.25,
        timeout: float = 0.25,
        **kwargs: Any,
    ) -> RedisRateLimiter:
        """A limiter with a sync and an asyncio client for ``url`` (``redis://...``).

        The timeouts are short on purpose: a rate limiter that waits seconds
        for Redis stalls every request. redis-py's own retries are turned
        off (a retried script could count a request twice); the limiter's
        backoff takes their place. Connections open on first use.

        Args:
            url: ``redis://[[user]:password@]host[:port][/db]`` (or ``rediss://``).
            on_backend_error: See the class.
            connect_timeout: Seconds to wait for a connection.
            timeout: Seconds to wait for an answer.
            **kwargs: The other arguments of the class.
        """
        options: dict[str, Any] = {
            "socket_connect_timeout": connect_timeout,
            "socket_timeout": timeout,
        }
        client = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **options)
        async_client = redis.asyncio.Redis.from_url(
            url, retry=AsyncRetry(NoBackoff(), 0), **options
        )
        return cls(
            client,
            async_client=async_client,
            on_backend_error=on_backend_error,
            owns_clients=True,
            **kwargs,
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

    def redis_key(self, key: str, policy: Policy) -> str:
        """The Redis key that holds ``key``'s state under ``policy``."""
        return f"{self._prefix}{key}}}:{policy.name}"

    # -- the decision, written once ---------------------------------------------------

    def _hit_flow(self, key: str, policies: Sequence[Policy], cost: int) -> Flow[RateLimitDecision]:
        check_request(key, policies, cost)
        if not policies:
            return RateLimitDecision(True, ())
        params = [gcra.params(p) for p in policies]
        for p in params:
            if cost * p.window_ms > p.capacity:
                raise gcra.cost_error(cost, p)
        now = self._monotonic()
        if self._failing:
            with self._state_lock:
                backing_off = now < self._retry_at
                if not backing_off:
                    # This request probes Redis; the others keep the fallback meanwhile.
                    self._retry_at = now + self._next_backoff
            if backing_off:
                return self._degraded(key, policies, cost, now)
        argv: list[str | int] = [
            "" if self._clock is None else int(self._clock() * 1000 + 0.5),
            cost,
            self._keep,
        ]
        for p in params:
            argv += (p.quota, p.window_ms, p.capacity)
        keys = [f"{self._prefix}{key}}}:{p.name}" for p in policies]
        try:
            try:
                raw = yield from _RunScript(True, keys, argv)
            except StorageError as exc:
                if not isinstance(exc.__cause__, NoScriptError):
                    raise
                raw = yield from _RunScript(False, keys, argv)
            decision = _parse(raw, policies)
        except Exception as exc:  # any failure of the backend is on_backend_error's to answer
            now = self._monotonic()  # after the failure: a timeout may have taken a while
            self._record_failure(exc.__cause__ or exc, now)
            return self._degraded(key, policies, cost, now)
        if self._failing:
            self._record_recovery()
        return decision

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

    def _record_failure(self, exc: BaseException, now: float) -> None:
        with self._state_lock:
            self._backend_failures += 1
            wait = self._next_backoff
            self._failing = True
            self._retry_at = now + wait
            self._next_backoff = min(wait * 2, self._max_backoff)
        logger.warning(
            "rate-limit backend failed (%s: %s); on_backend_error=%r: %s; next attempt in %.1f s",
            type(exc).__name__,
            exc,
            self.on_backend_error,
            _CONSEQUENCE[self.on_backend_error],
            wait,
        )

    def _record_recovery(self) -> None:
        with self._state_lock:
            was_failing, self._failing = self._failing, False
            self._retry_at = 0.0
            self._next_backoff = self._backoff
        if was_failing:
            logger.warning("rate-limit backend is reachable again; limits are shared again")

    # -- thin sync and async shells ---------------------------------------------------

    def hit(self, key: str, policies: Sequence[Policy], cost: int = 1) -> RateLimitDecision:
        """See :meth:`keyguard.ratelimit.RateLimiter.hit`. Never raises for a Redis failure.

        Raises:
            TypeError: The limiter has no sync client.
        """
        client = self._client
        if client is None:
            raise TypeError("this RedisRateLimiter has no redis.Redis client; use ahit()")
        return drive_sync(self._hit_flow(key, policies, cost), client)

    async def ahit(self, key: str, policies: Sequence[Policy], cost: int = 1) -> RateLimitDecision:
        """See :meth:`keyguard.ratelimit.AsyncRateLimiter.ahit`. Never raises for a Redis failure.

        Raises:
            TypeError: The limiter has no asyncio client.
        """
        client = self._async_client
        if client is None:
            raise TypeError("this RedisRateLimiter has no redis.asyncio.Redis client; use hit()")
        return await drive_async(self._hit_flow(key, policies, cost), client)

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
