"""The billing API on Flask, protected by keyguard.

Run it (from the repository root)::

    flask --app examples.flask_app run

- ``GET /invoices`` needs a key with the scope ``billing:read``
- ``POST /invoices`` needs ``billing:write``
- ``GET /health`` is public
- ``POST /oauth/token`` exchanges an OAuth client's secret for an access
  token, which the routes accept like a key, with the same scopes; the
  metadata and JWKS are beside it

Every key gets ``KEYGUARD_RATE_LIMIT`` (default ``100/minute``; kept in Redis
when ``KEYGUARD_REDIS_URL`` is set). The principal of each request is
``flask.g.keyguard_principal``. Make a key with
``keyguard keys create --owner acme --scope billing:read``; examples/README.md
has the whole walkthrough, OAuth clients included
(``KEYGUARD_OAUTH_SIGNING_KEYS``, ``KEYGUARD_OAUTH_ISSUER``: see ``_billing``; run
on port 5000, set ``KEYGUARD_OAUTH_ISSUER=http://127.0.0.1:5000`` so that the
metadata names this server's URLs).
"""

from __future__ import annotations

import atexit
from typing import Any

from flask import Flask, g, request

from examples import _billing
from keyguard import KeyManager
from keyguard.integrations.flask import Keyguard, require_scopes

_billing.redact_server_logs()
app = Flask(__name__)
# The configuration is read before anything is opened: a bad key file or pepper stops
# the app holding no connection.
signing_keys = _billing.signing_keys()
hasher = _billing.hasher()
manager = KeyManager(_billing.key_store(), hasher=hasher)
limiter = _billing.limiter()
Keyguard(
    app,
    manager,
    limiter=limiter,
    public_paths=_billing.PUBLIC_PATHS,
    rate_limit=_billing.rate_limit(),
    # Serves /oauth/token (and the metadata and JWKS); the routes accept its tokens.
    authorization_server=_billing.authorization_server(manager, limiter, signing_keys),
)
# Flask has no shutdown hook: at exit, write the last-used times still pending, then close
# the connections (atexit runs the last registered first).
atexit.register(limiter.close)
atexit.register(manager.close)
book = _billing.InvoiceBook()


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/invoices")
@require_scopes("billing:read")
def list_invoices() -> dict[str, Any]:
    owner = g.keyguard_principal.owner
    return {"owner": owner, "invoices": book.list(owner)}


@app.post("/invoices")
@require_scopes("billing:write")
def create_invoice() -> tuple[dict[str, Any], int]:
    body = request.get_json(silent=True)
    customer = body.get("customer") if isinstance(body, dict) else None
    amount = body.get("amount_cents") if isinstance(body, dict) else None
    if not isinstance(customer, str) or not customer or len(customer) > 200:
        return {"detail": "customer must be a non-empty string"}, 422
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        return {"detail": "amount_cents must be a positive whole number"}, 422
    principal = g.keyguard_principal
    return book.create(principal.owner, customer, amount, principal.key_id), 201
