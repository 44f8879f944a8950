"""Rate limits declared beside FastAPI routes: counted by the middleware before the app runs,
all or nothing with the key's policy, shown in the OpenAPI document."""

import subprocess
import sys
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import APIRouter, FastAPI

from keyguard import AsyncKeyManager, IssuedKey, Policy
from keyguard.integrations.fastapi import Keyguard
from keyguard.ratelimit import MemoryRateLimiter
from keyguard.stores import MemoryKeyStore
from keyguard.testing import FakeClock
from tests._services import free_port, wait_until_listening

with warnings.catch_warnings():
    # Starlette 1.x asks for httpx2 in its test client; httpx is what is installed here.
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient


@pytest.fixture
def manager(clock: FakeClock) -> AsyncKeyManager:
    return AsyncKeyManager(MemoryKeyStore(), clock=clock)


@pytest.fixture
async def key(manager: AsyncKeyManager) -> IssuedKey:
    return await manager.create("acme", scopes=["billing:read"])


def build(manager: AsyncKeyManager, clock: FakeClock, **options: Any) -> tuple[FastAPI, Keyguard]:
    limiter = MemoryRateLimiter(clock=clock.monotonic)
    keyguard = Keyguard(manager, limiter=limiter, rate_limit="100/minute", **options)
    app = FastAPI()
    keyguard.init_app(app)

    @app.get("/invoices/export")
    async def export() -> str:
        return "export"

    @app.get("/invoices/{id}", openapi_extra=keyguard.requires("billing:read", limit="2/minute"))
    async def invoice(id: int) -> int:
        return id

    @app.post("/invoices", openapi_extra=keyguard.limit("1/minute", "5/hour"))
    async def create() -> str:
        return "created"

    @app.get("/health")
    async def health() -> str:
        return "ok"

    router = APIRouter(prefix="/reports")

    @router.get("/{name}", openapi_extra=keyguard.limit(Policy("reports", 1, 60)))
    async def report(name: str) -> str:
        return name

    app.include_router(router, prefix="/v1")
    return app, keyguard


async def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://api.test")


@pytest.mark.anyio
async def test_a_declared_limit_is_counted_with_the_key_policy_and_refuses_past_its_quota(
    manager: AsyncKeyManager, clock: FakeClock, key: IssuedKey
) -> None:
    app, _ = build(manager, clock)
    auth = {"authorization": f"Bearer {key.token}"}
    async with await client_for(app) as client:
        first = await client.get("/invoices/1", headers=auth)
        assert first.status_code == 200
        assert first.headers["ratelimit-policy"] == (
            '"default";q=100;w=60, "GET-invoices-id";q=2;w=60'
        )
        assert first.headers["ratelimit"] == '"default";r=99;t=1, "GET-invoices-id";r=1;t=30'
        assert (await client.get("/invoices/2", headers=auth)).status_code == 200
        refused = await client.get("/invoices/3", headers=auth)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "30"
        assert refused.headers["content-type"] == "application/problem+json"
        assert '"GET-invoices-id";r=0' in refused.headers["ratelimit"]
        # All or nothing: the refused request took nothing from the key's default budget.
        other = await client.get("/health", headers=auth)
        assert other.headers["ratelimit"] == '"default";r=97;t=2'
        # A route the router tries before the template is not counted against it.
        export = await client.get("/invoices/export", headers=auth)
        assert export.status_code == 200
        assert export.headers["ratelimit-policy"] == '"default";q=100;w=60'
        clock.advance(30)
        assert (await client.get("/invoices/4", headers=auth)).status_code == 200


@pytest.mark.anyio
async def test_several_policies_methods_and_included_routers(
    manager: AsyncKeyManager, clock: FakeClock, key: IssuedKey
) -> None:
    app, _ = build(manager, clock)
    auth = {"authorization": f"Bearer {key.token}"}
    async with await client_for(app) as client:
        created = await client.post("/invoices", headers=auth)
        assert created.status_code == 200
        assert created.headers["ratelimit-policy"] == (
            '"default";q=100;w=60, "POST-invoices";q=1;w=60, "POST-invoices-2";q=5;w=3600'
        )
        assert (await client.post("/invoices", headers=auth)).status_code == 429
        # The GET template takes GET only; another method's limit is not this one's.
        assert (await client.get("/invoices/1", headers=auth)).status_code == 200
        assert (await client.get("/v1/reports/a", headers=auth)).status_code == 200
        refused = await client.get("/v1/reports/b", headers=auth)
        assert refused.status_code == 429
        assert '"reports";r=0' in refused.headers["ratelimit"]
        # Not the path template: no route limit.
        assert (await client.get("/reports/a", headers=auth)).status_code == 404


