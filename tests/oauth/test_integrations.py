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
