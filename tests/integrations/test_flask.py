"""The Flask extension, the decorator and flask.g."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, g

from keyguard import AsyncKeyManager, KeyManager, MiddlewareOptions, Principal
from keyguard.integrations.flask import G_ATTRIBUTE, Keyguard, current_principal, require_scopes
from keyguard.stores import MemoryKeyStore
from keyguard.testing import FakeClock


@pytest.fixture
def manager(clock: FakeClock) -> KeyManager:
    return KeyManager(MemoryKeyStore(), clock=clock)


def make_app(extension: Keyguard | None = None) -> Flask:
    app = Flask(__name__)

    @app.get("/invoices")
    @require_scopes("billing:read")
    def invoices() -> dict[str, Any]:
        principal = getattr(g, G_ATTRIBUTE)
        assert isinstance(principal, Principal)
        return {"owner": principal.owner, "same": current_principal() is principal}

    @app.post("/invoices")
    @require_scopes("billing:read", "billing:write")
    async def create() -> tuple[dict[str, str], int]:
        return {"by": g.keyguard_principal.key_id}, 201

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"principal": g.keyguard_principal}

    @app.get("/report")
    @require_scopes()
    def report() -> str:
        return "any key will do"

    if extension is not None:
        extension.init_app(app)
    return app


def test_extension_decorator_and_g(manager: KeyManager) -> None:
    app = make_app(Keyguard(manager=manager, public_paths=["/health", "/report"]))
    reader = manager.create("acme", scopes=["billing:read"])
    writer = manager.create("acme", scopes=["billing:read", "billing:write"])
    client = app.test_client()
    read = {"Authorization": f"Bearer {reader.token}"}

    reply = client.get("/invoices", headers=read)
    assert (reply.status_code, reply.get_json()) == (200, {"owner": "acme", "same": True})

    refused = client.post("/invoices", headers=read)
    assert refused.status_code == 403
    assert refused.content_type == "application/problem+json"
    assert refused.headers["Cache-Control"] == "no-store"
    assert refused.headers["WWW-Authenticate"] == (
        'Bearer realm="api", error="insufficient_scope", scope="billing:write"'
    )
    assert refused.get_json()["scope"] == "billing:write"

    created = client.post("/invoices", headers={"Authorization": f"Bearer {writer.token}"})
    assert (created.status_code, created.get_json()) == (201, {"by": writer.key_id})

    assert client.get("/health").get_json() == {"principal": None}
    anonymous = client.get("/report")
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    # A public path is not authenticated at all, even when a key is sent.
    assert client.get("/report", headers=read).status_code == 401
    assert client.get("/invoices").status_code == 401


def test_require_scopes_with_no_scope_needs_any_key(manager: KeyManager) -> None:
    app = make_app(Keyguard(manager=manager, optional=True))
    token = manager.create("acme").token
    client = app.test_client()
    assert client.get("/report").status_code == 401
    assert client.get("/report", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_app_factory_and_realm(manager: KeyManager) -> None:
    extension = Keyguard(manager=manager, options=MiddlewareOptions(realm="billing"))
    app = make_app()
    extension.init_app(app)
    reply = app.test_client().get("/invoices")
    assert reply.headers["WWW-Authenticate"] == 'Bearer realm="billing"'
    assert app.extensions["keyguard"] is extension


def test_decorator_without_the_middleware_fails_loudly() -> None:
    app = make_app()
    app.testing = True
    with pytest.raises(RuntimeError, match="no keyguard middleware"):
        app.test_client().get("/invoices")


def test_extension_needs_the_sync_manager() -> None:
    with pytest.raises(TypeError, match="KeyManager"):
        Keyguard(Flask(__name__), AsyncKeyManager(MemoryKeyStore()))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="either"):
        Keyguard(options=MiddlewareOptions(), realm="x")


def test_require_scopes_wants_scopes_as_arguments() -> None:
    with pytest.raises(TypeError, match="arguments"):
        require_scopes(["billing:read"])  # type: ignore[arg-type]