@pytest.mark.anyio
async def test_root_path_is_stripped_before_the_route_is_matched(
    manager: AsyncKeyManager, clock: FakeClock, key: IssuedKey
) -> None:
    app, _ = build(manager, clock)
    transport = httpx.ASGITransport(app=app, root_path="/api")
    auth = {"authorization": f"Bearer {key.token}"}
    async with httpx.AsyncClient(transport=transport, base_url="https://api.test") as client:
        ok = await client.get("/api/invoices/1", headers=auth)
        assert ok.status_code == 200
        assert '"GET-invoices-id";q=2' in ok.headers["ratelimit-policy"]


def test_under_the_test_client_and_in_the_openapi_document(
    manager: AsyncKeyManager, clock: FakeClock
) -> None:
    app, _ = build(manager, clock)
    key = anyio.run(partial(manager.create, "acme", scopes=["billing:read"]))
    with TestClient(app, base_url="https://api.test") as client:
        auth = {"authorization": f"Bearer {key.token}"}
        assert [client.get("/invoices/7", headers=auth).status_code for _ in range(3)] == [
            200,
            200,
            429,
        ]
        paths = client.get("/openapi.json").json()["paths"]
    assert paths["/invoices/{id}"]["get"]["x-keyguard-rate-limits"] == [
        {"name": "GET-invoices-id", "quota": 2, "window": 60}
    ]
    assert paths["/invoices/{id}"]["get"]["security"] == [{"APIKey": ["billing:read"]}]
    assert paths["/invoices"]["post"]["x-keyguard-rate-limits"] == [
        {"name": "POST-invoices", "quota": 1, "window": 60},
        {"name": "POST-invoices-2", "quota": 5, "window": 3600},
    ]
    assert paths["/v1/reports/{name}"]["get"]["x-keyguard-rate-limits"] == [
        {"name": "reports", "quota": 1, "window": 60}
    ]
    assert "x-keyguard-rate-limits" not in paths["/invoices/export"]["get"]


@pytest.mark.anyio
async def test_a_declared_limit_and_route_limits_both_apply(
    manager: AsyncKeyManager, clock: FakeClock, key: IssuedKey
) -> None:
    app, _ = build(manager, clock, route_limits={"/invoices": "50/minute"})
    auth = {"authorization": f"Bearer {key.token}"}
    async with await client_for(app) as client:
        ok = await client.get("/invoices/1", headers=auth)
    assert ok.headers["ratelimit-policy"] == (
        '"default";q=100;w=60, "invoices";q=50;w=60, "GET-invoices-id";q=2;w=60'
    )


@pytest.mark.anyio
async def test_a_key_policy_named_like_a_declared_one_wins(
    manager: AsyncKeyManager, clock: FakeClock
) -> None:
    app, _ = build(manager, clock)
    own = await manager.create("acme", rate_limit=Policy("GET-invoices-id", 10, 60))
    async with await client_for(app) as client:
        ok = await client.get("/invoices/1", headers={"authorization": f"Bearer {own.token}"})
    assert ok.headers["ratelimit-policy"] == '"GET-invoices-id";q=10;w=60'


@pytest.mark.anyio
async def test_a_mounted_app_limits_count_under_its_prefix(
    manager: AsyncKeyManager, clock: FakeClock, key: IssuedKey
) -> None:
    keyguard = Keyguard(manager, limiter=MemoryRateLimiter(clock=clock.monotonic))
    app = FastAPI()
    keyguard.init_app(app)
    inner = FastAPI()

    @inner.get("/items/{id}", openapi_extra=keyguard.limit("1/minute"))
    async def item(id: str) -> str:
        return id

    app.mount("/v2", inner)

    @app.get("/v2/items/{id}")
    async def shadowed(id: str) -> str:  # pragma: no cover (the mount takes these paths)
        return id

    auth = {"authorization": f"Bearer {key.token}"}
    async with await client_for(app) as client:
        ok = await client.get("/v2/items/a", headers=auth)
        assert ok.headers["ratelimit-policy"] == '"GET-v2-items-id";q=1;w=60'
        assert (await client.get("/v2/items/b", headers=auth)).status_code == 429
        # Another path under the mount is the mount's, not the later route's: no limit.
        assert "ratelimit" not in (await client.get("/v2/other", headers=auth)).headers


def _serve(app: FastAPI) -> None:
    with TestClient(app, base_url="https://api.test") as client:
        client.get("/health")


