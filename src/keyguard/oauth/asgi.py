"""The authorization server as an ASGI app: :class:`AuthorizationServerApp`.

A thin shell over :func:`~keyguard.oauth._server.token_flow`: it reads the
request, drives the flow with :func:`~keyguard._drive.drive_async` (the
client lookup and the limiter are awaited), and sends the response. It
serves the token endpoint, the RFC 8414 metadata and the JWKS; any other
request goes to ``app`` (404 without one), so it can sit in front of the
protected API::

    server = AuthorizationServer(manager, keys, issuer="https://api.example.com",
                                 audiences=["https://api.example.com"])
    app = AuthorizationServerApp(server, app=KeyguardMiddleware(api, manager,
                                                                 jwt_verifier=verifier))
"""

from __future__ import annotations

from .._asgi_io import read_body
from .._drive import drive_async, drive_sync, never_blocks
from .._manager import AsyncKeyManager
from .._types import ASGIApp, Receive, Scope, Send
from ..ratelimit import AsyncRateLimiter
from ._server import MAX_BODY, AuthorizationServer, OAuthResponse, TokenRequest, token_flow

__all__ = ["AuthorizationServerApp"]

_NOT_FOUND = OAuthResponse(
    404, [("content-type", "text/plain; charset=utf-8"), ("content-length", "9")], b"Not Found"
)


class _BodyReader:
    """Reads the body for the flow when it asks (the flow may refuse before it does)."""

    __slots__ = ("_receive",)

    def __init__(self, receive: Receive) -> None:
        self._receive = receive

    async def aread_form(self, limit: int) -> bytes | None:
        return await read_body(self._receive, limit)


class _ReadBody:
    """A body already read: the flow's ReadForm step then needs no await."""

    __slots__ = ("_body",)

    def __init__(self, body: bytes | None) -> None:
        self._body = body

    def read_form(self, limit: int) -> bytes | None:
        return self._body


class AuthorizationServerApp:
    """Serve an :class:`~keyguard.oauth.AuthorizationServer` over ASGI.

    Args:
        server: The authorization server; its manager must be an
            :class:`~keyguard.AsyncKeyManager`, its limiter (if any) an
            :class:`~keyguard.AsyncRateLimiter`.
        app: Where every other request goes; None answers them 404.

    Raises:
        TypeError: The manager or limiter is a synchronous one.
    """

    def __init__(self, server: AuthorizationServer, app: ASGIApp | None = None) -> None:
        if not isinstance(server.manager, AsyncKeyManager):
            raise TypeError(
                "the ASGI authorization server needs an AsyncKeyManager; a KeyManager is for "
                "keyguard.oauth.wsgi.AuthorizationServerWSGIApp"
            )
        if server.limiter is not None and not isinstance(server.limiter, AsyncRateLimiter):
            raise TypeError("the ASGI authorization server needs an AsyncRateLimiter (with ahit)")
        self.server = server
        self.app = app
        # In-memory backends and a fast hasher: nothing to await but the body.
        self._never_blocks = never_blocks(server.manager.store, server.limiter) and not (
            server.hasher.slow
        )

    def __repr__(self) -> str:
        return f"AuthorizationServerApp({self.server!r}, app={self.app!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = self.server
        if scope["type"] == "http":
            path: str = scope["path"]
            method: str = scope["method"]
            if path == server.token_path:
                response = await self._token(scope, receive)
            else:
                found = server.route(method, path)
                if found is None and self.app is not None:
                    await self.app(scope, receive, send)
                    return
                response = _NOT_FOUND if found is None else found
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": response.raw_headers(),
                }
            )
            await send(
                {"type": "http.response.body", "body": b"" if method == "HEAD" else response.body}
            )
            return
        if self.app is not None:
            await self.app(scope, receive, send)

    async def _token(self, scope: Scope, receive: Receive) -> OAuthResponse:
        authorization = content_type = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value if authorization is None else authorization + b"," + value
            elif name == b"content-type":
                content_type = value if content_type is None else content_type + b"," + value
        client = scope.get("client")
        query: bytes = scope.get("query_string", b"")
        request = TokenRequest(
            scope["method"],
            scope.get("scheme", "http"),
            client[0] if client else None,
            None if authorization is None else authorization.decode("latin-1"),
            None if content_type is None else content_type.decode("latin-1"),
            query.decode("latin-1"),
        )
        flow = token_flow(self.server, request)
        if not self._never_blocks:
            return await drive_async(flow, self.server.backends.with_body(_BodyReader(receive)))
        # In-memory backends: read the (bounded) body first, then decide without a
        # coroutine per step.
        body = await read_body(receive, MAX_BODY) if request.method == "POST" else None
        return drive_sync(flow, self.server.backends.with_body(_ReadBody(body)))
