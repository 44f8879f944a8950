"""With ``KEYGUARD_REDIS_URL`` set, a running example app hears a revoke made with the CLI.

The app's lookup cache trusts a record for 5 s; only the Redis broadcast can make
the revoke take effect sooner. Each test warms the cache with two requests,
revokes with
``keyguard keys revoke`` (which publishes because the variable is set), and
requires the very same app instance to refuse the key well inside the TTL.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import Callable, Iterator
from types import ModuleType

import httpx
import pytest

from keyguard import cli
from keyguard.stores import CachedKeyStore
from keyguard.stores.redis_broadcast import RedisRevocationBroadcast
from tests._http_drivers import Request, wsgi_call
from tests.examples.conftest import Load, MakeKey

pytestmark = pytest.mark.redis

#: Well inside the cache's 5 s TTL: a refusal by then came through the broadcast.
DEADLINE = 2.0


def _client_address() -> str:
    """An address of this test's own: the refused request counts against its failure
    budget, which lives in the Redis that other test runs share."""
    return f"198.51.100.{uuid.uuid4().int % 254 + 1}"


@pytest.fixture
def redis_env(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Point the examples and the CLI at Redis; remove the rate-limit keys of the test's keys."""
    monkeypatch.setenv("KEYGUARD_REDIS_URL", redis_url)
    # The polling below sends many requests; the limit is not what is tested here.
    monkeypatch.setenv("KEYGUARD_RATE_LIMIT", "100000/minute")
    key_ids: list[str] = []
    yield key_ids.append
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        for key_id in key_ids:
            for key in client.scan_iter(match="kg:rl:{" + key_id + "}*"):
                client.delete(key)
    finally:
        client.close()


def _broadcast_of(store: object) -> RedisRevocationBroadcast:
    assert isinstance(store, CachedKeyStore)
    assert isinstance(store.broadcast, RedisRevocationBroadcast), "the example did not subscribe"
    return store.broadcast


def _revoke_with_the_cli(key_id: str) -> None:
    err = io.StringIO()
    assert cli.main(["keys", "revoke", key_id], stdout=io.StringIO(), stderr=err) == 0
    assert "announced on the Redis channel" in err.getvalue()


def test_flask_example_hears_a_revoke_made_with_the_cli(
    load_example: Load, make_key: MakeKey, redis_env: Callable[[str], None]
) -> None:
    module: ModuleType = load_example("flask_app")
    middleware = module.app.wsgi_app.app  # inside the token endpoint's app
    _broadcast_of(middleware.manager.store)
    token = make_key("billing:read")
    key_id = token.split("_")[2]
    redis_env(key_id)
    request = Request(
        headers=[(b"authorization", f"Bearer {token}".encode())], client=_client_address()
    )
    try:
        # The key is cached from its first use (writing its last use keeps it cached).
        for _ in range(2):
            assert wsgi_call(middleware, request).status == 200
        _revoke_with_the_cli(key_id)
        started = time.monotonic()
        while (status := wsgi_call(middleware, request).status) == 200:
            assert time.monotonic() - started < DEADLINE, "the revoke did not arrive in time"
            time.sleep(0.02)
        assert status == 401
    finally:
        middleware.manager.close()
        middleware.limiter.close()


@pytest.mark.anyio
async def test_fastapi_example_hears_a_revoke_made_with_the_cli(
    load_example: Load, make_key: MakeKey, redis_env: Callable[[str], None]
) -> None:
    module: ModuleType = load_example("fastapi_app")
    _broadcast_of(module.manager.store)
    token = make_key("billing:read")
    key_id = token.split("_")[2]
    redis_env(key_id)
    headers = {"authorization": f"Bearer {token}"}
    transport = httpx.ASGITransport(app=module.app, client=(_client_address(), 50123))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="https://api.test") as client:
            for _ in range(2):  # as above: the record is cached
                assert (await client.get("/invoices", headers=headers)).status_code == 200
            # In a thread, as another process would: run on this event loop, the synchronous
            # command would stall the app's last-used writer in the middle of its write.
            await asyncio.to_thread(_revoke_with_the_cli, key_id)
            started = time.monotonic()
            while (status := (await client.get("/invoices", headers=headers)).status_code) == 200:
                assert time.monotonic() - started < DEADLINE, "the revoke did not arrive in time"
                await asyncio.sleep(0.02)
            assert status == 401
    finally:
        await module.manager.aclose()
        await module.limiter.aclose()
