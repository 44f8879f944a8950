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
- ``KEYGUARD_OAUTH_SIGNING_KEYS``: the token endpoint's signing keys, paths of
  PEM files (``keyguard oauth keygen --out PATH``) separated by commas; the
  first signs, all verify. Unset, a key is made at start (with a warning).
- ``KEYGUARD_OAUTH_ISSUER``: the issuer URL of the tokens, default
  ``http://127.0.0.1:8000``; also the audience the API accepts them for.

Both apps serve the OAuth 2.0 token endpoint (``POST /oauth/token``), its
metadata (``GET /.well-known/oauth-authorization-server``) and its JWKS
(``GET /oauth/jwks.json``), and accept its access tokens on every route with
the same scopes as keys. Make a client with
``keyguard clients create --owner acme --scope billing:read``.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from typing import Any

from keyguard import HmacSecretHasher, RedactKeys
from keyguard.oauth import AuthorizationServer, KeySet, SigningKey, load_signing_key
from keyguard.ratelimit import MemoryRateLimiter
from keyguard.ratelimit.redis import RedisRateLimiter
from keyguard.stores.cached import CachedKeyStore
from keyguard.stores.redis_broadcast import RedisRevocationBroadcast
from keyguard.stores.sql import SQLKeyStore, default_database_url

logger = logging.getLogger(__name__)

#: Paths served without a key.
PUBLIC_PATHS = ("/health",)
#: The scopes of the API, listed in the authorization server's metadata.
SCOPES = ("billing:read", "billing:write")
#: The issuer (and audience) of access tokens when ``KEYGUARD_OAUTH_ISSUER`` is unset.
DEFAULT_ISSUER = "http://127.0.0.1:8000"
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


def oauth_issuer() -> str:
    """``KEYGUARD_OAUTH_ISSUER``, default ``http://127.0.0.1:8000``."""
    return os.environ.get("KEYGUARD_OAUTH_ISSUER", "").strip() or DEFAULT_ISSUER


def signing_keys() -> KeySet:
    """The keys of ``KEYGUARD_OAUTH_SIGNING_KEYS`` (the first signs, all verify), or a key
    made now, with a warning: its tokens die with the process.

    Raises:
        RuntimeError: A named file cannot be read or holds no supported private key.
    """
    spec = os.environ.get("KEYGUARD_OAUTH_SIGNING_KEYS", "")
    paths = [path.strip() for path in spec.split(",") if path.strip()]
    if not paths:
        logger.warning(
            "KEYGUARD_OAUTH_SIGNING_KEYS is not set: access tokens are signed with a key made "
            "at start, so they will not survive a restart (nor verify in another process). "
            "Make a key file with: keyguard oauth keygen --out signing.pem"
        )
        return KeySet(SigningKey.generate())
    keys: list[SigningKey] = []
    for path in paths:
        try:
            keys.append(load_signing_key(path))
        except OSError as exc:
            raise RuntimeError(
                f"KEYGUARD_OAUTH_SIGNING_KEYS: cannot read {path}: {exc.strerror or exc}"
            ) from None
        except ValueError as exc:
            raise RuntimeError(f"KEYGUARD_OAUTH_SIGNING_KEYS: {exc}") from None
    return KeySet(keys[0], verify_only=keys[1:])


def authorization_server(manager: Any, limiter: Any, keys: KeySet) -> AuthorizationServer:
    """The token endpoint over the apps' key store: clients made with ``keyguard clients
    create`` get tokens for this API (the issuer is the audience too), limited by the
    apps' limiter (failed authentications per address, tokens per client)."""
    issuer = oauth_issuer()
    return AuthorizationServer(
        manager,
        keys,
        issuer=issuer,
        audiences=[issuer],
        limiter=limiter,
        scopes_supported=SCOPES,
    )


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
