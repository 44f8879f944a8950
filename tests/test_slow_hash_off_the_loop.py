"""A bcrypt key is verified in a worker thread: the event loop keeps serving meanwhile."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from keyguard import AsyncKeyManager, KeyFormat, KeyguardMiddleware, PasslibHasher
from keyguard.stores import MemoryKeyStore
from tests._http_drivers import Request, asgi_call

passlib_context = pytest.importorskip("passlib.context")

#: bcrypt's cost 12 (its usual): about a quarter of a second per check, long beside a turn.
ROUNDS = 12
#: The longest the loop may go without a turn while the hash runs ("a few ms"; generous,
#: as the test machine is shared).
LONGEST_GAP = 0.05


async def app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def bearer(token: str) -> Request:
    return Request(headers=[(b"authorization", f"Bearer {token}".encode())])


@pytest.mark.anyio
async def test_the_loop_keeps_serving_while_a_bcrypt_key_is_verified() -> None:
    hasher = PasslibHasher(passlib_context.CryptContext(schemes=["bcrypt"], bcrypt__rounds=ROUNDS))
    manager = AsyncKeyManager(
        MemoryKeyStore(), key_format=KeyFormat(accept_split_keys=True), legacy_hashers=[hasher]
    )
    secret = "correct-horse-battery-staple-0123456789"
    await manager.import_key("legacy-client", hasher.hash(secret), owner="acme")
    other = (await manager.create("acme")).token
    middleware = KeyguardMiddleware(app, manager)
    assert (await asgi_call(middleware, bearer(other))).status == 200

    started = time.perf_counter()
    slow = asyncio.create_task(asgi_call(middleware, bearer(f"legacy-client.{secret}")))
    gaps: list[float] = []
    served = 0
    last = time.perf_counter()
    while not slow.done():
        await asyncio.sleep(0)  # the heartbeat: one turn of the loop
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
        assert (await asgi_call(middleware, bearer(other))).status == 200
        served += 1
    took = time.perf_counter() - started
    assert (await slow).status == 200  # the bcrypt key was verified (and its hash upgraded)
    assert served > 10, served
    # Had the hash run on the loop, one gap would be as long as the hash itself.
    assert max(gaps) < min(LONGEST_GAP, took / 4), (max(gaps), took)
    await manager.aclose()
