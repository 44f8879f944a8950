"""The FastAPI example, in-process, with keys made by the CLI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.examples.conftest import Load, MakeKey


@pytest.fixture
async def example(load_example: Load) -> AsyncIterator[ModuleType]:
    module = load_example("fastapi_app")
    yield module
    await module.manager.aclose()


async def _client(module: ModuleType) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=module.app)
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")


@pytest.mark.anyio
async def test_the_billing_api(example: ModuleType, make_key: MakeKey) -> None:
    reader = {"authorization": f"Bearer {make_key('billing:read')}"}
    writer = {"authorization": f"Bearer {make_key('billing:read', 'billing:write')}"}
    invoice = {"customer": "Initech", "amount_cents": 500}
    async with await _client(example) as client:
        assert (await client.get("/health")).json() == {"status": "ok"}
        listed = await client.get("/invoices", headers=reader)
        assert listed.json() == {"owner": "acme", "invoices": []}
        assert listed.headers["ratelimit-policy"] == '"default";q=100;w=60'  # the default
        refused = await client.post("/invoices", headers=reader, json=invoice)
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        created = await client.post("/invoices", headers=writer, json=invoice)
        assert created.status_code == 201
        assert created.json()["customer"] == "Initech"
        again = await client.get("/invoices", headers=reader)
        assert again.json()["invoices"] == [created.json()]
        assert (await client.post("/invoices", headers=writer, json={})).status_code == 422
        assert (await client.get("/invoices")).status_code == 401
        token = reader["authorization"].split()[1]
        assert (await client.get(f"/invoices?api_key={token}")).status_code == 400


@pytest.mark.anyio
async def test_openapi_and_swagger_ui_are_public(example: ModuleType) -> None:
    async with await _client(example) as client:
        document = (await client.get("/openapi.json")).json()
        assert (await client.get("/docs")).status_code == 200
    assert document["components"]["securitySchemes"]["APIKey"]["scheme"] == "bearer"
    assert document["paths"]["/invoices"]["post"]["security"] == [{"APIKey": ["billing:write"]}]


@pytest.mark.anyio
async def test_the_lifespan_writes_the_last_uses_still_pending(
    example: ModuleType, make_key: MakeKey, database_url: str
) -> None:
    """The example's shutdown (its lifespan) stops the last-used task and writes the rest."""
    from keyguard.stores.sql import SQLKeyStore

    first, second = make_key("billing:read"), make_key("billing:read")
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return await events.get()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    lifespan = asyncio.create_task(example.app(scope, receive, send))
    await events.put({"type": "lifespan.startup"})
    async with await _client(example) as client:
        for token in (first, second):
            headers = {"authorization": f"Bearer {token}"}
            assert (await client.get("/invoices", headers=headers)).status_code == 200
            await asyncio.sleep(0)  # the writer's turn: the first use is written at once
    writer = example.manager._last_used_writer
    assert writer.running  # waiting out its interval, with the second use pending
    await events.put({"type": "lifespan.shutdown"})
    await lifespan
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert not writer.running
    store = SQLKeyStore(database_url)
    try:
        used = [record.last_used_at for record in store.list_keys()]
    finally:
        store.close()
    assert len(used) == 2
    assert all(when is not None for when in used), used