def test_a_declared_limit_without_a_limiter_refuses_to_start(manager: AsyncKeyManager) -> None:
    keyguard = Keyguard(manager)
    app = FastAPI()
    keyguard.init_app(app)

    @app.get("/invoices", openapi_extra=keyguard.limit("10/minute"))
    async def invoices() -> str:  # pragma: no cover (never served)
        return "never"

    with pytest.raises(RuntimeError, match=r"'GET /invoices' declares a rate limit.*no limiter"):
        _serve(app)


@pytest.mark.parametrize(
    ("route_limits", "rate_limit", "policy", "message"),
    [
        pytest.param({}, Policy("shared", 1, 60), Policy("shared", 1, 60), "default", id="default"),
        pytest.param(
            {"GET /a": "1/minute"}, None, Policy("GET-a", 1, 60), "route_limits", id="route-limits"
        ),
        pytest.param({}, None, Policy("b", 2, 60), "both named 'b' but differ", id="differ"),
    ],
)
def test_declared_names_that_clash_refuse_to_start(
    manager: AsyncKeyManager,
    clock: FakeClock,
    route_limits: dict[str, str],
    rate_limit: Policy | None,
    policy: Policy,
    message: str,
) -> None:
    keyguard = Keyguard(
        manager,
        limiter=MemoryRateLimiter(clock=clock.monotonic),
        rate_limit=rate_limit,
        route_limits=route_limits,
    )
    app = FastAPI()
    keyguard.init_app(app)

    @app.get("/a", openapi_extra=keyguard.limit(policy))
    async def a() -> str:  # pragma: no cover (never served)
        return "a"

    @app.get("/b", openapi_extra=keyguard.limit(Policy("b", 1, 60)))
    async def b() -> str:  # pragma: no cover (never served)
        return "b"

    with pytest.raises(ValueError, match=message):
        _serve(app)


@pytest.mark.anyio
async def test_routes_declaring_the_same_policy_share_its_budget(
    manager: AsyncKeyManager, clock: FakeClock, key: IssuedKey
) -> None:
    keyguard = Keyguard(manager, limiter=MemoryRateLimiter(clock=clock.monotonic))
    app = FastAPI()
    keyguard.init_app(app)
    exports = Policy("exports", 1, 60)

    @app.get("/a", openapi_extra=keyguard.limit(exports))
    async def a() -> str:
        return "a"

    @app.get("/b", openapi_extra=keyguard.limit(exports))
    async def b() -> str:  # pragma: no cover (refused)
        return "b"

    auth = {"authorization": f"Bearer {key.token}"}
    async with await client_for(app) as client:
        assert (await client.get("/a", headers=auth)).status_code == 200
        assert (await client.get("/b", headers=auth)).status_code == 429


@pytest.mark.parametrize(
    ("policies", "error", "message"),
    [
        pytest.param((), ValueError, "at least one policy", id="none"),
        pytest.param(("10/fortnight",), ValueError, "route limit '10/fortnight'", id="bad-unit"),
        pytest.param(("0/minute",), ValueError, "route limit '0/minute'", id="zero"),
        pytest.param((10,), TypeError, "a Policy or a spec", id="not-a-spec"),
        pytest.param(
            (Policy("x", 1, 1), Policy("x", 2, 1)), ValueError, "share a name", id="same-name"
        ),
    ],
)
def test_a_bad_limit_fails_where_it_is_declared(
    manager: AsyncKeyManager, policies: tuple[Any, ...], error: type[Exception], message: str
) -> None:
    keyguard = Keyguard(manager)
    with pytest.raises(error, match=message):
        keyguard.limit(*policies)
    if policies:
        with pytest.raises(error, match=message):
            keyguard.requires("a", limit=list(policies))


@pytest.mark.slow
def test_a_declared_limit_under_uvicorn() -> None:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "tests.integrations.limited_app:app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_listening(port)
        with httpx.Client(base_url=base) as client:
            statuses = [client.get(f"/invoices/{i}").status_code for i in range(4)]
            refused = client.get("/invoices/9")
            free = client.get("/free/1")
            paths = client.get("/openapi.json").json()["paths"]
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout:
            process.stdout.close()
    assert statuses == [200, 200, 200, 429]
    assert refused.status_code == 429
    assert refused.headers["ratelimit-policy"] == (
        '"default";q=1000;w=60, "GET-invoices-id";q=3;w=3600'
    )
    assert int(refused.headers["retry-after"]) > 0
    assert free.status_code == 200
    assert free.headers["ratelimit-policy"] == '"default";q=1000;w=60'
    assert paths["/invoices/{id}"]["get"]["x-keyguard-rate-limits"] == [
        {"name": "GET-invoices-id", "quota": 3, "window": 3600}
    ]
