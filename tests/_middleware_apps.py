"""Apps and a harness that build the same protected app as ASGI or as WSGI, for the tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from keyguard import (
    AsyncKeyManager,
    KeyguardMiddleware,
    KeyguardWSGIMiddleware,
    KeyManager,
    KeyRecord,
    MiddlewareOptions,
)
from keyguard.stores import MemoryKeyStore
from keyguard.testing import FakeClock
from tests._http_drivers import Reply, Request, asgi_call, wsgi_call

Call = Callable[[Request], Awaitable[Reply]]


class Seen:
    """What the protected app saw of the last request."""

    def __init__(self) -> None:
        self.principal: Any = "not called"
        self.user: Any = None
        self.body = b""


class BrokenStore(MemoryKeyStore):
    """A key store whose lookups fail the way a lost database connection does."""

    def get(self, key_id: str) -> KeyRecord | None:
        raise ConnectionRefusedError("connection to the database was lost")

    def touch(self, last_used: Mapping[str, datetime]) -> None:
        raise ConnectionRefusedError("connection to the database was lost")


class CountingStore(MemoryKeyStore):
    """The memory store, counting the last-used batches written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.touches: list[dict[str, datetime]] = []

    def touch(self, last_used: Mapping[str, datetime]) -> None:
        self.touches.append(dict(last_used))
        super().touch(last_used)


def _asgi_app(seen: Seen) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.principal = scope.get("keyguard.principal", "absent")
        seen.user = scope.get("user")
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen.body = body
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def _wsgi_app(seen: Seen) -> Any:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        seen.principal = environ.get("keyguard.principal", "absent")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        seen.body = environ["wsgi.input"].read(length) if length else b""
        start_response("200 OK", [("Content-Type", "text/plain"), ("x-app", "1")])
        return [b"ok"]

    return app


class Harness:
    def __init__(self, kind: str, clock: FakeClock) -> None:
        self.kind = kind
        self.clock = clock
        self.store = MemoryKeyStore()
        self.manager = KeyManager(self.store, clock=clock)
        self.seen = Seen()

    def key(self, **kwargs: Any) -> str:
        return self.manager.create("acme", **kwargs).token

    def build(
        self, options: MiddlewareOptions | None = None, store: Any = None, limiter: Any = None
    ) -> Call:
        store = self.store if store is None else store
        if self.kind == "asgi":
            asgi = KeyguardMiddleware(
                _asgi_app(self.seen), AsyncKeyManager(store, clock=self.clock), options, limiter
            )
            return lambda request: asgi_call(asgi, request)
        wsgi = KeyguardWSGIMiddleware(
            _wsgi_app(self.seen), KeyManager(store, clock=self.clock), options, limiter
        )

        async def call(request: Request) -> Reply:
            return wsgi_call(wsgi, request)

        return call


def with_key(token: str, **kwargs: Any) -> Request:
    return Request(headers=[(b"authorization", f"Bearer {token}".encode())], **kwargs)
