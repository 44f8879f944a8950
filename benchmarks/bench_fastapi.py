"""What keyguard costs inside FastAPI, beside a bare route, a trivial dependency and a
hand-written ``HTTPBearer`` check.

Every endpoint returns the same prepared ``Response`` (no serialization) and is
the one route of its own app, so that no case pays for routes tried before its
own. Each app is called directly with a prepared scope (no HTTP client), timed
in interleaved rounds; an overhead is the median over rounds of the paired
difference with the bare route of a FastAPI app without keyguard.

- a trivial dependency (``Depends`` on an ``async def`` that returns 0):
  what FastAPI charges to resolve any dependency;
- ``HTTPBearer`` plus a dict lookup of the token: the cheapest hand-written
  check with FastAPI's own security class;
- keyguard's middleware alone, on a route without scopes;
- keyguard with the route's scopes declared beside it
  (``openapi_extra=keyguard.requires(...)``), checked after routing by the
  route class: the middleware and the check, no dependency;
- keyguard's dependency, ``Security(keyguard, scopes=[...])``, which hands the
  principal to the endpoint;
- route scopes with a rate limit declared beside them
  (``requires(..., limit=...)``), counted by the middleware before the app runs
  (an in-memory limiter, a quota never reached), beside the same route limited by
  ``route_limits`` instead: the difference is what matching the request to its
  route costs.
"""

# No "from __future__ import annotations": FastAPI must evaluate the local Depends(...).

import asyncio
import statistics
from collections.abc import Iterator
from typing import Annotated, Any

from _harness import Row, median_difference, time_async_interleaved
from bench_middleware import BASE_SCOPE, REQUEST

GROUP = "FastAPI"


def _apps() -> tuple[dict[str, Any], dict[str, list[tuple[bytes, bytes]]]]:
    from fastapi import Depends, FastAPI, HTTPException, Security
    from fastapi.responses import Response
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

    from keyguard import AsyncKeyManager, Principal
    from keyguard.integrations.fastapi import Keyguard
    from keyguard.ratelimit import MemoryRateLimiter
    from keyguard.stores import MemoryKeyStore

    reply = Response(b"[]", media_type="application/json")
    manager = AsyncKeyManager(MemoryKeyStore())
    issued = asyncio.run(manager.create("bench", scopes=["billing:read"]))
    tokens = {issued.token: "bench"}

    async def nothing() -> int:
        return 0

    bearer = HTTPBearer()

    async def owner(
        credentials: Annotated[HTTPAuthorizationCredentials, Depends(bearer)],
    ) -> str:
        found = tokens.get(credentials.credentials)
        if found is None:
            raise HTTPException(401)  # pragma: no cover (never refused while measured)
        return found

    # Each case is the one route of its own app: a router tries its routes in order, and
    # every route it tries first costs a match (about 1.4 µs), which is not keyguard's.
    def plain() -> FastAPI:
        return FastAPI()

    def guarded(keyguard: Keyguard) -> FastAPI:
        app = FastAPI()
        keyguard.init_app(app)
        return app

    apps: dict[str, Any] = {}

    apps["bare"] = plain()

    @apps["bare"].get("/bare")
    async def bare() -> Response:
        return reply

    apps["trivial"] = plain()

    @apps["trivial"].get("/trivial")
    async def trivial(value: Annotated[int, Depends(nothing)]) -> Response:
        return reply

    apps["bearer"] = plain()

    @apps["bearer"].get("/bearer")
    async def hand_written(name: Annotated[str, Depends(owner)]) -> Response:
        return reply

    keyguard = Keyguard(manager)
    apps["open"] = guarded(keyguard)

    @apps["open"].get("/open")
    async def open_route() -> Response:
        return reply

    apps["routed"] = guarded(keyguard)

    @apps["routed"].get("/routed", openapi_extra=keyguard.requires("billing:read"))
    async def routed() -> Response:
        return reply

    apps["security"] = guarded(keyguard)

    @apps["security"].get("/security")
    async def security(
        principal: Annotated[Principal, Security(keyguard, scopes=["billing:read"])],
    ) -> Response:
        return reply

    quota = "1000000000/second"  # never reached: every measured request is admitted
    listing = Keyguard(manager, limiter=MemoryRateLimiter(), route_limits={"GET /listed": quota})
    apps["listed"] = guarded(listing)

    @apps["listed"].get("/listed", openapi_extra=listing.requires("billing:read"))
    async def listed() -> Response:
        return reply

    declaring = Keyguard(manager, limiter=MemoryRateLimiter())
    apps["declared"] = guarded(declaring)

    @apps["declared"].get(
        "/declared", openapi_extra=declaring.requires("billing:read", limit=quota)
    )
    async def declared() -> Response:
        return reply

    common = [
        (b"host", b"api.example.com"),
        (b"user-agent", b"bench/1.0"),
        (b"accept", b"application/json"),
    ]
    with_key = [*common, (b"authorization", f"Bearer {issued.token}".encode())]
    return apps, {"common": common, "with_key": with_key}


