"""The FastAPI integration: the dependency, scopes, problem+json, OpenAPI and Swagger UI."""

# No "from __future__ import annotations": FastAPI must evaluate the local Security(...).

from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Security, WebSocket

from keyguard import AsyncKeyManager, IssuedKey, MiddlewareOptions, Principal
from keyguard.integrations.fastapi import Keyguard
from keyguard.stores import MemoryKeyStore
from keyguard.testing import FakeClock
from tests._http_drivers import Request, asgi_call


def build(manager: AsyncKeyManager, **options: Any) -> tuple[FastAPI, Keyguard]:
    keyguard = Keyguard(manager, public_paths=["/health"], **options)
    optional = Keyguard(auto_error=False)
    app = FastAPI()
    keyguard.init_app(app)

    @app.get("/invoices")
    async def list_invoices(
        principal: Annotated[Principal, Security(keyguard, scopes=["billing:read"])],
    ) -> dict[str, Any]:
        return {"owner": principal.owner, "scopes": sorted(principal.scopes)}

    @app.post("/invoices", status_code=201)
    async def create_invoice(
        principal: Annotated[Principal, Security(keyguard, scopes=["billing:write"])],
    ) -> dict[str, str]:
        return {"created_by": principal.key_id}

    @app.get("/health")
    async def health(principal: Annotated[Principal | None, Security(optional)]) -> dict[str, Any]:
        return {"status": "ok", "principal": principal}

    @app.get("/me")
    async def me(principal: Annotated[Principal, Security(keyguard)]) -> dict[str, str]:
        return {"owner": principal.owner}

    @app.websocket("/stream")
    async def stream(
        websocket: WebSocket,
        principal: Annotated[Principal, Security(keyguard, scopes=["billing:write"])],
    ) -> None:  # pragma: no cover (the test's keys lack the scope)
        await websocket.accept()

    return app, keyguard


@pytest.fixture
def manager(clock: FakeClock) -> AsyncKeyManager:
    return AsyncKeyManager(MemoryKeyStore(), clock=clock)


async def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://api.test")


@pytest.fixture
async def reader(manager: AsyncKeyManager) -> IssuedKey:
    return await manager.create("acme", scopes=["billing:read"])


@pytest.mark.anyio
async def test_dependency_returns_the_principal_and_enforces_scopes(
    manager: AsyncKeyManager, reader: IssuedKey
) -> None:
    app, _ = build(manager)
    auth = {"authorization": f"Bearer {reader.token}"}
    async with await client_for(app) as client:
        ok = await client.get("/invoices", headers=auth)
        assert ok.status_code == 200
        assert ok.json() == {"owner": "acme", "scopes": ["billing:read"]}
        assert (await client.get("/me", headers=auth)).json() == {"owner": "acme"}

        refused = await client.post("/invoices", headers=auth)
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["cache-control"] == "no-store"
        assert refused.headers["www-authenticate"] == (
            'Bearer realm="api", error="insufficient_scope", scope="billing:write"'
        )
        assert refused.json() == {
            "type": "about:blank",
            "title": "Forbidden",
            "status": 403,
            "detail": "the API key lacks the scope billing:write",
            "error": "insufficient_scope",
            "scope": "billing:write",
        }

        writer = await manager.create("acme", scopes=["billing:read", "billing:write"])
        created = await client.post(
            "/invoices", headers={"authorization": f"Bearer {writer.token}"}
        )
        assert created.status_code == 201
        assert created.json() == {"created_by": writer.key_id}


@pytest.mark.anyio
async def test_middleware_refusals_and_public_paths(manager: AsyncKeyManager) -> None:
    app, _ = build(manager)
    async with await client_for(app) as client:
        missing = await client.get("/invoices")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == 'Bearer realm="api"'
        assert missing.headers["content-type"] == "application/problem+json"
        health = await client.get("/health")
        assert health.json() == {"status": "ok", "principal": None}
        assert (await client.get("/invoices?api_key=x")).status_code == 400


@pytest.mark.anyio
async def test_optional_anonymous_gets_401_from_a_dependency_that_needs_a_key(
    manager: AsyncKeyManager,
) -> None:
    app, _ = build(manager, optional=True, realm="billing")
    async with await client_for(app) as client:
        reply = await client.get("/me")
        assert reply.status_code == 401
        assert reply.headers["www-authenticate"] == 'Bearer realm="billing"'
        assert reply.headers["content-type"] == "application/problem+json"
        assert reply.json()["status"] == 401


@pytest.mark.anyio
async def test_openapi_carries_the_security_scheme_and_docs_are_public(
    manager: AsyncKeyManager,
) -> None:
    app, _ = build(manager)
    async with await client_for(app) as client:
        document = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
        oauth2_redirect = await client.get("/docs/oauth2-redirect")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text
    assert oauth2_redirect.status_code == 200
    assert document["components"]["securitySchemes"] == {
        "APIKey": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "API key",
            "description": "An API key, sent as Authorization: Bearer <key>.",
        }
    }
    assert document["paths"]["/invoices"]["get"]["security"] == [{"APIKey": ["billing:read"]}]
    assert document["paths"]["/invoices"]["post"]["security"] == [{"APIKey": ["billing:write"]}]


@pytest.mark.anyio
async def test_public_docs_can_be_turned_off(manager: AsyncKeyManager) -> None:
    app, _ = build(manager, public_docs=False)
    async with await client_for(app) as client:
        assert (await client.get("/openapi.json")).status_code == 401


@pytest.mark.anyio
async def test_websocket_dependency_closes_with_1008(
    manager: AsyncKeyManager, reader: IssuedKey
) -> None:
    app, _ = build(manager)
    incoming = [{"type": "websocket.connect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "wss",
        "path": "/stream",
        "raw_path": b"/stream",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {reader.token}".encode())],
        "client": ("203.0.113.9", 5000),
        "server": ("192.0.2.1", 443),
        "subprotocols": [],
    }
    await app(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "403 insufficient_scope"}]


@pytest.mark.anyio
async def test_dependency_without_the_middleware_fails_loudly(reader: IssuedKey) -> None:
    keyguard = Keyguard()
    app = FastAPI()

    @app.get("/me")
    async def me(principal: Annotated[Principal, Security(keyguard)]) -> str:
        return principal.owner  # pragma: no cover

    with pytest.raises(RuntimeError, match="init_app"):
        await asgi_call(app, Request(path="/me"))


def test_init_app_needs_an_async_manager() -> None:
    with pytest.raises(TypeError, match="AsyncKeyManager"):
        Keyguard().init_app(FastAPI())
    with pytest.raises(TypeError, match="either"):
        Keyguard(options=MiddlewareOptions(), realm="x")
