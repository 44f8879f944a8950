"""Rate limiting through both middlewares: default, per-key and per-route policies,
the brute-force defence, headers, and what a failing limiter backend means."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from keyguard import (
    AsyncKeyManager,
    KeyguardMiddleware,
    KeyguardWSGIMiddleware,
    KeyManager,
    MemoryRateLimiter,
    MiddlewareOptions,
    Policy,
    RateLimitBackendError,
    RateLimitDecision,
)
from keyguard.stores import MemoryKeyStore
from keyguard.testing import FakeClock
from tests._http_drivers import Reply, Request
from tests._middleware_apps import Harness, Seen, _asgi_app, _wsgi_app, with_key


@pytest.fixture(params=["asgi", "wsgi"])
def h(request: pytest.FixtureRequest, clock: FakeClock) -> Harness:
    return Harness(request.param, clock)


@pytest.fixture
def limiter(clock: FakeClock) -> MemoryRateLimiter:
    return MemoryRateLimiter(clock=clock.monotonic)


def check_429(reply: Reply, retry_after: str) -> None:
    assert reply.status == 429
    assert reply.header("retry-after") == retry_after
    assert reply.header("cache-control") == "no-store"
    assert reply.header("content-type") == "application/problem+json"
    assert reply.header("www-authenticate") is None
    problem = reply.json()
    assert (problem["status"], problem["error"]) == (429, "rate_limited")


@pytest.mark.anyio
async def test_default_policy_headers_on_every_response_and_429(
    h: Harness, limiter: MemoryRateLimiter
) -> None:
    call = h.build(MiddlewareOptions(rate_limit="3/minute"), limiter=limiter)
    token = h.key()
    for remaining in (2, 1, 0):
        reply = await call(with_key(token))
        assert reply.status == 200
        assert reply.header("x-app") == "1"  # the app's own headers stay
        assert reply.header("ratelimit-policy") == '"default";q=3;w=60'
        assert reply.header("ratelimit") is not None
        assert reply.header("ratelimit").startswith(f'"default";r={remaining};t=')
    refused = await call(with_key(token))
    check_429(refused, "20")
    assert refused.header("ratelimit-policy") == '"default";q=3;w=60'
    assert refused.header("ratelimit") == '"default";r=0;t=60'
    h.clock.advance(20)
    assert (await call(with_key(token))).status == 200
    other = h.key()  # every key has its own budget
    assert (await call(with_key(other))).status == 200


@pytest.mark.anyio
async def test_a_keys_own_policy_replaces_the_default(
    h: Harness, limiter: MemoryRateLimiter
) -> None:
    call = h.build(MiddlewareOptions(rate_limit="1/minute"), limiter=limiter)
    gold = h.key(rate_limit=Policy("gold", quota=5, window=60))
    for _ in range(5):
        reply = await call(with_key(gold))
        assert reply.status == 200
        assert reply.header("ratelimit-policy") == '"gold";q=5;w=60'
    assert (await call(with_key(gold))).status == 429


@pytest.mark.anyio
async def test_route_policies_add_to_the_default(h: Harness, limiter: MemoryRateLimiter) -> None:
    options = MiddlewareOptions(
        rate_limit="100/minute", route_limits={"POST /invoices": "1/minute"}
    )
    call = h.build(options, limiter=limiter)
    token = h.key()
    post = with_key(token, method="POST")
    first = await call(post)
    assert first.status == 200
    assert first.header("ratelimit-policy") == '"default";q=100;w=60, "POST-invoices";q=1;w=60'
    assert (await call(post)).status == 429
    get = await call(with_key(token))
    assert get.status == 200  # the refused POST consumed nothing from the default budget
    assert get.header("ratelimit") is not None
    assert get.header("ratelimit").startswith('"default";r=98;')
    sub = await call(with_key(token, method="POST", path="/invoices/7/pay"))
    assert sub.status == 429  # a route covers the paths below it


@pytest.mark.anyio
async def test_without_a_limiter_options_limit_nothing(h: Harness) -> None:
    call = h.build(MiddlewareOptions(rate_limit="1/minute"))
    token = h.key()
    for _ in range(3):
        reply = await call(with_key(token))
        assert reply.status == 200
        assert reply.header("ratelimit") is None


@pytest.mark.anyio
async def test_failed_authentications_block_the_address(
    h: Harness, limiter: MemoryRateLimiter
) -> None:
    call = h.build(MiddlewareOptions(failure_limit="3/minute"), limiter=limiter)
    good = h.key()
    attacker = "198.51.100.66"
    for _ in range(3):
        reply = await call(with_key("sk_live_guess", client=attacker))
        assert reply.status == 401
        assert reply.header("ratelimit") is None
    blocked = await call(with_key("sk_live_guess", client=attacker))
    check_429(blocked, "20")
    assert "too many failed authentications" in blocked.json()["detail"]
    # While blocked, even a good key from that address is refused without being checked.
    h.seen.principal = "not called"
    assert (await call(with_key(good, client=attacker))).status == 429
    assert h.seen.principal == "not called"
    assert (await call(with_key(good, client="203.0.113.5"))).status == 200
    # Requests without a key are not failures, and stay 401.
    assert (await call(Request(client=attacker))).status == 401
    h.clock.advance(20)
    assert (await call(with_key(good, client=attacker))).status == 200


@pytest.mark.anyio
@pytest.mark.parametrize("state", ["revoked", "expired", "wrong_environment"])
async def test_refusals_of_a_proven_holder_spend_no_failure_budget(
    h: Harness, limiter: MemoryRateLimiter, state: str
) -> None:
    # The client proved it holds the key: a rotation without grace, say, must not lock
    # its address out of the new key.
    from datetime import timedelta

    options = MiddlewareOptions(failure_limit="3/minute", environment="live")
    call = h.build(options, limiter=limiter)
    if state == "revoked":
        old = h.manager.create("acme")
        h.manager.revoke(old.key_id)
        token = old.token
    elif state == "expired":
        token = h.key(expires_in=timedelta(seconds=1))
        h.clock.advance(2)
    else:
        token = h.key(environment="test")
    for _ in range(6):
        assert (await call(with_key(token))).status == 401
    assert (await call(with_key(h.key()))).status == 200


@pytest.mark.anyio
async def test_unknown_key_and_wrong_secret_stay_identical_under_limits(
    h: Harness, limiter: MemoryRateLimiter
) -> None:
    call = h.build(MiddlewareOptions(rate_limit="10/minute"), limiter=limiter)
    token = h.key()
    wrong_secret = token[:30] + ("A" if token[30] != "A" else "B") + token[31:]
    unknown = "sk_live_AAAAAAAAAAAA_" + token[21:]
    replies = []
    for bad in (unknown, wrong_secret):
        limiter.reset()  # the same failure budget for both
        reply = await call(with_key(bad))
        replies.append((reply.status, reply.headers, reply.body))
    assert replies[0][0] == 401
    assert replies[0] == replies[1]


@pytest.mark.anyio
async def test_failure_limit_can_be_turned_off(h: Harness, limiter: MemoryRateLimiter) -> None:
    call = h.build(MiddlewareOptions(failure_limit=None), limiter=limiter)
    for _ in range(40):
        assert (await call(with_key("sk_live_guess"))).status == 401


@pytest.mark.anyio
async def test_anonymous_requests_are_limited_per_address(
    h: Harness, limiter: MemoryRateLimiter
) -> None:
    options = MiddlewareOptions(optional=True, rate_limit="2/minute", public_paths=["/health"])
    call = h.build(options, limiter=limiter)
    assert (await call(Request(client="192.0.2.10"))).status == 200
    assert (await call(Request(client="192.0.2.10"))).status == 200
    assert (await call(Request(client="192.0.2.10"))).status == 429
    assert (await call(Request(client="192.0.2.11"))).status == 200
    for _ in range(5):  # public paths are never limited
        health = await call(Request(path="/health", client="192.0.2.10"))
        assert health.status == 200
        assert health.header("ratelimit") is None


@pytest.mark.anyio
async def test_legacy_headers_on_request(h: Harness, limiter: MemoryRateLimiter) -> None:
    options = MiddlewareOptions(rate_limit="5/minute", legacy_rate_limit_headers=True)
    reply = await h.build(options, limiter=limiter)(with_key(h.key()))
    assert (reply.header("x-ratelimit-limit"), reply.header("x-ratelimit-remaining")) == (
        "5",
        "4",
    )


@pytest.mark.anyio
async def test_redis_down_with_on_backend_error_closed_is_503(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    from keyguard.ratelimit.redis import RedisRateLimiter

    caplog.set_level(logging.CRITICAL, logger="keyguard.ratelimit")
    # Nothing listens on port 1: every call fails at once with "connection refused".
    limiter = RedisRateLimiter.from_url("redis://127.0.0.1:1/0", on_backend_error="closed")
    try:
        reply = await h.build(MiddlewareOptions(rate_limit="5/minute"), limiter=limiter)(
            with_key(h.key())
        )
    finally:
        await limiter.aclose()
    assert reply.status == 503
    assert reply.header("retry-after") == "1"
    assert reply.header("cache-control") == "no-store"
    assert reply.json()["error"] == "temporarily_unavailable"
    assert h.seen.principal == "not called"


class RaisingLimiter:
    """A third-party limiter that reports its backend failure by raising."""

    def hit(self, key: str, policies: Sequence[Policy], cost: int = 1) -> RateLimitDecision:
        raise RateLimitBackendError("backend down")

    async def ahit(self, key: str, policies: Sequence[Policy], cost: int = 1) -> RateLimitDecision:
        raise RateLimitBackendError("backend down")

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


@pytest.mark.anyio
async def test_a_raising_limiter_fails_closed(h: Harness) -> None:
    call = h.build(MiddlewareOptions(rate_limit="5/minute"), limiter=RaisingLimiter())
    token = h.key()
    assert (await call(with_key(token))).status == 503
    # A failure count that cannot be kept leaves the refusal as it was.
    assert (await call(with_key("sk_live_guess"))).status == 401


@pytest.fixture
async def redis_limiters(redis_url: str, clock: FakeClock) -> AsyncIterator[Any]:
    from keyguard.ratelimit.redis import RedisRateLimiter

    prefix = f"kgtest-{uuid.uuid4().hex}:mw:"
    limiter = RedisRateLimiter.from_url(
        redis_url, on_backend_error="closed", prefix=prefix, clock=clock.monotonic
    )
    yield limiter
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
    await limiter.aclose()


@pytest.mark.redis
@pytest.mark.anyio
async def test_asgi_and_wsgi_apps_share_one_limit_on_redis(
    redis_limiters: Any, clock: FakeClock
) -> None:
    store = MemoryKeyStore()
    token = KeyManager(store, clock=clock).create("acme").token
    options = MiddlewareOptions(rate_limit="4/minute")
    seen = Seen()
    asgi = KeyguardMiddleware(
        _asgi_app(seen), AsyncKeyManager(store, clock=clock), options, redis_limiters
    )
    wsgi = KeyguardWSGIMiddleware(
        _wsgi_app(seen), KeyManager(store, clock=clock), options, redis_limiters
    )
    from tests._http_drivers import asgi_call, wsgi_call

    statuses = []
    for i in range(6):
        if i % 2:
            statuses.append((await asgi_call(asgi, with_key(token))).status)
        else:
            statuses.append(wsgi_call(wsgi, with_key(token)).status)
    assert statuses == [200, 200, 200, 200, 429, 429]


def test_route_limit_options_are_checked() -> None:
    with pytest.raises(ValueError, match="METHOD"):
        MiddlewareOptions(route_limits={"invoices": "1/minute"})
    with pytest.raises(ValueError, match="default"):
        MiddlewareOptions(
            rate_limit="5/minute", route_limits={"/x": Policy("default", quota=1, window=1)}
        )
    with pytest.raises(ValueError, match="rate_limit"):
        MiddlewareOptions(rate_limit="lots")
    with pytest.raises(TypeError, match="failure_limit"):
        MiddlewareOptions(failure_limit=5)  # type: ignore[arg-type]
    options = MiddlewareOptions(
        route_limits={"/reports": "5/minute", "GET /reports/daily": ["1/minute", "10/day"]}
    )
    assert [p.name for p in options.route_policies("GET", "/reports/daily")] == [
        "GET-reports-daily",
        "GET-reports-daily-2",
    ]
    assert [p.name for p in options.route_policies("POST", "/reports/daily")] == ["reports"]
    assert options.route_policies("GET", "/reportsx") == ()


def test_middlewares_check_the_kind_of_limiter() -> None:
    class SyncOnly:
        def hit(self, key: str, policies: Sequence[Policy], cost: int = 1) -> Any: ...
        def close(self) -> None: ...

    store = MemoryKeyStore()
    with pytest.raises(TypeError, match="AsyncRateLimiter"):
        KeyguardMiddleware(_asgi_app(Seen()), AsyncKeyManager(store), None, SyncOnly())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="RateLimiter"):
        KeyguardWSGIMiddleware(_wsgi_app(Seen()), KeyManager(store), None, object())  # type: ignore[arg-type]


@pytest.mark.redis
@pytest.mark.anyio
async def test_redis_keys_name_key_ids_and_addresses_never_tokens(
    h: Harness, redis_limiters: Any, redis_url: str
) -> None:
    import redis

    token = h.key()
    wrong_secret = token[:30] + ("A" if token[30] != "A" else "B") + token[31:]
    key_id, secret = token.split("_")[2], token.split("_")[3][:32]
    call = h.build(MiddlewareOptions(rate_limit="5/minute", optional=True), limiter=redis_limiters)
    assert (await call(with_key(token))).status == 200
    assert (await call(with_key(wrong_secret))).status == 401
    assert (await call(Request(client="198.51.100.7"))).status == 200  # anonymous, per address
    default, failures = Policy.parse("5/minute"), Policy.parse("30/minute", name="auth-failures")
    expected = {
        redis_limiters.redis_key(key_id, default),
        redis_limiters.redis_key("auth-failures:203.0.113.9", failures),
        redis_limiters.redis_key("anonymous:198.51.100.7", default),
    }
    prefix = redis_limiters.redis_key("", default).split("{")[0]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        stored = set(client.scan_iter(match=prefix + "*", count=1000))
    finally:
        client.close()
    assert stored == expected
    for name in stored:
        assert secret not in name
        assert wrong_secret.split("_")[3][:32] not in name
