"""The FastAPI integration: the dependency, scopes, problem+json, OpenAPI and Swagger UI."""

# No "from __future__ import annotations": FastAPI must evaluate the local Security(...).

from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request, Security, WebSocket

from keyguard import AsyncKeyManager, IssuedKey, MiddlewareOptions, Principal
from keyguard.integrations.fastapi import Keyguard, KeyguardRoute
from keyguard.stores import MemoryKeyStore
from keyguard.testing import FakeClock
from tests._http_drivers import Request as RawRequest
from tests._http_drivers import asgi_call


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
        await asgi_call(app, RawRequest(path="/me"))


def test_init_app_needs_an_async_manager() -> None:
    with pytest.raises(TypeError, match="AsyncKeyManager"):
        Keyguard().init_app(FastAPI())
    with pytest.raises(TypeError, match="either"):
        Keyguard(options=MiddlewareOptions(), realm="x")


# -- scopes declared beside the route, checked after routing ------------------------------


def routed(manager: AsyncKeyManager, **options: Any) -> tuple[FastAPI, Keyguard]:
    keyguard = Keyguard(manager, public_paths=["/health"], **options)
    app = FastAPI()
    keyguard.init_app(app)

    @app.get("/invoices", openapi_extra=keyguard.requires("billing:read"))
    async def list_invoices(request: Request) -> dict[str, Any]:
        principal = request.scope["keyguard.principal"]
        return {"owner": principal.owner, "user": request.user.owner}

    @app.post("/invoices", openapi_extra=keyguard.requires("billing:read", "billing:write"))
    async def create_invoice() -> dict[str, str]:
        return {"created": "yes"}

    @app.get("/me", openapi_extra=keyguard.requires())
    async def me(request: Request) -> dict[str, str]:
        return {"owner": request.scope["keyguard.principal"].owner}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    router = APIRouter(route_class=keyguard.route_class)

    @router.get("/daily", openapi_extra=keyguard.requires("reports:read"))
    async def daily() -> dict[str, str]:
        return {"report": "daily"}  # pragma: no cover (the test's keys lack the scope)

    app.include_router(router, prefix="/reports")
    return app, keyguard


@pytest.mark.anyio
async def test_route_scopes_are_checked_after_routing(
    manager: AsyncKeyManager, reader: IssuedKey
) -> None:
    app, _ = routed(manager)
    auth = {"authorization": f"Bearer {reader.token}"}
    async with await client_for(app) as client:
        ok = await client.get("/invoices", headers=auth)
        assert ok.status_code == 200
        assert ok.json() == {"owner": "acme", "user": "acme"}
        assert (await client.get("/me", headers=auth)).json() == {"owner": "acme"}
        refused = await client.post("/invoices", headers=auth)
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["cache-control"] == "no-store"
        assert refused.headers["www-authenticate"] == (
            'Bearer realm="api", error="insufficient_scope", scope="billing:write"'
        )
        assert refused.json()["detail"] == "the API key lacks the scope billing:write"
        included = await client.get("/reports/daily", headers=auth)
        assert included.status_code == 403  # a route of an included router is checked too
        assert (await client.head("/me", headers={"authorization": "Bearer x"})).content == b""
        writer = await manager.create("acme", scopes=["billing:read", "billing:write"])
        created = await client.post(
            "/invoices", headers={"authorization": f"Bearer {writer.token}"}
        )
        assert created.json() == {"created": "yes"}


@pytest.mark.anyio
async def test_an_anonymous_request_to_a_route_with_scopes_gets_401(
    manager: AsyncKeyManager,
) -> None:
    app, _ = routed(manager, optional=True, realm="billing")
    async with await client_for(app) as client:
        reply = await client.get("/me")
        assert reply.status_code == 401
        assert reply.headers["www-authenticate"] == 'Bearer realm="billing"'
        assert reply.json()["status"] == 401
        assert (await client.get("/health")).json() == {"status": "ok"}


@pytest.mark.anyio
async def test_route_scopes_are_in_the_openapi_document(manager: AsyncKeyManager) -> None:
    app, _ = routed(manager)
    async with await client_for(app) as client:
        document = (await client.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"] == {
        "APIKey": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "API key",
            "description": "An API key, sent as Authorization: Bearer <key>.",
        }
    }
    paths = document["paths"]
    assert paths["/invoices"]["get"]["security"] == [{"APIKey": ["billing:read"]}]
    assert paths["/invoices"]["post"]["security"] == [{"APIKey": ["billing:read", "billing:write"]}]
    assert paths["/me"]["get"]["security"] == [{"APIKey": []}]
    assert paths["/reports/daily"]["get"]["security"] == [{"APIKey": ["reports:read"]}]
    assert "security" not in paths["/health"]["get"]


@pytest.mark.parametrize(
    "declare",
    [
        pytest.param("before-init-app", id="before-init-app"),
        pytest.param("plain-router", id="plain-router"),
    ],
)
@pytest.mark.anyio
async def test_route_scopes_nothing_checks_refuse_to_serve(
    manager: AsyncKeyManager, reader: IssuedKey, declare: str
) -> None:
    keyguard = Keyguard(manager)
    app = FastAPI()
    if declare == "before-init-app":

        @app.get("/invoices", openapi_extra=keyguard.requires("billing:read"))
        async def early() -> str:
            return "unchecked"  # pragma: no cover

        keyguard.init_app(app)
    else:
        keyguard.init_app(app)
        router = APIRouter()

        @router.get("/invoices", openapi_extra=keyguard.requires("billing:read"))
        async def plain() -> str:
            return "unchecked"  # pragma: no cover

        app.include_router(router)
    with pytest.raises(RuntimeError, match="declares keyguard scopes"):
        await asgi_call(app, RawRequest(path="/invoices", headers=[auth_header(reader)]))


def auth_header(issued: IssuedKey) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {issued.token}".encode())


@pytest.mark.parametrize(
    ("scopes", "error"),
    [
        pytest.param((["billing:read"],), TypeError, id="a-list"),
        pytest.param(("",), ValueError, id="empty"),
        pytest.param(("billing read",), ValueError, id="a-space"),
    ],
)
def test_requires_refuses_bad_scopes(scopes: tuple[Any, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        Keyguard().requires(*scopes)


def test_route_classes_need_one_requirement_of_their_keyguard() -> None:
    keyguard = Keyguard()
    router = APIRouter(route_class=keyguard.route_class)
    with pytest.raises(ValueError, match="alternatives"):
        router.get("/x", openapi_extra={"security": [{"APIKey": ["a"]}, {"APIKey": ["b"]}]})(
            lambda: None
        )
    with pytest.raises(TypeError, match=r"keyguard\.route_class"):
        APIRouter(route_class=KeyguardRoute).get("/x")(lambda: None)
