"""One authorization server and API, built as ASGI or as WSGI, for the OAuth tests."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote_plus, urlencode

from keyguard import AsyncKeyManager, KeyManager, MemoryRateLimiter
from keyguard.oauth import AuthorizationServer, KeySet, SigningKey
from keyguard.oauth.asgi import AuthorizationServerApp
from keyguard.oauth.wsgi import AuthorizationServerWSGIApp
from keyguard.stores import MemoryKeyStore
from keyguard.testing import FakeClock
from tests._http_drivers import Reply, Request, asgi_call, wsgi_call

ISSUER = "https://auth.example.com"
AUDIENCE = "https://api.example.com"
FORM = (b"content-type", b"application/x-www-form-urlencoded")

#: One key per test session: generating keys is the slow part.
KEYS = KeySet(SigningKey.generate("ES256"))

Call = Callable[[Request], Awaitable[Reply]]


def basic(client_id: str, secret: str) -> tuple[bytes, bytes]:
    """``Authorization: Basic`` as RFC 6749 §2.3.1 says: form-urlencode each, then Base64."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return (b"authorization", b"Basic " + base64.b64encode(raw))


def token_request(
    params: dict[str, str] | str | bytes,
    *,
    auth: tuple[bytes, bytes] | None = None,
    content_type: tuple[bytes, bytes] | None = FORM,
    **kwargs: Any,
) -> Request:
    if isinstance(params, dict):
        body = urlencode(params).encode()
    elif isinstance(params, str):
        body = params.encode()
    else:
        body = params
    headers = [h for h in (content_type, auth) if h is not None]
    return Request(method="POST", path="/oauth/token", headers=headers, body=body, **kwargs)


class OAuthHarness:
    """A store with clients, an authorization server over it, as ASGI or WSGI."""

    def __init__(
        self,
        kind: str,
        clock: FakeClock,
        *,
        store: MemoryKeyStore | None = None,
        keys: KeySet = KEYS,
        **server_options: Any,
    ) -> None:
        self.kind = kind
        self.clock = clock
        self.keys = keys
        self.store = MemoryKeyStore() if store is None else store
        self.manager = KeyManager(self.store, clock=clock)
        self.limiter = MemoryRateLimiter(clock=clock.monotonic)
        self.server_options = server_options

    def client(self, **kwargs: Any) -> tuple[str, str]:
        """A new client's (client_id, secret)."""
        issued = self.manager.create_client("acme", **kwargs)
        return issued.key_id, issued.token

    def server(self, manager: Any) -> AuthorizationServer:
        options: dict[str, Any] = {
            "issuer": ISSUER,
            "audiences": [AUDIENCE, "https://reports.example.com"],
            "limiter": self.limiter,
            **self.server_options,
        }
        return AuthorizationServer(manager, self.keys, **options)

    def build(self) -> Call:
        if self.kind == "asgi":
            app = AuthorizationServerApp(self.server(AsyncKeyManager(self.store, clock=self.clock)))
            return lambda request: asgi_call(app, request)
        wsgi = AuthorizationServerWSGIApp(self.server(KeyManager(self.store, clock=self.clock)))

        async def call(request: Request) -> Reply:
            return wsgi_call(wsgi, request)

        return call


def api(
    kind: str,
    store: MemoryKeyStore,
    clock: FakeClock,
    verifier: Any,
    options: Any = None,
    limiter: Any = None,
    **manager_options: Any,
) -> tuple[Call, Any]:
    """A protected app accepting keys and tokens, as ASGI or WSGI; and what it saw."""
    from keyguard import KeyguardMiddleware, KeyguardWSGIMiddleware
    from tests._middleware_apps import Seen, _asgi_app, _wsgi_app

    seen = Seen()
    if kind == "asgi":
        app = KeyguardMiddleware(
            _asgi_app(seen),
            AsyncKeyManager(store, clock=clock, **manager_options),
            options,
            limiter,
            jwt_verifier=verifier,
        )
        return (lambda request: asgi_call(app, request)), seen
    wsgi = KeyguardWSGIMiddleware(
        _wsgi_app(seen),
        KeyManager(store, clock=clock, **manager_options),
        options,
        limiter,
        jwt_verifier=verifier,
    )

    async def call(request: Request) -> Reply:
        return wsgi_call(wsgi, request)

    return call, seen


def bearer(token: str) -> Request:
    return Request(headers=[(b"authorization", f"Bearer {token}".encode())])
