"""The app ``keyguard demo`` serves: a small billing API on FastAPI, protected by keyguard.

It is the API of ``examples/fastapi_app.py``, shipped in the package so that the
demo runs from an installed wheel. Unlike the example, it reads no environment
and opens nothing when imported: :func:`create_app` is given its manager and
limiter, and closes them when the server shuts down.

- ``GET /invoices`` needs a key with the scope ``billing:read``
- ``POST /invoices`` needs ``billing:write``
- ``GET /health``, ``/docs`` and ``/openapi.json`` are public
- given an authorization server, ``POST /oauth/token`` (with its metadata and
  JWKS) exchanges a client's secret for an access token that the routes
  accept like a key, with the same scopes
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at
# runtime, and they name `keyguard`, a local variable of create_app().

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, Security
from pydantic import BaseModel, Field

from .._manager import AsyncKeyManager
from .._records import Principal
from ..integrations.fastapi import Keyguard
from ..ratelimit import AsyncRateLimiter

if TYPE_CHECKING:
    from ..oauth import AuthorizationServer

__all__ = ["READ_SCOPE", "WRITE_SCOPE", "create_app"]

READ_SCOPE = "billing:read"
WRITE_SCOPE = "billing:write"


class NewInvoice(BaseModel):
    customer: str = Field(min_length=1, max_length=200)
    amount_cents: int = Field(gt=0)


def create_app(
    manager: AsyncKeyManager,
    limiter: AsyncRateLimiter,
    *,
    rate_limit: str = "100/minute",
    authorization_server: "AuthorizationServer | None" = None,
) -> FastAPI:
    """The billing API over ``manager``, every key limited to ``rate_limit`` by ``limiter``;
    with ``authorization_server``, its token endpoint too, and its tokens accepted.

    The app's lifespan closes both when the server stops.
    """
    keyguard = Keyguard(
        manager,
        limiter=limiter,
        public_paths=("/health",),
        rate_limit=rate_limit,
        authorization_server=authorization_server,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await manager.aclose()
        await limiter.aclose()

    app = FastAPI(title="Billing API (keyguard demo)", lifespan=lifespan)
    keyguard.init_app(app)
    invoices: dict[str, list[dict[str, Any]]] = {}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/invoices")
    async def list_invoices(
        principal: Annotated[Principal, Security(keyguard, scopes=[READ_SCOPE])],
    ) -> dict[str, Any]:
        return {"owner": principal.owner, "invoices": invoices.get(principal.owner, [])}

    @app.post("/invoices", status_code=201)
    async def create_invoice(
        invoice: NewInvoice,
        principal: Annotated[Principal, Security(keyguard, scopes=[WRITE_SCOPE])],
    ) -> dict[str, Any]:
        book = invoices.setdefault(principal.owner, [])
        created = {
            "id": len(book) + 1,
            "customer": invoice.customer,
            "amount_cents": invoice.amount_cents,
            "created_by_key": principal.key_id,
        }
        book.append(created)
        return created

    return app
