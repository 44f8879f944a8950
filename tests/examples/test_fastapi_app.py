"""The FastAPI example, in-process, with keys made by the CLI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import ModuleType

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
