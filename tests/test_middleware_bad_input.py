"""One table of bad requests, run against the ASGI and the WSGI middleware alike.

Each row must get its documented status and headers (docs/middleware.md):
never a 500, never a 200, ``Cache-Control: no-store``, a problem+json body,
the right ``WWW-Authenticate`` challenge, and no trace of the token in the
body or the logs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest

from keyguard import (
    AsyncKeyManager,
    KeyguardMiddleware,
    KeyguardWSGIMiddleware,
    KeyManager,
    MemoryRateLimiter,
    MiddlewareOptions,
    checksum,
    generate_key,
)
from keyguard.stores import MemoryKeyStore
from keyguard.testing import FakeClock
from tests._http_drivers import Reply, Request, asgi_call, wsgi_call

# The full stack: a rate limit and the failure limit, which no row of the table reaches.
OPTIONS = MiddlewareOptions(environment="live", api_key_header="X-API-Key", rate_limit="100/minute")
CHALLENGE = 'Bearer realm="api"'


@dataclass
class Keys:
    valid: str
    revoked: str
    expired: str
    test_env: str
    unknown: str
    wrong_secret: str
    bad_checksum: str
    wrong_prefix: str

    def secrets(self) -> list[str]:
        return [t.rsplit("_", 1)[1][:32] for t in vars(self).values()]


@dataclass
class Stack:
    keys: Keys
    asgi: Any
    wsgi: Any


async def ok_asgi(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def ok_wsgi(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def _tamper_secret(token: str) -> str:
    body = token[:-6]
    flipped = body[:-1] + ("A" if body[-1] != "A" else "B")
    return flipped + checksum(flipped)


def build_stack(clock: FakeClock, options: MiddlewareOptions = OPTIONS) -> Stack:
    store = MemoryKeyStore()
    sync = KeyManager(store, clock=clock)
    valid = sync.create("acme", scopes=["billing:read"]).token
    revoked = sync.create("acme")
    sync.revoke(revoked.key_id)
    expired = sync.create("acme", expires_in=timedelta(hours=1)).token
    test_env = sync.create("acme", environment="test").token
    clock.advance(timedelta(hours=2))
    body = "pk" + valid[2:-6]
    keys = Keys(
        valid=valid,
        revoked=revoked.token,
        expired=expired,
        test_env=test_env,
        unknown=generate_key().token,
        wrong_secret=_tamper_secret(valid),
        bad_checksum=valid[:-6] + ("000000" if not valid.endswith("000000") else "000001"),
        wrong_prefix=body + checksum(body),
    )
    limiter = MemoryRateLimiter(clock=clock.monotonic)
    return Stack(
        keys,
        KeyguardMiddleware(ok_asgi, AsyncKeyManager(store, clock=clock), options, limiter),
        KeyguardWSGIMiddleware(ok_wsgi, sync, options, limiter),
    )


Build = Callable[[Keys], Request]


def bearer(pick: Callable[[Keys], str]) -> Build:
    return lambda k: Request(headers=[(b"authorization", b"Bearer " + pick(k).encode())])


def header(*pairs: tuple[bytes, bytes]) -> Build:
    return lambda k: Request(headers=list(pairs))


def raw_bearer(value: bytes) -> Build:
    return header((b"authorization", b"Bearer " + value))


def form(body: bytes) -> Build:
    return lambda k: Request(
        method="POST",
        headers=[(b"content-type", b"application/x-www-form-urlencoded; charset=utf-8")],
        body=body,
    )


def query(q: bytes) -> Build:
    return lambda k: Request(query=q, headers=[(b"authorization", b"Bearer " + k.valid.encode())])


BAD = 400
NONE = 401  # 401 without an error code: no usable credential was sent
INVALID = 402  # stands for 401 with error="invalid_token"

TABLE = [
    pytest.param(header(), NONE, id="no-header"),
    pytest.param(header((b"authorization", b"")), BAD, id="empty"),
    pytest.param(header((b"authorization", b"Bearer")), BAD, id="bearer-alone"),
    pytest.param(header((b"authorization", b"Bearer   ")), BAD, id="bearer-spaces"),
    pytest.param(header((b"authorization", b" \t \t")), BAD, id="spaces-tabs"),
    pytest.param(header((b"authorization", b"Bearer\t \t")), BAD, id="bearer-tabs"),
    pytest.param(header((b"authorization", b"Basic dXNlcjpwYXNz")), NONE, id="wrong-scheme"),
    pytest.param(
        lambda k: Request(headers=[(b"authorization", b"Token " + k.valid.encode())]),
        NONE,
        id="wrong-scheme-with-key",
    ),
    pytest.param(
        lambda k: Request(headers=[(b"authorization", k.valid.encode())]), BAD, id="no-scheme"
    ),
    pytest.param(
        lambda k: Request(headers=[(b"authorization", f"Bearer {k.valid} {k.valid}".encode())]),
        BAD,
        id="two-tokens",
    ),
    pytest.param(
        lambda k: Request(
            headers=[
                (b"authorization", b"Bearer " + k.valid.encode()),
                (b"x-api-key", k.valid.encode()),
            ]
        ),
        BAD,
        id="both-headers",
    ),
    pytest.param(
        lambda k: Request(
            headers=[
                (b"authorization", b"Bearer " + k.valid.encode()),
                (b"authorization", b"Bearer " + k.valid.encode()),
            ]
        ),
        BAD,
        id="duplicate-authorization",
    ),
    pytest.param(
        lambda k: Request(
            headers=[(b"x-api-key", k.valid.encode()), (b"x-api-key", k.valid.encode())]
        ),
        BAD,
        id="duplicate-x-api-key",
    ),
    pytest.param(
        lambda k: Request(headers=[(b"authorization", f"Bearer {k.valid}, Bearer x".encode())]),
        BAD,
        id="comma-joined",
    ),
    pytest.param(query(b"api_key=sk_live_x"), BAD, id="query-api_key"),
    pytest.param(query(b"page=2&apikey=1"), BAD, id="query-apikey"),
    pytest.param(query(b"key=1"), BAD, id="query-key"),
    pytest.param(query(b"access_token=1"), BAD, id="query-access_token"),
    pytest.param(query(b"token"), BAD, id="query-token-no-value"),
    pytest.param(query(b"API_KEY=1"), BAD, id="query-uppercase"),
    pytest.param(query(b"%61pi%5Fkey=1"), BAD, id="query-percent-encoded"),
    pytest.param(form(b"a=1&access_token=sk_live_x"), BAD, id="form-body-key"),
    pytest.param(form(b"name=x&amount=3"), NONE, id="form-body-without-key"),
    pytest.param(
        lambda k: Request(
            method="POST",
            headers=[
                (b"content-type", b"application/x-www-form-urlencoded"),
                (b"content-type", b"text/plain"),
            ],
            body=b"api_key=sk_live_x",
        ),
        BAD,
        id="two-content-types-one-a-form",
    ),
    pytest.param(bearer(lambda k: k.wrong_prefix), INVALID, id="wrong-prefix"),
    pytest.param(bearer(lambda k: k.test_env), INVALID, id="wrong-environment"),
    pytest.param(bearer(lambda k: k.bad_checksum), INVALID, id="bad-checksum"),
    pytest.param(bearer(lambda k: k.unknown), INVALID, id="unknown-id"),
    pytest.param(bearer(lambda k: k.wrong_secret), INVALID, id="wrong-secret"),
    pytest.param(bearer(lambda k: k.revoked), INVALID, id="revoked"),
    pytest.param(bearer(lambda k: k.expired), INVALID, id="expired"),
    pytest.param(
        lambda k: Request(headers=[(b"x-api-key", k.revoked.encode())]),
        INVALID,
        id="revoked-in-x-api-key",
    ),
    pytest.param(bearer(lambda k: k.valid[:-7] + "é" + k.valid[-6:]), INVALID, id="non-ascii"),
    pytest.param(raw_bearer("sk_live_ключ".encode()), INVALID, id="non-ascii-utf8-bytes"),
    pytest.param(bearer(lambda k: k.valid[:20] + "\x00" + k.valid[21:]), INVALID, id="nul"),
    pytest.param(bearer(lambda k: k.valid[:20] + "\r" + k.valid[21:]), INVALID, id="cr"),
    pytest.param(bearer(lambda k: k.valid[:20] + "\n" + k.valid[21:]), INVALID, id="lf"),
    pytest.param(bearer(lambda k: k.valid + "\r\nX-Injected: 1"), BAD, id="crlf-injection"),
    pytest.param(raw_bearer(b"A" * 8 * 1024), INVALID, id="8KiB"),
    pytest.param(raw_bearer(b"A" * 64 * 1024), INVALID, id="64KiB"),
    pytest.param(header((b"x-api-key", b"B" * 64 * 1024)), INVALID, id="64KiB-x-api-key"),
    pytest.param(header((b"x-api-key", b"  ")), BAD, id="empty-x-api-key"),
    pytest.param(
        lambda k: Request(
            scheme="http", headers=[(b"authorization", b"Bearer " + k.valid.encode())]
        ),
        BAD,
        id="plain-http-from-remote-client",
    ),
]


@pytest.fixture
def stack(clock: FakeClock) -> Stack:
    return build_stack(clock)


def check_refusal(reply: Reply, expected: int, keys: Keys) -> None:
    status = 401 if expected in (NONE, INVALID) else expected
    assert reply.status == status, reply.body
    assert reply.header("cache-control") == "no-store"
    assert reply.header("content-type") == "application/problem+json"
    assert reply.header("content-length") == str(len(reply.body))
    problem = reply.json()
    assert problem["status"] == status
    assert problem["type"] == "about:blank"
    assert problem["detail"]
    challenge = {
        BAD: CHALLENGE + ', error="invalid_request"',
        NONE: CHALLENGE,
        INVALID: CHALLENGE + ', error="invalid_token"',
    }[expected]
    assert reply.header("www-authenticate") == challenge
    assert (
        problem.get("error")
        == {
            BAD: "invalid_request",
            NONE: None,
            INVALID: "invalid_token",
        }[expected]
    )
    for secret in keys.secrets():
        assert secret.encode() not in reply.body


@pytest.mark.parametrize(("build", "expected"), TABLE)
@pytest.mark.anyio
async def test_asgi_refuses(
    stack: Stack, build: Build, expected: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="keyguard")
    reply = await asgi_call(stack.asgi, build(stack.keys))
    check_refusal(reply, expected, stack.keys)
    assert len([r for r in caplog.records if r.name == "keyguard.access"]) == 1
    for secret in stack.keys.secrets():
        assert secret not in caplog.text


@pytest.mark.parametrize(("build", "expected"), TABLE)
def test_wsgi_refuses(
    stack: Stack, build: Build, expected: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="keyguard")
    reply = wsgi_call(stack.wsgi, build(stack.keys))
    check_refusal(reply, expected, stack.keys)
    assert len([r for r in caplog.records if r.name == "keyguard.access"]) == 1
    for secret in stack.keys.secrets():
        assert secret not in caplog.text


@pytest.mark.anyio
async def test_both_middlewares_answer_each_row_byte_for_byte_alike(clock: FakeClock) -> None:
    # One store and limiter for both; no failure budget, which the many rows would use up.
    stack = build_stack(clock, replace(OPTIONS, failure_limit=None))
    for param in TABLE:
        build = param.values[0]
        request = build(stack.keys)  # type: ignore[operator]
        a = await asgi_call(stack.asgi, request)
        w = wsgi_call(stack.wsgi, request)
        assert (a.status, a.headers, a.body) == (w.status, w.headers, w.body), param.id


@pytest.mark.anyio
async def test_unknown_key_and_wrong_secret_are_byte_identical(stack: Stack) -> None:
    for call in (
        lambda r: asgi_call(stack.asgi, r),
        lambda r: _awaitable(wsgi_call(stack.wsgi, r)),
    ):
        unknown = await call(bearer(lambda k: k.unknown)(stack.keys))
        wrong = await call(bearer(lambda k: k.wrong_secret)(stack.keys))
        assert (unknown.status, unknown.headers, unknown.body) == (
            wrong.status,
            wrong.headers,
            wrong.body,
        )


async def _awaitable(reply: Reply) -> Reply:
    return reply


@pytest.mark.anyio
async def test_the_valid_key_of_the_table_is_let_through(stack: Stack) -> None:
    request = bearer(lambda k: k.valid)(stack.keys)
    assert (await asgi_call(stack.asgi, request)).status == 200
    assert wsgi_call(stack.wsgi, request).status == 200
    for value in (f"bearer {stack.keys.valid}", f"  BEARER \t {stack.keys.valid} \t"):
        request = Request(headers=[(b"authorization", value.encode())])
        assert (await asgi_call(stack.asgi, request)).status == 200
        assert wsgi_call(stack.wsgi, request).status == 200
    request = Request(headers=[(b"x-api-key", stack.keys.valid.encode())])
    assert (await asgi_call(stack.asgi, request)).status == 200
    assert wsgi_call(stack.wsgi, request).status == 200
