"""The Redis limiter under load and through faults, on private Redis servers.

Load is not an outage: busy connections are waited for, a busy event loop does not
expire a call, a pooled connection the server closed is replaced before the script is
sent on it, and after an outage one backoff ends in shared limits again.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from keyguard.ratelimit import Policy
from keyguard.testing import FakeClock

from .conftest import RedisServer, free_port

redis = pytest.importorskip("redis")

from keyguard._redis import LoopDeadline, RedisTarget, redis_target  # noqa: E402
from keyguard.ratelimit.redis import RedisRateLimiter  # noqa: E402

pytestmark = pytest.mark.redis

QUOTA = Policy("default", quota=100, window=3600)


def evalsha_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def kill_normal_clients(urls: list[str]) -> int:
    """``CLIENT KILL TYPE normal`` on each server (not the connection asking); how many died."""
    killed = 0
    for url in urls:
        admin = redis.Redis.from_url(url)
        try:
            killed += int(admin.client_kill_filter(_type="normal", skipme=True))
        finally:
            admin.close()
    return killed


def cluster_node_urls(cluster_url: str) -> list[str]:
    client = redis.cluster.RedisCluster.from_url(cluster_url.replace("+cluster", ""))
    try:
        return [f"redis://{n.host}:{n.port}/0" for n in client.get_nodes()]
    finally:
        client.close()


# -- a pooled connection the server closed -----------------------------------------------


@pytest.fixture(params=["standalone", "cluster"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, list[str]]]:
    """(limiter URL, the URLs of its servers): a private Redis, or the session's cluster."""
    if request.param == "cluster":
        url = str(request.getfixturevalue("redis_cluster_url"))
        yield url, cluster_node_urls(url)
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url, [server.url]
    finally:
        server.stop()


def test_a_killed_connection_is_replaced_before_the_script_is_sent_sync(
    target: tuple[str, list[str]],
) -> None:
    url, servers = target
    limiter = RedisRateLimiter.from_url(
        url, on_backend_error="closed", prefix=f"kg:{time.time_ns()}:"
    )
    try:
        assert limiter.hit("k", [QUOTA]).states[0].remaining == 99
        for expected in (98, 97):
            assert kill_normal_clients(servers) >= 1, "the limiter's connection was not killed"
            decision = limiter.hit("k", [QUOTA])
            assert decision.degraded is None
            assert decision.states[0].remaining == expected, "counted once, on a fresh connection"
        assert limiter.backend_failures == 0
    finally:
        limiter.close()


@pytest.mark.anyio
async def test_a_killed_connection_is_replaced_before_the_script_is_sent_async(
    target: tuple[str, list[str]],
) -> None:
    url, servers = target
    limiter = RedisRateLimiter.from_url(
        url, on_backend_error="closed", prefix=f"kg:{time.time_ns()}:"
    )
    try:
        assert (await limiter.ahit("k", [QUOTA])).states[0].remaining == 99
        for expected in (98, 97):
            # Killed while this event loop does not run: it has not seen the end of file yet.
            assert kill_normal_clients(servers) >= 1, "the limiter's connection was not killed"
            decision = await limiter.ahit("k", [QUOTA])
            assert decision.degraded is None
            assert decision.states[0].remaining == expected, "counted once, on a fresh connection"
        assert limiter.backend_failures == 0
    finally:
        await limiter.aclose()


@pytest.mark.anyio
async def test_a_lost_answer_is_not_sent_again(redis_server: RedisServer) -> None:
    """The script reached a server that then hung: it runs when the server wakes, once."""
    admin = redis.Redis.from_url(redis_server.url)
    limiter = RedisRateLimiter.from_url(
        redis_server.url, on_backend_error="closed", connect_timeout=0.1, timeout=0.1
    )
    try:
        assert (await limiter.ahit("k", [QUOTA])).degraded is None
        before = evalsha_calls(admin)
        redis_server.pause()
        try:
            lost = await limiter.ahit("k", [QUOTA])
        finally:
            redis_server.resume()
        assert lost.degraded == "closed"
        assert limiter.backend_failures == 1
        # The server woke and ran the script it had received: once, never sent again.
        assert evalsha_calls(admin) - before == 1
        again = RedisRateLimiter.from_url(redis_server.url, on_backend_error="closed")
        assert again.hit("k", [QUOTA], cost=0).states[0].remaining == 98
        again.close()
    finally:
        await limiter.aclose()
        admin.close()


# -- busy connections are waited for --------------------------------------------------------


