"""ASGI specifics: scope types, WebSockets, root_path, and plain Starlette's own ``requires``."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

import keyguard
from keyguard import AsyncKeyManager, KeyguardMiddleware, MiddlewareOptions
from keyguard.stores import MemoryKeyStore
from keyguard.testing import FakeClock
from tests._http_drivers import Request, asgi_call

SRC = Path(keyguard.__file__).parent


@pytest.fixture
def manager(clock: FakeClock) -> AsyncKeyManager:
    return AsyncKeyManager(MemoryKeyStore(), clock=clock)


@pytest.mark.anyio
async def test_lifespan_and_unknown_scopes_pass_straight_through(
    manager: AsyncKeyManager,
) -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)
        message = await receive()
        await send({"type": "lifespan.startup.complete", "echo": message["type"]})

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    middleware = KeyguardMiddleware(app, manager)
    for kind in ("lifespan", "something-new"):
        scope = {"type": kind, "asgi": {"version": "3.0"}}
        await middleware(scope, receive, send)
        assert seen[-1] == {"type": kind, "asgi": {"version": "3.0"}}
    assert [m["echo"] for m in sent] == ["lifespan.startup", "lifespan.startup"]


def _starlette(manager: AsyncKeyManager, options: MiddlewareOptions | None = None) -> Any:
    @requires("billing:read")
    async def invoices(request: StarletteRequest) -> JSONResponse:
        return JSONResponse(
            {
                "owner": request.user.display_name,
                "key_id": request.user.identity,
                "authenticated": request.user.is_authenticated,
                "scopes": sorted(request.auth.scopes),
            }
        )

    @requires("billing:write")
    async def create(request: StarletteRequest) -> PlainTextResponse:
        return PlainTextResponse("created", status_code=201)

    async def health(request: StarletteRequest) -> JSONResponse:
        return JSONResponse({"authenticated": request.user.is_authenticated})

    @requires("billing:read")
    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(websocket.user.display_name)
        await websocket.close()

    app = Starlette(
        routes=[
            Route("/invoices", invoices),
            Route("/invoices", create, methods=["POST"]),
            Route("/health", health),
            WebSocketRoute("/stream", stream),
        ]
    )
    return KeyguardMiddleware(app, manager, options or MiddlewareOptions(public_paths=["/health"]))


@pytest.mark.anyio
async def test_plain_starlette_requires_works_without_keyguard_code(
    manager: AsyncKeyManager,
) -> None:
    reader = await manager.create("acme", scopes=["billing:read"])
    app = _starlette(manager)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://api.test") as client:
        auth = {"authorization": f"Bearer {reader.token}"}
        reply = await client.get("/invoices", headers=auth)
        assert reply.status_code == 200
        assert reply.json() == {
            "owner": "acme",
            "key_id": reader.key_id,
            "authenticated": True,
            "scopes": ["billing:read"],
        }
        assert (await client.post("/invoices", headers=auth)).status_code == 403
        health = await client.get("/health")
        assert health.json() == {"authenticated": False}
        assert (await client.get("/invoices")).status_code == 401


@pytest.mark.anyio
async def test_anonymous_optional_requests_fail_requires(manager: AsyncKeyManager) -> None:
    app = _starlette(manager, MiddlewareOptions(optional=True))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://api.test") as client:
        assert (await client.get("/invoices")).status_code == 403
        assert (await client.get("/health")).json() == {"authenticated": False}


async def _websocket(app: Any, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
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
        "headers": [(b"host", b"api.test"), *headers],
        "client": ("203.0.113.9", 5000),
        "server": ("192.0.2.1", 443),
        "subprotocols": [],
    }
    await app(scope, receive, send)
    return sent


@pytest.mark.anyio
async def test_websocket_with_a_key_is_accepted_and_sees_the_user(
    manager: AsyncKeyManager,
) -> None:
    reader = await manager.create("acme", scopes=["billing:read"])
    sent = await _websocket(
        _starlette(manager), [(b"authorization", f"Bearer {reader.token}".encode())]
    )
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "acme"


@pytest.mark.anyio
async def test_websocket_refused_through_starlette_routing(manager: AsyncKeyManager) -> None:
    sent = await _websocket(_starlette(manager), [])
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "401 missing credentials"}]


@pytest.mark.anyio
async def test_refused_websocket_is_closed_1008_before_accept(manager: AsyncKeyManager) -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
        seen.append(scope)

    middleware = KeyguardMiddleware(app, manager)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    for headers, reason in (
        ([], "401 missing credentials"),
        ([(b"authorization", b"Bearer sk_live_nope")], "401 invalid_token"),
    ):
        sent.clear()
        scope = {
            "type": "websocket",
            "scheme": "wss",
            "path": "/stream",
            "query_string": b"",
            "headers": headers,
            "client": ("203.0.113.9", 5000),
        }
        await middleware(scope, receive, send)
        assert sent == [{"type": "websocket.close", "code": 1008, "reason": reason}]
    assert seen == []


@pytest.mark.anyio
async def test_public_paths_are_matched_below_root_path(manager: AsyncKeyManager) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = KeyguardMiddleware(app, manager, MiddlewareOptions(public_paths=["/health"]))
    reply = await asgi_call(middleware, Request(path="/health"), root_path="/billing")
    assert reply.status == 204
    assert seen == ["/billing/health"]
    reply = await asgi_call(middleware, Request(path="/invoices"), root_path="/billing")
    assert reply.status == 401


def test_no_framework_import_in_the_core_or_the_middleware() -> None:
    frameworks = {"starlette", "fastapi", "flask", "werkzeug", "django", "asgiref"}
    for path in SRC.rglob("*.py"):
        # The integrations use the frameworks; so does the app `keyguard demo` serves.
        if "integrations" in path.parts or path.name in ("testing.py", "_demo_app.py"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in frameworks, f"{path.name} imports {name}"


@pytest.mark.parametrize("module", ["asgi.py", "wsgi.py"])
def test_middleware_modules_stay_thin(module: str) -> None:
    assert len((SRC / module).read_text().splitlines()) < 250


def test_middleware_modules_export_what_they_define() -> None:
    import keyguard.asgi
    import keyguard.integrations.fastapi
    import keyguard.integrations.flask
    import keyguard.wsgi

    for module in (
        keyguard.asgi,
        keyguard.wsgi,
        keyguard.integrations.fastapi,
        keyguard.integrations.flask,
    ):
        names = module.__all__
        assert names == sorted(names, key=lambda n: (not n.isupper(), not n[0].isupper(), n))
        for name in names:
            assert hasattr(module, name), name


@pytest.mark.anyio
@pytest.mark.parametrize("shape", ["list pairs", "tuple of tuples", "scope not a dict"])
async def test_headers_and_scopes_of_any_server_shape(manager: AsyncKeyManager, shape: str) -> None:
    """Servers hand headers as tuples or lists, in a list or a tuple; a scope that is
    another mapping (not a dict, as the spec has it) still works, and gets the user."""
    from collections import UserDict

    issued = await manager.create("acme")
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["keyguard.principal"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    pairs: Any = [[b"host", b"api.test"], [b"authorization", f"Bearer {issued.token}".encode()]]
    if shape != "list pairs":
        pairs = tuple(tuple(pair) for pair in pairs)
    scope: Any = {
        "type": "http",
        "scheme": "https",
        "method": "GET",
        "path": "/invoices",
        "query_string": b"",
        "headers": pairs,
        "client": ("203.0.113.9", 5000),
    }
    if shape == "scope not a dict":
        scope = UserDict(scope)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await KeyguardMiddleware(app, manager)(scope, receive, send)
    assert sent[0]["status"] == 204
    assert [p.key_id for p in seen] == [issued.key_id]
    assert scope["user"] is seen[0]
