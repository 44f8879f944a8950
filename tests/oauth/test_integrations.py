"""Access tokens through the FastAPI and Flask integrations: route scopes, require_scopes."""

# No "from __future__ import annotations": FastAPI must evaluate the local Security(...).

from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Security
from flask import Flask, g

from keyguard import AsyncKeyManager, KeyManager, Principal
from keyguard.integrations import fastapi as kg_fastapi
from keyguard.integrations import flask as kg_flask
from keyguard.oauth import JWTVerifier
from keyguard.stores import MemoryKeyStore
from keyguard.testing import FakeClock
from tests.oauth._harness import AUDIENCE, ISSUER, KEYS


def _token(manager: Any, clock: FakeClock, scopes: str) -> str:
    client_id = (
        KeyManager(manager.store, clock=clock).create_client("acme", scopes=["a", "b"]).key_id
    )
    now = int(clock.now().timestamp())
    claims = {
        "iss": ISSUER, "sub": client_id, "client_id": client_id, "aud": AUDIENCE,
        "iat": now, "exp": now + 300, "jti": "j", "scope": scopes,
    }  # fmt: skip
    return KEYS.signing.sign(claims)


def _verifier(clock: FakeClock) -> JWTVerifier:
    return JWTVerifier(issuer=ISSUER, audience=AUDIENCE, keys=KEYS, clock=clock)


@pytest.mark.anyio
async def test_fastapi_security_scopes_with_a_token(clock: FakeClock) -> None:
    manager = AsyncKeyManager(MemoryKeyStore(), clock=clock)
    keyguard = kg_fastapi.Keyguard(manager, jwt_verifier=_verifier(clock))
    app = FastAPI()
    keyguard.init_app(app)

    @app.get("/a")
    async def route_a(principal: Annotated[Principal, Security(keyguard, scopes=["a"])]) -> Any:
        return {"method": principal.auth_method, "owner": principal.owner}

    @app.get("/b")
    async def route_b(principal: Annotated[Principal, Security(keyguard, scopes=["b"])]) -> Any:
        return {}  # pragma: no cover (the token lacks the scope)

    token = _token(manager, clock, "a")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://api.test") as client:
        headers = {"Authorization": f"Bearer {token}"}
        ok = await client.get("/a", headers=headers)
        assert ok.status_code == 200
        assert ok.json() == {"method": "oauth", "owner": "acme"}
        refused = await client.get("/b", headers=headers)
        assert refused.status_code == 403
        assert refused.json()["error"] == "insufficient_scope"
        bad = await client.get("/a", headers={"Authorization": f"Bearer {token[:-4]}"})
        assert bad.status_code == 401
        assert bad.json()["error"] == "invalid_token"


def test_flask_require_scopes_with_a_token(clock: FakeClock) -> None:
    manager = KeyManager(MemoryKeyStore(), clock=clock)
    app = Flask(__name__)

    @app.get("/a")
    @kg_flask.require_scopes("a")
    def route_a() -> dict[str, Any]:
        return {"method": g.keyguard_principal.auth_method}

    @app.get("/b")
    @kg_flask.require_scopes("b")
    def route_b() -> dict[str, Any]:  # pragma: no cover (the token lacks the scope)
        return {}

    kg_flask.Keyguard(app, manager, jwt_verifier=_verifier(clock))
    client = app.test_client()
    headers = {"Authorization": f"Bearer {_token(manager, clock, 'a')}"}
    ok = client.get("/a", headers=headers, base_url="https://api.test")
    assert ok.status_code == 200
    assert ok.json == {"method": "oauth"}
    refused = client.get("/b", headers=headers, base_url="https://api.test")
    assert refused.status_code == 403
    assert refused.json is not None
    assert refused.json["error"] == "insufficient_scope"


# -- the integrations serve an authorization server: authorization_server= -----------------


class _Served:
    """One app (FastAPI over httpx, or Flask's test client) behind one request method."""

    def __init__(self, framework: str, app: Any) -> None:
        self.framework = framework
        self.app = app

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, data: Any = None
    ) -> tuple[int, Any]:
        if self.framework == "fastapi":
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="https://api.test") as c:
                reply = await c.request(method, path, headers=headers, data=data)
                return reply.status_code, reply.json()
        answer = self.app.test_client().open(
            path, method=method, headers=headers, data=data, base_url="https://api.test"
        )
        return answer.status_code, answer.get_json()


