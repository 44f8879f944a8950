"""Per-request cost of the ASGI middleware, in-process, beside the alternatives.

Each row calls an ASGI app directly with a prepared scope, ``receive`` and
``send`` (no HTTP client, no server), so the numbers are the middleware's
own. The app is a bare Starlette app with one route; the rows are the bare
app, keyguard's middleware (memory store) in front of it, and Starlette's
``AuthenticationMiddleware`` with a backend that looks the bearer token up in
a dict (the cheapest authentication there is). The "overhead" rows subtract
the bare app, measured in the same run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from _harness import Row, time_async


def _apps() -> tuple[Any, Any, Any, list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    from starlette.applications import Starlette
    from starlette.authentication import (
        AuthCredentials,
        AuthenticationBackend,
        SimpleUser,
    )
    from starlette.middleware import Middleware
    from starlette.middleware.authentication import AuthenticationMiddleware
    from starlette.requests import HTTPConnection, Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from keyguard import AsyncKeyManager
    from keyguard.asgi import KeyguardMiddleware
    from keyguard.stores import MemoryKeyStore

    async def invoices(request: Request) -> PlainTextResponse:
        return PlainTextResponse("[]")

    routes = [Route("/invoices", invoices)]
    bare = Starlette(routes=routes)

    manager = AsyncKeyManager(MemoryKeyStore())
    issued = asyncio.run(manager.create("bench", scopes=["billing:read"]))
    keyguarded = Starlette(routes=routes, middleware=[Middleware(KeyguardMiddleware, manager)])

    tokens = {issued.token: ("bench", ["billing:read"])}

    class DictBackend(AuthenticationBackend):
        async def authenticate(
            self, conn: HTTPConnection
        ) -> tuple[AuthCredentials, SimpleUser] | None:
            header = conn.headers.get("authorization")
            if header is None:
                return None
            scheme, _, token = header.partition(" ")
            found = tokens.get(token) if scheme.lower() == "bearer" else None
            if found is None:
                return None
            owner, scopes = found
            return AuthCredentials(scopes), SimpleUser(owner)

    starlette_auth = Starlette(
        routes=routes, middleware=[Middleware(AuthenticationMiddleware, backend=DictBackend())]
    )
    common = [
        (b"host", b"api.example.com"),
        (b"user-agent", b"bench/1.0"),
        (b"accept", b"application/json"),
        (b"accept-encoding", b"gzip, deflate"),
    ]
    with_key = [*common, (b"authorization", f"Bearer {issued.token}".encode())]
    return bare, keyguarded, starlette_auth, common, with_key


def rows() -> Iterator[Row]:
    bare, keyguarded, starlette_auth, common, with_key = _apps()
    base_scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": "/invoices",
        "raw_path": b"/invoices",
        "root_path": "",
        "query_string": b"",
        "client": ("10.0.0.7", 51234),
        "server": ("10.0.0.1", 443),
    }
    request = {"type": "http.request", "body": b"", "more_body": False}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return request

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    def caller(app: Any, headers: list[tuple[bytes, bytes]]) -> Any:
        async def call() -> None:
            await app({**base_scope, "headers": headers}, receive, send)

        return call

    async def measure() -> dict[str, float]:
        results = {}
        for name, app, headers, expected in (
            ("bare", bare, common, 200),
            ("keyguard", keyguarded, with_key, 200),
            ("starlette", starlette_auth, with_key, 200),
            ("keyguard-401", keyguarded, common, 401),
        ):
            statuses.clear()
            await caller(app, headers)()
            assert statuses == [expected], (name, statuses)
            results[name] = await time_async(caller(app, headers))
        return results

    results = asyncio.run(measure())
    group = "middleware (ASGI)"
    yield Row(group, "bare Starlette app, one route", results["bare"])
    yield Row(group, "keyguard middleware, valid key (memory store)", results["keyguard"])
    yield Row(
        group,
        "Starlette AuthenticationMiddleware, dict lookup",
        results["starlette"],
    )
    yield Row(
        group,
        "overhead: keyguard over bare Starlette",
        results["keyguard"] - results["bare"],
        note="target <= 5",
    )
    yield Row(
        group,
        "overhead: Starlette AuthenticationMiddleware over bare",
        results["starlette"] - results["bare"],
    )
    yield Row(group, "keyguard middleware, refusal (401, no key)", results["keyguard-401"])
