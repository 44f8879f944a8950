"""The middleware and integrations as a user writes them; checked by mypy --strict."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Security
from flask import Flask, g
from starlette.applications import Starlette
from starlette.middleware import Middleware

from keyguard import (
    AsyncKeyManager,
    KeyguardMiddleware,
    KeyguardWSGIMiddleware,
    KeyManager,
    MemoryRateLimiter,
    MiddlewareOptions,
    Principal,
)
from keyguard.integrations import fastapi as kg_fastapi
from keyguard.integrations import flask as kg_flask
from keyguard.stores import MemoryKeyStore

options = MiddlewareOptions(public_paths=["/health"], public_prefixes=["/docs"], optional=False)

starlette_app = Starlette(
    middleware=[Middleware(KeyguardMiddleware, AsyncKeyManager(MemoryKeyStore()), options)]
)
starlette_app.add_middleware(
    KeyguardMiddleware, manager=AsyncKeyManager(MemoryKeyStore()), options=options
)

api = FastAPI()
keyguard = kg_fastapi.Keyguard(AsyncKeyManager(MemoryKeyStore()), public_paths=["/health"])
keyguard.init_app(api)


@api.get("/invoices")
async def invoices(
    principal: Annotated[Principal, Security(keyguard, scopes=["billing:read"])],
) -> str:
    return principal.owner


flask_app = Flask(__name__)
kg_flask.Keyguard(flask_app, KeyManager(MemoryKeyStore()), public_paths=["/health"])
flask_app.wsgi_app = KeyguardWSGIMiddleware(  # type: ignore[method-assign]
    flask_app.wsgi_app, KeyManager(MemoryKeyStore()), options
)


@flask_app.get("/invoices")
@kg_flask.require_scopes("billing:read")
def flask_invoices() -> dict[str, str]:
    principal: Principal | None = g.keyguard_principal
    current = kg_flask.current_principal()
    return {"owner": principal.owner if principal else "", "same": str(current is principal)}


limited = MiddlewareOptions(rate_limit="100/minute", route_limits={"POST /invoices": "10/minute"})
KeyguardMiddleware(
    starlette_app, AsyncKeyManager(MemoryKeyStore()), limited, limiter=MemoryRateLimiter()
)
KeyguardWSGIMiddleware(
    flask_app.wsgi_app, KeyManager(MemoryKeyStore()), limited, MemoryRateLimiter()
)
kg_fastapi.Keyguard(
    AsyncKeyManager(MemoryKeyStore()), limiter=MemoryRateLimiter(), rate_limit="5/s"
)
kg_flask.Keyguard(Flask("x"), KeyManager(MemoryKeyStore()), limiter=MemoryRateLimiter())

# The integrations' keyword options are typed: a misspelt or mistyped one is an error.
kg_fastapi.Keyguard(public_paths=["/health"], rate_limit="100/minute", optional=True)
kg_fastapi.Keyguard(public_path=["/health"])  # type: ignore[call-arg]
kg_flask.Keyguard(required_scopes=["read"], require_https=False)
kg_flask.Keyguard(require_https="no")  # type: ignore[arg-type]
