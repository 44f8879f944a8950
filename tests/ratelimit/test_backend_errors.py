"""Redis unreachable or stopped: each on_backend_error mode answers as documented, fast."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import pytest

from keyguard.ratelimit import (
    MemoryRateLimiter,
    Policy,
    RateLimitDecision,
    denial_status,
    rate_limit_headers,
)
from keyguard.testing import FakeClock

from .conftest import RedisServer, free_port

pytest.importorskip("redis")

from keyguard.ratelimit.redis import RedisRateLimiter

POLICY = Policy("default", quota=2, window=60)
MODES = ["open", "closed", "local"]


def expect_mode(mode: str, decisions: list[RateLimitDecision]) -> None:
    """What each mode answers for three requests under a 2-request policy."""
    assert all(d.degraded == mode for d in decisions), decisions
    if mode == "open":
        assert all(d.allowed and d.states == () for d in decisions)
        assert all(rate_limit_headers(d) == [] for d in decisions)
    elif mode == "closed":
        assert not any(d.allowed for d in decisions)
        assert all(denial_status(d) == 503 for d in decisions)
        assert rate_limit_headers(decisions[0]) == [("Retry-After", "2")]
    else:
        assert [d.allowed for d in decisions] == [True, True, False]
        assert [d.states[0].remaining for d in decisions] == [1, 0, 0]
        assert denial_status(decisions[2]) == 429
        assert dict(rate_limit_headers(decisions[2]))["Retry-After"] == "30"


def expect_logged(mode: str, caplog: pytest.LogCaptureFixture) -> None:
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "one failure, one warning: the backoff keeps the log quiet"
    message = warnings[0].getMessage()
    assert f"on_backend_error={mode!r}" in message
    consequence = {"open": "without any limit", "closed": "refused", "local": "per process"}
    assert consequence[mode] in message


@pytest.mark.parametrize("mode", MODES)
def test_closed_port_sync(mode: str, caplog: pytest.LogCaptureFixture) -> None:
    backoff_clock = FakeClock()
    limiter = RedisRateLimiter.from_url(
        f"redis://127.0.0.1:{free_port()}/0",
        on_backend_error=mode,  # type: ignore[arg-type]
        backoff=2.0,
        monotonic=backoff_clock.monotonic,
    )
    with caplog.at_level(logging.WARNING, logger="keyguard"):
        decisions = [limiter.hit("k", [POLICY]) for _ in range(3)]
    expect_mode(mode, decisions)
    expect_logged(mode, caplog)
    assert limiter.backend_failures == 1, "within the backoff Redis is not tried again"
    assert limiter.degraded_hits == 3
    limiter.close()


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_closed_port_async(mode: str, caplog: pytest.LogCaptureFixture) -> None:
    backoff_clock = FakeClock()
    limiter = RedisRateLimiter.from_url(
        f"redis://127.0.0.1:{free_port()}/0",
        on_backend_error=mode,  # type: ignore[arg-type]
        backoff=2.0,
        monotonic=backoff_clock.monotonic,
    )
    with caplog.at_level(logging.WARNING, logger="keyguard"):
        decisions = [await limiter.ahit("k", [POLICY]) for _ in range(3)]
    expect_mode(mode, decisions)
    expect_logged(mode, caplog)
    assert limiter.backend_failures == 1
    await limiter.aclose()


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


TIMEOUT = 0.3  # the client's connect and command timeouts in these tests
FAST = 0.05  # a generous bound for a request that skips Redis while backing off


def hole_limiter(port: int, mode: str, clock: FakeClock) -> RedisRateLimiter:
    return RedisRateLimiter.from_url(
        f"redis://127.0.0.1:{port}/0",
        on_backend_error=mode,  # type: ignore[arg-type]
        connect_timeout=TIMEOUT,
        timeout=TIMEOUT,
        backoff=1.0,
        monotonic=clock.monotonic,
    )


@pytest.mark.parametrize("mode", MODES)
def test_backoff_skips_the_timeout_sync(mode: str, black_hole: int) -> None:
    clock = FakeClock()
    limiter = hole_limiter(black_hole, mode, clock)
    started = time.monotonic()
    first = limiter.hit("k", [POLICY])
    assert time.monotonic() - started >= TIMEOUT * 0.8, "the first request pays the timeout"
    started = time.monotonic()
    second = limiter.hit("k", [POLICY])
    assert time.monotonic() - started < FAST, "while backing off, Redis is not waited for"
    assert first.degraded == second.degraded == mode
    clock.advance(1.0)  # the backoff is over: one request probes Redis again
    started = time.monotonic()
    limiter.hit("k", [POLICY])
    assert time.monotonic() - started >= TIMEOUT * 0.8
    assert limiter.backend_failures == 2
    clock.advance(1.5)  # the backoff doubled to 2 s
    started = time.monotonic()
    limiter.hit("k", [POLICY])
    assert time.monotonic() - started < FAST
    assert limiter.backend_failures == 2
    assert limiter.degraded_hits == 4
    limiter.close()


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_backoff_skips_the_timeout_async(mode: str, black_hole: int) -> None:
    clock = FakeClock()
    limiter = hole_limiter(black_hole, mode, clock)
    started = time.monotonic()
    first = await limiter.ahit("k", [POLICY])
    assert time.monotonic() - started >= TIMEOUT * 0.8
    started = time.monotonic()
    second = await limiter.ahit("k", [POLICY])
    assert time.monotonic() - started < FAST
    assert first.degraded == second.degraded == mode
    assert limiter.backend_failures == 1
    await limiter.aclose()


@pytest.mark.parametrize("mode", MODES)
def test_redis_stopped_and_back_sync(
    mode: str, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    limiter = RedisRateLimiter.from_url(
        redis_server.url,
        on_backend_error=mode,  # type: ignore[arg-type]
        backoff=1.0,
        monotonic=clock.monotonic,
    )
    policy = Policy("default", quota=5, window=60)
    assert limiter.hit("k", [policy]).degraded is None
    redis_server.stop()
    with caplog.at_level(logging.INFO, logger="keyguard"):
        down = limiter.hit("k", [policy])
        assert down.degraded == mode
        assert down.allowed is (mode != "closed")
        redis_server.start()
        assert limiter.hit("k", [policy]).degraded == mode, "still backing off"
        clock.advance(1.0)
        back = limiter.hit("k", [policy])
    assert back.degraded is None
    # The restarted server is empty: the request before the outage is forgotten.
    assert back.states[0].remaining == 4
    assert "reachable again" in caplog.records[-1].getMessage()
    assert limiter.backend_failures == 1
    limiter.close()


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_redis_stopped_and_back_async(mode: str, redis_server: RedisServer) -> None:
    clock = FakeClock()
    limiter = RedisRateLimiter.from_url(
        redis_server.url,
        on_backend_error=mode,  # type: ignore[arg-type]
        backoff=1.0,
        monotonic=clock.monotonic,
    )
    policy = Policy("default", quota=5, window=60)
    assert (await limiter.ahit("k", [policy])).degraded is None
    redis_server.stop()
    down = await limiter.ahit("k", [policy])
    assert down.degraded == mode
    redis_server.start()
    clock.advance(1.0)
    assert (await limiter.ahit("k", [policy])).degraded is None
    await limiter.aclose()


def test_local_mode_uses_the_given_fallback() -> None:
    clock = FakeClock()
    fallback = MemoryRateLimiter(clock=clock.monotonic)
    limiter = RedisRateLimiter.from_url(
        f"redis://127.0.0.1:{free_port()}/0", on_backend_error="local", fallback=fallback
    )
    assert limiter.hit("k", [POLICY]).degraded == "local"
    assert len(fallback) == 1
    limiter.close()