def _served(framework: str, store: MemoryKeyStore, clock: FakeClock, **options: Any) -> _Served:
    """The framework's app with routes needing scope a and scope b, and the server mounted."""
    from keyguard.oauth import AuthorizationServer

    audiences = [AUDIENCE, "https://reports.example.com"]
    if framework == "fastapi":
        manager = AsyncKeyManager(store, clock=clock)
        server = AuthorizationServer(manager, KEYS, issuer=ISSUER, audiences=audiences)
        keyguard = kg_fastapi.Keyguard(manager, authorization_server=server, **options)
        api = FastAPI()
        keyguard.init_app(api)

        @api.get("/a")
        async def route_a(principal: Annotated[Principal, Security(keyguard, scopes=["a"])]) -> Any:
            return {"method": principal.auth_method, "owner": principal.owner}

        @api.get("/b")
        async def route_b(principal: Annotated[Principal, Security(keyguard, scopes=["b"])]) -> Any:
            return {}  # pragma: no cover (no token here has the scope)

        return _Served(framework, api)
    sync_manager = KeyManager(store, clock=clock)
    server = AuthorizationServer(sync_manager, KEYS, issuer=ISSUER, audiences=audiences)
    flask_app = Flask(__name__)

    @flask_app.get("/a")
    @kg_flask.require_scopes("a")
    def flask_a() -> dict[str, Any]:
        principal = g.keyguard_principal
        return {"method": principal.auth_method, "owner": principal.owner}

    @flask_app.get("/b")
    @kg_flask.require_scopes("b")
    def flask_b() -> dict[str, Any]:  # pragma: no cover (no token here has the scope)
        return {}

    kg_flask.Keyguard(flask_app, sync_manager, authorization_server=server, **options)
    return _Served(framework, flask_app)


FRAMEWORKS = [pytest.param("fastapi", id="fastapi"), pytest.param("flask", id="flask")]


def _basic(client_id: str, secret: str) -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


@pytest.mark.anyio
@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_the_integration_serves_the_token_endpoint_and_accepts_its_tokens(
    framework: str, clock: FakeClock
) -> None:
    store = MemoryKeyStore()
    issued = KeyManager(store, clock=clock).create_client("acme", scopes=["a", "b"])
    served = _served(framework, store, clock)
    # No public path was configured: the token endpoint is in front of the middleware.
    status, body = await served.request(
        "POST",
        "/oauth/token",
        headers=_basic(issued.key_id, issued.token),
        data={"grant_type": "client_credentials", "scope": "a"},
    )
    assert status == 200, body
    assert (body["token_type"], body["scope"]) == ("Bearer", "a")
    token = body["access_token"]
    assert token.count(".") == 2

    assert await served.request("GET", "/a", {"Authorization": f"Bearer {token}"}) == (
        200,
        {"method": "oauth", "owner": "acme"},
    )
    status, body = await served.request("GET", "/b", {"Authorization": f"Bearer {token}"})
    assert (status, body["error"]) == (403, "insufficient_scope")
    # The client secret itself is no bearer token.
    status, body = await served.request("GET", "/a", {"Authorization": f"Bearer {issued.token}"})
    assert (status, body["error"]) == (401, "invalid_token")

    status, metadata = await served.request("GET", "/.well-known/oauth-authorization-server")
    assert status == 200
    assert metadata["token_endpoint"] == f"{ISSUER}/oauth/token"
    assert metadata["jwks_uri"] == f"{ISSUER}/oauth/jwks.json"
    status, jwks = await served.request("GET", "/oauth/jwks.json")
    assert status == 200
    assert [key["kid"] for key in jwks["keys"]] == [KEYS.signing.kid]


@pytest.mark.anyio
@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_a_jwt_verifier_given_with_the_server_is_the_one_used(
    framework: str, clock: FakeClock
) -> None:
    """The default verifier is for the server's first audience; an explicit one replaces it."""
    store = MemoryKeyStore()
    issued = KeyManager(store, clock=clock).create_client("acme", scopes=["a"])
    reports = JWTVerifier(
        issuer=ISSUER, audience="https://reports.example.com", keys=KEYS, clock=clock
    )
    served = _served(framework, store, clock, jwt_verifier=reports)
    tokens = {}
    for resource in (AUDIENCE, "https://reports.example.com"):
        status, body = await served.request(
            "POST",
            "/oauth/token",
            headers=_basic(issued.key_id, issued.token),
            data={"grant_type": "client_credentials", "resource": resource},
        )
        assert status == 200, body
        tokens[resource] = body["access_token"]
    for resource, expected in ((AUDIENCE, 401), ("https://reports.example.com", 200)):
        headers = {"Authorization": f"Bearer {tokens[resource]}"}
        assert (await served.request("GET", "/a", headers))[0] == expected, resource


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_server_over_the_other_kind_of_manager_is_refused(framework: str) -> None:
    from keyguard.oauth import AuthorizationServer

    store = MemoryKeyStore()
    if framework == "fastapi":
        wrong = AuthorizationServer(KeyManager(store), KEYS, issuer=ISSUER, audiences=AUDIENCE)
        keyguard = kg_fastapi.Keyguard(AsyncKeyManager(store), authorization_server=wrong)
        with pytest.raises(TypeError, match="AsyncKeyManager"):
            keyguard.init_app(FastAPI())
    else:
        wrong = AuthorizationServer(AsyncKeyManager(store), KEYS, issuer=ISSUER, audiences=AUDIENCE)
        with pytest.raises(TypeError, match="KeyManager"):
            kg_flask.Keyguard(Flask(__name__), KeyManager(store), authorization_server=wrong)
