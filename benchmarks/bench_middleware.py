"""Per-request cost of the ASGI middleware, in-process, beside the alternatives.

Each row calls an ASGI app directly with a prepared scope, ``receive`` and
``send`` (no HTTP client, no server), so the numbers are the middleware's
own. The app is a bare Starlette app with one route; in front of it:

- keyguard's middleware (memory store), alone and with a ``MemoryRateLimiter``
  (the full stack: RateLimit headers on every response);
- Starlette's ``AuthenticationMiddleware`` with a backend that looks the
  bearer token up in a dict (the cheapest authentication there is), alone and
  with slowapi's pure-ASGI middleware (``limits`` in memory, headers on).

The "overhead" rows subtract the bare app, measured in the same run. The
policies are large enough that no request is refused while measured.

All stacks are interleaved in one process, so each ratio compares stacks timed
side by side.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Iterator
from typing import Any

from _harness import Row, median_difference, time_async_interleaved


def _apps() -> tuple[dict[str, Any], list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    from slowapi import Limiter
    from slowapi.middleware import SlowAPIASGIMiddleware
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

    from keyguard import AsyncKeyManager, MemoryRateLimiter, MiddlewareOptions
    from keyguard.asgi import KeyguardMiddleware
    from keyguard.stores import MemoryKeyStore

    async def invoices(request: Request) -> PlainTextResponse:
        return PlainTextResponse("[]")

    routes = [Route("/invoices", invoices)]
    bare = Starlette(routes=routes)

    manager = AsyncKeyManager(MemoryKeyStore())
    issued = asyncio.run(manager.create("bench", scopes=["billing:read"]))
    keyguarded = Starlette(routes=routes, middleware=[Middleware(KeyguardMiddleware, manager)])
    limited = MiddlewareOptions(rate_limit="1000000000/minute")
    full_stack = Starlette(
        routes=routes,
        middleware=[Middleware(KeyguardMiddleware, manager, limited, MemoryRateLimiter())],
    )
    # Two and three policies a request: the default, and one or two of the route's.
    two_policies = MiddlewareOptions(
        rate_limit="1000000000/minute", route_limits={"GET /invoices": "100000000/hour"}
    )
    three_policies = MiddlewareOptions(
        rate_limit="1000000000/minute",
        route_limits={"GET /invoices": ["100000000/hour", "10000000/day"]},
    )
    stacks = {
        name: Starlette(
            routes=routes,
            middleware=[Middleware(KeyguardMiddleware, manager, options, MemoryRateLimiter())],
        )
        for name, options in (
            ("keyguard+2policies", two_policies),
            ("keyguard+3policies", three_policies),
        )
    }

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
    slowapi = Limiter(
        key_func=lambda request: request.user.display_name,
        default_limits=["1000000000/minute"],
        headers_enabled=True,
    )
    starlette_slowapi = Starlette(
        routes=routes,
        middleware=[
            Middleware(AuthenticationMiddleware, backend=DictBackend()),
            Middleware(SlowAPIASGIMiddleware),
        ],
    )
    starlette_slowapi.state.limiter = slowapi
    common = [
        (b"host", b"api.example.com"),
        (b"user-agent", b"bench/1.0"),
        (b"accept", b"application/json"),
        (b"accept-encoding", b"gzip, deflate"),
    ]
    with_key = [*common, (b"authorization", f"Bearer {issued.token}".encode())]
    apps = {
        "bare": bare,
        "keyguard": keyguarded,
        "keyguard+limiter": full_stack,
        **stacks,
        "starlette": starlette_auth,
        "starlette+slowapi": starlette_slowapi,
    }
    return apps, common, with_key


#: The scope of every measured request, less its headers.
BASE_SCOPE: dict[str, Any] = {
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
REQUEST = {"type": "http.request", "body": b"", "more_body": False}


def samples() -> dict[str, list[float]]:
    """µs per request of every stack, one sample per interleaved round."""
    apps, common, with_key = _apps()
    statuses: list[int] = []
    headers_seen: list[list[tuple[bytes, bytes]]] = []

    async def receive() -> dict[str, Any]:
        return REQUEST

    checking = [True]

    async def send(message: dict[str, Any]) -> None:
        # Responses are kept only while checking them, never while timing: a list
        # that grows with every timed response would tax the stacks that build
        # more objects per response with ever slower garbage collections.
        if checking[0] and message["type"] == "http.response.start":
            statuses.append(message["status"])
            headers_seen.append(message["headers"])

    def caller(app: Any, headers: list[tuple[bytes, bytes]]) -> Any:
        async def call() -> None:
            await app({**BASE_SCOPE, "headers": headers}, receive, send)

        return call

    cases = (
        ("bare", common, 200, None),
        ("keyguard", with_key, 200, None),
        ("keyguard+limiter", with_key, 200, b"ratelimit"),
        ("keyguard+2policies", with_key, 200, b"ratelimit"),
        ("keyguard+3policies", with_key, 200, b"ratelimit"),
        ("starlette", with_key, 200, None),
        ("starlette+slowapi", with_key, 200, b"x-ratelimit-remaining"),
        ("keyguard-401", common, 401, None),
    )

    async def measure() -> dict[str, list[float]]:
        for name, headers, expected, limit_header in cases:
            statuses.clear()
            headers_seen.clear()
            await caller(apps[name.split("-")[0]], headers)()
            assert statuses == [expected], (name, statuses)
            if limit_header is not None:
                assert any(k == limit_header for k, _ in headers_seen[0]), (name, headers_seen)
        checking[0] = False
        return await time_async_interleaved(
            {name: caller(apps[name.split("-")[0]], headers) for name, headers, _, _ in cases}
        )

    return asyncio.run(measure())


def rows() -> Iterator[Row]:
    yield from _rows("middleware (ASGI)", samples())


def _rows(group: str, samples: dict[str, list[float]]) -> Iterator[Row]:
    results = {name: statistics.median(values) for name, values in samples.items()}
    added = {name: median_difference(values, samples["bare"]) for name, values in samples.items()}
    yield Row(group, "bare Starlette app, one route", results["bare"])
    yield Row(group, "keyguard middleware, valid key (memory store)", results["keyguard"])
    yield Row(group, "  + MemoryRateLimiter (full stack)", results["keyguard+limiter"])
    yield Row(group, "Starlette AuthenticationMiddleware, dict lookup", results["starlette"])
    yield Row(group, "  + slowapi ASGI middleware (limits, memory)", results["starlette+slowapi"])
    yield Row(group, "keyguard middleware, refusal (401, no key)", results["keyguard-401"])
    full = added["keyguard+limiter"]
    yield Row(group, "overhead: keyguard auth", added["keyguard"])
    yield Row(
        group,
        "overhead: keyguard auth + memory limiter",
        added["keyguard+limiter"],
        note="target <= 4",
    )
    for policies in (2, 3):
        yield Row(
            group,
            f"overhead: keyguard auth + memory limiter, {policies} policies",
            added[f"keyguard+{policies}policies"],
        )
        yield Row(
            group,
            f"ratio: {policies} policies / 1 policy (overhead)",
            added[f"keyguard+{policies}policies"] / full if full > 0 else float("inf"),
            unit="x",
            note="target <= 1.3",
        )
    yield Row(group, "overhead: Starlette auth (dict)", added["starlette"])
    yield Row(group, "overhead: Starlette auth (dict) + slowapi", added["starlette+slowapi"])
    yield Row(
        group,
        "ratio: (Starlette auth + slowapi) / (keyguard auth + limiter)",
        added["starlette+slowapi"] / full if full > 0 else float("inf"),
        unit="x",
        note="target >= 10",
    )