@pytest.mark.anyio
async def test_many_concurrent_hits_wait_for_a_small_pool(redis_server: RedisServer) -> None:
    admin = redis.Redis.from_url(redis_server.url)
    limiter = RedisRateLimiter.from_url(
        redis_server.url, on_backend_error="local", max_connections=2
    )
    try:
        decisions = await asyncio.gather(*(limiter.ahit("k", [QUOTA]) for _ in range(300)))
        assert sum(d.allowed for d in decisions) == QUOTA.quota
        assert [d.degraded for d in decisions] == [None] * 300
        assert (limiter.pool_timeouts, limiter.backend_failures) == (0, 0)
        # The limiter never held more than its two connections (and this one asks).
        assert len(admin.client_list()) <= 3
    finally:
        await limiter.aclose()
        admin.close()


def test_many_threads_wait_for_a_small_pool(redis_server: RedisServer) -> None:
    limiter = RedisRateLimiter.from_url(
        redis_server.url, on_backend_error="local", max_connections=2
    )
    admitted: list[bool] = []
    degraded: list[object] = []
    start = threading.Barrier(16)

    def worker() -> None:
        start.wait()
        for _ in range(20):
            decision = limiter.hit("k", [QUOTA])
            admitted.append(decision.allowed)
            degraded.append(decision.degraded)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert sum(admitted) == QUOTA.quota
        assert set(degraded) == {None}
        assert (limiter.pool_timeouts, limiter.backend_failures) == (0, 0)
    finally:
        limiter.close()


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


@pytest.mark.anyio
async def test_no_connection_in_time_is_answered_by_the_mode_but_is_not_an_outage(
    black_hole: int,
) -> None:
    limiter = RedisRateLimiter.from_url(
        f"redis://127.0.0.1:{black_hole}/0",
        on_backend_error="closed",
        max_connections=1,
        pool_timeout=0.05,
        connect_timeout=0.2,
        timeout=0.2,
    )
    try:
        holder = asyncio.ensure_future(limiter.ahit("a", [QUOTA]))
        await asyncio.sleep(0)  # the holder takes the one connection
        started = time.monotonic()
        waiter = await limiter.ahit("b", [QUOTA])
        assert time.monotonic() - started < 0.3
        assert waiter.degraded == "closed"
        assert (limiter.pool_timeouts, limiter.backend_failures) == (1, 0)
        assert (await holder).degraded == "closed"
        assert limiter.backend_failures == 1  # the hung call is the outage
    finally:
        await limiter.aclose()


# -- backoff and recovery ----------------------------------------------------------------


@pytest.fixture
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_backoff_doubles_to_its_cap_and_one_backoff_ends_the_outage(
    private_redis: RedisServer,
) -> None:
    clock = FakeClock()
    limiter = RedisRateLimiter.from_url(
        private_redis.url, on_backend_error="local", monotonic=clock.monotonic
    )
    try:
        assert limiter.hit("k", [QUOTA]).degraded is None
        private_redis.stop()
        assert limiter.hit("k", [QUOTA]).degraded == "local"
        assert limiter.backend_failures == 1
        for wait in (0.25, 0.5, 1.0, 2.0, 2.0):  # doubling from 0.25 s, at most 2 s
            failures = limiter.backend_failures
            clock.advance(wait - 0.01)
            assert limiter.hit("k", [QUOTA]).degraded == "local"
            assert limiter.backend_failures == failures, "backing off: Redis not tried"
            clock.advance(0.01)
            assert limiter.hit("k", [QUOTA]).degraded == "local"
            assert limiter.backend_failures == failures + 1, "the backoff is over: Redis tried"
        private_redis.start()  # the same port, an empty Redis
        clock.advance(2.0)
        # The requests after the backoff all go to Redis, none to the fallback.
        back = [limiter.hit("fresh", [QUOTA]) for _ in range(5)]
        assert [d.degraded for d in back] == [None] * 5
        assert [d.states[0].remaining for d in back] == [99, 98, 97, 96, 95]
    finally:
        limiter.close()


@pytest.mark.anyio
async def test_concurrent_failures_of_one_outage_back_off_once() -> None:
    clock = FakeClock()
    limiter = RedisRateLimiter.from_url(
        f"redis://127.0.0.1:{free_port()}/0", on_backend_error="closed", monotonic=clock.monotonic
    )
    try:
        down = await asyncio.gather(*(limiter.ahit("k", [QUOTA]) for _ in range(20)))
        assert {d.degraded for d in down} == {"closed"}
        assert limiter.backend_failures == 20
        clock.advance(0.25)  # one failure's backoff, not twenty doublings of it
        assert (await limiter.ahit("k", [QUOTA])).degraded == "closed"
        assert limiter.backend_failures == 21
    finally:
        await limiter.aclose()


