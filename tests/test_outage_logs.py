"""What an outage writes to the log: one traceback per kind and minute, one line per 503.

Each test sends many requests through a middleware whose backend fails (a
PostgreSQL URL on a closed port, a Redis limiter on a closed port, a store
that raises) and counts every record logged, by keyguard and by anything else.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from keyguard import (
    AsyncKeyManager,
    KeyguardMiddleware,
    KeyguardWSGIMiddleware,
    KeyManager,
    MiddlewareOptions,
    generate_key,
)
from keyguard._logsafe import failures
from keyguard.stores import MemoryKeyStore
from keyguard.testing import FakeClock
from tests._http_drivers import Reply, Request, asgi_call, wsgi_call
from tests._middleware_apps import BrokenStore, Seen, _asgi_app, _wsgi_app, with_key

REQUESTS = 200


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port  # closed when the socket is: nothing listens there


@pytest.fixture
def outage_clock(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    """The process's failure log on a fake clock, starting afresh."""
    monkeypatch.setattr(failures, "clock", clock.monotonic)
    failures.reset()
    yield clock
    failures.reset()


def _call(kind: str, store: Any, limiter: Any = None, **options: Any) -> Any:
    opts = MiddlewareOptions(**options)
    if kind == "asgi":
        asgi = KeyguardMiddleware(_asgi_app(Seen()), AsyncKeyManager(store), opts, limiter)

        async def acall(request: Request) -> Reply:
            return await asgi_call(asgi, request)

        return acall
    wsgi = KeyguardWSGIMiddleware(_wsgi_app(Seen()), KeyManager(store), opts, limiter)

    async def call(request: Request) -> Reply:
        return wsgi_call(wsgi, request)

    return call


def _split(records: list[logging.LogRecord]) -> tuple[list[logging.LogRecord], ...]:
    access = [r for r in records if r.name == "keyguard.access"]
    others = [r for r in records if r.name != "keyguard.access"]
    return access, others


def _sql_store() -> Any:
    from keyguard.stores.sql import SQLKeyStore

    # Without its circuit every request reaches the store and fails: the throttle alone
    # must keep the log quiet (test_an_open_circuit_adds_only_its_state_changes has both).
    return SQLKeyStore(
        f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/test", circuit=False
    )


STORES = {"postgres-closed-port": _sql_store, "store-raising": BrokenStore}


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.parametrize("store", sorted(STORES))
@pytest.mark.anyio
async def test_a_store_outage_logs_one_traceback_a_minute_and_one_line_per_503(
    kind: str, store: str, outage_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="keyguard")
    call = _call(kind, STORES[store](), failure_limit=None)
    token = generate_key().token
    for _ in range(REQUESTS):
        assert (await call(with_key(token, client="127.0.0.1"))).status == 503
        outage_clock.advance(0.1)
    access, others = _split(caplog.records)
    assert [r.levelno for r in access] == [logging.ERROR] * REQUESTS
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in access)
    assert len(others) == 1, [r.getMessage() for r in others]
    (first,) = others
    assert first.name == "keyguard"
    assert first.exc_info is not None
    assert first.getMessage().startswith(f"key store lookup failed for key {token[8:20]} (")
    lines = caplog.text.count("\n")
    assert lines < REQUESTS + 200, lines  # one line per 503, one traceback in all

    caplog.clear()
    outage_clock.advance(61 - 0.1 * REQUESTS)  # the interval is over: 61 s since the first
    assert (await call(with_key(token, client="127.0.0.1"))).status == 503
    access, others = _split(caplog.records)
    assert len(access) == 1
    count, traceback = others
    assert count.getMessage().endswith(
        f": {REQUESTS - 1} more failures of this kind in the last 61 s, not logged one by one"
    )
    assert count.exc_info is None
    assert traceback.exc_info is not None


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.anyio
async def test_an_open_circuit_adds_only_its_state_changes(
    kind: str, outage_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    from keyguard.stores.sql import SQLKeyStore

    caplog.set_level(logging.DEBUG, logger="keyguard")
    store = SQLKeyStore(f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/test")
    call = _call(kind, store, failure_limit=None)
    token = generate_key().token
    for _ in range(REQUESTS):
        assert (await call(with_key(token, client="127.0.0.1"))).status == 503
    access, others = _split(caplog.records)
    assert len(access) == REQUESTS
    tracebacks = [r for r in others if r.exc_info is not None]
    assert len(tracebacks) == 1
    states = [r for r in others if r.exc_info is None]
    assert states, "the breaker says that it opened"
    assert all("circuit" in r.getMessage() for r in states), [r.getMessage() for r in states]
    assert len(states) < 10, [r.getMessage() for r in states]


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.anyio
async def test_a_limiter_outage_logs_one_line_per_503(
    kind: str, outage_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    from keyguard.ratelimit.redis import RedisRateLimiter

    caplog.set_level(logging.DEBUG, logger="keyguard")
    store = MemoryKeyStore()
    token = KeyManager(store).create("acme").token
    limiter = RedisRateLimiter.from_url(
        f"redis://127.0.0.1:{_closed_port()}", on_backend_error="closed"
    )
    try:
        call = _call(kind, store, limiter, rate_limit="100/minute")
        for _ in range(REQUESTS):
            assert (await call(with_key(token, client="127.0.0.1"))).status == 503
    finally:
        limiter.close()
        await limiter.aclose()
    access, others = _split(caplog.records)
    assert len(access) == REQUESTS
    assert all(r.exc_info is None for r in caplog.records)
    assert len(others) <= 2, [r.getMessage() for r in others]  # the limiter's backoff warnings


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.anyio
async def test_a_key_in_the_path_is_not_in_keyguards_access_log(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="keyguard.access")
    store = MemoryKeyStore()
    token = KeyManager(store).create("acme").token
    kept = token[:-38] + "[redacted]"
    call = _call(kind, store)
    for path in (f"/invoices/{token}", f"/invoices/{token[:-1]}", f"/x/{token}extra/y"):
        assert (await call(Request(path=path))).status == 401
        assert (await call(with_key(token, path=path))).status == 200
    access, _ = _split(caplog.records)
    assert len(access) == 6
    for record in access:
        assert kept in record.getMessage()
        assert kept in record.__dict__["path"]
    assert token[20:28] not in caplog.text
    assert token[-14:-6] not in caplog.text
