"""The billing API on FastAPI, protected by keyguard.

Run it (from the repository root)::

    uvicorn examples.fastapi_app:app

- ``GET /invoices`` needs a key with the scope ``billing:read``
- ``POST /invoices`` needs ``billing:write``
- ``GET /health`` is public, and so are ``/docs`` and ``/openapi.json``
  (Swagger UI's *Authorize* button takes a key)
- ``POST /oauth/token`` exchanges an OAuth client's secret for an access
  token, which the routes accept like a key, with the same scopes; the
  metadata and JWKS are beside it

Every key gets ``KEYGUARD_RATE_LIMIT`` (default ``100/minute``; kept in Redis
when ``KEYGUARD_REDIS_URL`` is set). Make a key for it with
``keyguard keys create --owner acme --scope billing:read``; examples/README.md
has the whole walkthrough, OAuth clients included
(``KEYGUARD_OAUTH_SIGNING_KEYS``, ``KEYGUARD_OAUTH_ISSUER``: see ``_billing``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Request, Security
from pydantic import BaseModel, Field

from examples import _billing
from keyguard import AsyncKeyManager, Principal
from keyguard.integrations.fastapi import Keyguard

_billing.redact_server_logs()
# The configuration is read before anything is opened: a bad key file or pepper stops
# the app holding no connection.
signing_keys = _billing.signing_keys()
hasher = _billing.hasher()
manager = AsyncKeyManager(_billing.key_store(), hasher=hasher)
limiter = _billing.limiter()
keyguard = Keyguard(
    manager,
    limiter=limiter,
    public_paths=_billing.PUBLIC_PATHS,
    rate_limit=_billing.rate_limit(),
    # Serves /oauth/token (and the metadata and JWKS); the routes accept its tokens.
    authorization_server=_billing.authorization_server(manager, limiter, signing_keys),
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    # Writes the last-used times still pending, then closes the connections.
    await manager.aclose()
    await limiter.aclose()


app = FastAPI(title="Billing API (keyguard example)", lifespan=lifespan)
keyguard.init_app(app)
book = _billing.InvoiceBook()


class NewInvoice(BaseModel):
    customer: str = Field(min_length=1, max_length=200)
    amount_cents: int = Field(gt=0)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


# The route's scopes beside it, checked after routing (no dependency to resolve); the
# principal is request.user.
@app.get("/invoices", openapi_extra=keyguard.requires("billing:read"))
async def list_invoices(request: Request) -> dict[str, Any]:
    owner = request.user.owner
    return {"owner": owner, "invoices": book.list(owner)}


# A handler that takes the principal as a parameter: the security dependency.
@app.post("/invoices", status_code=201)
async def create_invoice(
    invoice: NewInvoice,
    principal: Annotated[Principal, Security(keyguard, scopes=["billing:write"])],
) -> dict[str, Any]:
    return book.create(principal.owner, invoice.customer, invoice.amount_cents, principal.key_id)