@pytest.mark.anyio
async def test_after_a_restart_the_pooled_connections_do_not_fail_again(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Connections pooled before an outage are dead after it; none may cost a fallback."""
    clock = FakeClock()
    limiter = RedisRateLimiter.from_url(
        private_redis.url, on_backend_error="local", max_connections=8, monotonic=clock.monotonic
    )
    try:
        warm = await asyncio.gather(*(limiter.ahit("k", [QUOTA]) for _ in range(8)))
        assert {d.degraded for d in warm} == {None}
        private_redis.stop()
        assert (await limiter.ahit("k", [QUOTA])).degraded == "local"
        private_redis.start()
        clock.advance(0.25)
        back = await asyncio.gather(*(limiter.ahit("fresh", [QUOTA]) for _ in range(50)))
        assert [d.degraded for d in back] == [None] * 50
        assert sorted(d.states[0].remaining for d in back) == list(range(50, 100))
        assert limiter.backend_failures == 1
        assert [r.getMessage() for r in caplog.records][-1].startswith(
            "rate-limit backend is reachable again"
        )
    finally:
        await limiter.aclose()


# -- deadlines in event-loop time ------------------------------------------------------------


@pytest.mark.anyio
async def test_a_deadline_expires_on_an_idle_loop() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with LoopDeadline(0.05):
            await asyncio.Event().wait()
    assert 0.045 <= time.monotonic() - started < 0.5


def _busy_loop(stop: asyncio.Event, pass_seconds: float) -> None:
    """Keep the event loop busy: every pass spends ``pass_seconds`` in a callback, as a
    worker does with hundreds of requests in hand."""
    loop = asyncio.get_running_loop()

    def hog() -> None:
        if stop.is_set():
            return
        end = time.perf_counter() + pass_seconds
        while time.perf_counter() < end:
            pass
        loop.call_soon(hog)

    loop.call_soon(hog)


@pytest.mark.anyio
async def test_a_busy_loop_does_not_use_up_a_deadline() -> None:
    """Five passes of 30 ms take 150 ms, three times a 50 ms asyncio.timeout; an answer
    that comes on the fifth pass is taken."""
    stop = asyncio.Event()
    _busy_loop(stop, 0.03)
    loop = asyncio.get_running_loop()
    answer = loop.create_future()
    passes = 0

    def count() -> None:
        nonlocal passes
        passes += 1
        if passes == 5:
            answer.set_result("ok")
        else:
            loop.call_soon(count)

    started = time.monotonic()
    loop.call_soon(count)
    try:
        async with LoopDeadline(0.05):
            assert await answer == "ok"
    finally:
        stop.set()
    assert time.monotonic() - started > 0.1, "the loop was busy for longer than the deadline"


@pytest.mark.anyio
async def test_a_busy_loop_still_ends_a_deadline_after_enough_passes() -> None:
    stop = asyncio.Event()
    _busy_loop(stop, 0.02)
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            async with LoopDeadline(0.05):
                await asyncio.Event().wait()
    finally:
        stop.set()
    assert time.monotonic() - started < 0.05 * 8 + 0.1, "never later than eight times it"


# -- the URL --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("redis://h:6379/2", RedisTarget("redis://h:6379/2", False), id="redis"),
        pytest.param("rediss://h:6380/0", RedisTarget("rediss://h:6380/0", False), id="tls"),
        pytest.param(
            "unix:///run/redis.sock?db=1",
            RedisTarget("unix:///run/redis.sock?db=1", False),
            id="unix",
        ),
        pytest.param("redis+cluster://h:7000", RedisTarget("redis://h:7000", True), id="cluster"),
        pytest.param(
            "REDIS+CLUSTER://h:7000/0", RedisTarget("redis://h:7000/0", True), id="cluster-db0"
        ),
        pytest.param(
            "rediss+cluster://u:p@h:7000",
            RedisTarget("rediss://u:p@h:7000", True),
            id="cluster-tls",
        ),
    ],
)
def test_redis_urls(url: str, expected: RedisTarget) -> None:
    assert redis_target(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("http://h:6379", "starts with redis://", id="http"),
        pytest.param("h:6379", "starts with redis://", id="no-scheme"),
        pytest.param("redis+sentinel://h:26379", "starts with redis://", id="sentinel"),
        pytest.param("redis+cluster://h:7000/3", "only database 0", id="cluster-db"),
    ],
)
def test_unusable_redis_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisRateLimiter.from_url(url, on_backend_error="closed")


def test_a_url_shown_in_logs_hides_its_password() -> None:
    assert str(redis_target("redis+cluster://app:s3cret@h:7000")) == "redis://app:***@h:7000"
    assert "s3cret" not in repr(
        RedisRateLimiter.from_url("redis://app:s3cret@h:1/0", on_backend_error="open")
    )
