"""What the two example apps share: configuration from the environment, and the invoices.

Both apps read the same variables, so that a key made with ``keyguard keys create``
works against either:

- ``KEYGUARD_DATABASE_URL``: the key store (default ``sqlite:///keyguard.db``, the
  file the CLI uses too); the table is created if it is missing.
- ``KEYGUARD_PEPPERS``: the server-side pepper(s) of the secret hashes, read by
  ``HmacSecretHasher.from_environment()`` as the CLI reads them.
- ``KEYGUARD_RATE_LIMIT``: requests per key, such as ``100/minute`` (the default).
- ``KEYGUARD_REDIS_URL``: when set, revocations made with the CLI reach the
  apps' lookup cache at once (Redis pub/sub), and the rate limit is kept in
  Redis, shared by every process (falling back to per-process limits while
  Redis is down).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from typing import Any

from keyguard import HmacSecretHasher, RedactKeys
from keyguard.ratelimit import MemoryRateLimiter
from keyguard.ratelimit.redis import RedisRateLimiter
from keyguard.stores.cached import CachedKeyStore
from keyguard.stores.redis_broadcast import RedisRevocationBroadcast
from keyguard.stores.sql import SQLKeyStore, default_database_url

#: Paths served without a key.
PUBLIC_PATHS = ("/health",)
#: The loggers on which servers log what a client sent: each request line, URL included
#: (the access logs; werkzeug's development server), an invalid request line (gunicorn's
#: error log, even at its default level), each request's ASGI scope, query string and path
#: included (uvicorn's trace log, ``uvicorn.asgi``, at ``--log-level trace``), an app's
#: exception and traceback (``uvicorn.error``), the path of a request whose app raised
#: (``waitress``).
SERVER_LOGGERS = (
    "uvicorn.access",
    "uvicorn.error",
    "uvicorn.asgi",
    "gunicorn.access",
    "gunicorn.error",
    "werkzeug",
    "waitress",
)


def redact_server_logs() -> None:
    """Add a :class:`~keyguard.RedactKeys` filter to the servers' loggers (once).

    keyguard refuses a key sent in the URL, but the server has logged the URL by then.
    A filter on a logger covers only the records logged on it, so each logger is named.
    """
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactKeys) for f in logger.filters):
            logger.addFilter(RedactKeys())


def key_store() -> CachedKeyStore:
    """The SQL key store named by the environment, behind a short-lived lookup cache."""
    store = SQLKeyStore(default_database_url())
    store.create_schema()
    return CachedKeyStore(store, broadcast=RedisRevocationBroadcast.from_environment())


def hasher() -> HmacSecretHasher:
    """The hasher the CLI uses: peppered from ``KEYGUARD_PEPPERS`` when it is set."""
    return HmacSecretHasher.from_environment()


def rate_limit() -> str:
    """``KEYGUARD_RATE_LIMIT``, default ``100/minute``."""
    return os.environ.get("KEYGUARD_RATE_LIMIT", "").strip() or "100/minute"


def limiter() -> Any:
    """A Redis limiter on ``KEYGUARD_REDIS_URL``, else one in this process's memory."""
    url = os.environ.get("KEYGUARD_REDIS_URL", "").strip()
    if not url:
        return MemoryRateLimiter()
    return RedisRateLimiter.from_url(url, on_backend_error="local")


class InvoiceBook:
    """Invoices per owner, in memory: the example's stand-in for a database."""

    def __init__(self) -> None:
        self._invoices: dict[str, list[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def list(self, owner: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._invoices.get(owner, []))

    def create(self, owner: str, customer: str, amount_cents: int, key_id: str) -> dict[str, Any]:
        with self._lock:
            invoice = {
                "id": next(self._ids),
                "customer": customer,
                "amount_cents": amount_cents,
                "created_by_key": key_id,
            }
            self._invoices.setdefault(owner, []).append(invoice)
            return invoice