#: Each case: its app's one route, and the headers sent.
CASES = (
    ("bare", "/bare", "common"),
    ("trivial", "/trivial", "common"),
    ("bearer", "/bearer", "with_key"),
    ("open", "/open", "with_key"),
    ("routed", "/routed", "with_key"),
    ("security", "/security", "with_key"),
    ("listed", "/listed", "with_key"),
    ("declared", "/declared", "with_key"),
)


def samples() -> dict[str, list[float]]:
    apps, headers = _apps()
    statuses: list[int] = []
    checking = [True]

    async def receive() -> dict[str, Any]:
        return REQUEST

    async def send(message: dict[str, Any]) -> None:
        if checking[0] and message["type"] == "http.response.start":
            statuses.append(message["status"])

    def caller(app: Any, path: str, sent: list[tuple[bytes, bytes]]) -> Any:
        async def call() -> None:
            await app(
                {**BASE_SCOPE, "path": path, "raw_path": path.encode(), "headers": sent},
                receive,
                send,
            )

        return call

    calls = {name: caller(apps[name], path, headers[sent]) for name, path, sent in CASES}

    async def measure() -> dict[str, list[float]]:
        for name, call in calls.items():
            statuses.clear()
            await call()
            assert statuses == [200], (name, statuses)
        checking[0] = False
        return await time_async_interleaved(calls)

    return asyncio.run(measure())


def rows() -> Iterator[Row]:
    measured = samples()
    bare = measured["bare"]
    added = {name: median_difference(values, bare) for name, values in measured.items()}
    yield Row(GROUP, "bare route", statistics.median(bare))
    yield Row(GROUP, "overhead: one trivial dependency", added["trivial"])
    yield Row(GROUP, "overhead: HTTPBearer + dict lookup (hand-written)", added["bearer"])
    yield Row(GROUP, "overhead: keyguard, the middleware alone (no scopes)", added["open"])
    yield Row(
        GROUP,
        "overhead: keyguard, route scopes (requires, checked after routing)",
        added["routed"],
        note="target <= 8",
    )
    yield Row(GROUP, "overhead: keyguard, Security(keyguard, scopes=...)", added["security"])
    yield Row(
        GROUP,
        "  Security(keyguard) minus one trivial dependency",
        median_difference(measured["security"], measured["trivial"]),
        note="target <= 4",
    )
    yield Row(
        GROUP, "overhead: keyguard, route scopes + route_limits (memory limiter)", added["listed"]
    )
    yield Row(
        GROUP,
        "overhead: keyguard, route scopes + declared limit (requires(limit=...))",
        added["declared"],
    )
    yield Row(
        GROUP,
        "  declared limit minus the same limit in route_limits",
        median_difference(measured["declared"], measured["listed"]),
    )
