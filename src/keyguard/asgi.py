"""The ASGI middleware: :class:`KeyguardMiddleware`.

A pure ASGI middleware (no ``BaseHTTPMiddleware``, no framework import). It
reads the request's credentials, drives the shared request flow (see
``_request.py``) on the event loop, and either calls the app with the
principal in the scope or answers the refusal itself::

    app = KeyguardMiddleware(
        app, AsyncKeyManager(store), MiddlewareOptions(public_paths=["/health"])
    )

The app sees ``scope["user"]`` and ``scope["auth"]`` (the :class:`~keyguard.Principal`,
or :data:`~keyguard.ANONYMOUS` on public paths and anonymous optional
requests), which is what Starlette's ``request.user``, ``request.auth.scopes``
and ``requires()`` read, and ``scope["keyguard.principal"]`` (the principal or
``None``). ``lifespan`` and other scope types pass straight through. A refused
WebSocket is closed with code 1008 before it is accepted.
"""

from __future__ import annotations

from typing import Final

from ._asgi_io import BodyReader, adding_headers
from ._denials import Denial
from ._drive import drive_async, drive_sync
from ._limits import admitted_raw_headers
from ._manager import AsyncKeyManager
from ._options import MiddlewareOptions
from ._pipeline import (
    ANONYMOUS,
    RequestView,
    ShapedVerifier,
    log_decision,
    pipeline_with,
    request_flow,
)
from ._types import ASGIApp, Receive, Scope, Send
from .ratelimit import AsyncRateLimiter

__all__ = ["PRINCIPAL_SCOPE_KEY", "KeyguardMiddleware"]

#: Where the principal (or ``None``) is put in the ASGI scope.
PRINCIPAL_SCOPE_KEY: Final = "keyguard.principal"
_AUTHENTICATED_SCOPES: Final = frozenset({"http", "websocket"})


def _checked_limiter(limiter: object) -> AsyncRateLimiter | None:
    if limiter is not None and not isinstance(limiter, AsyncRateLimiter):
        raise TypeError(
            f"the ASGI middleware needs an AsyncRateLimiter (with ahit), got "
            f"{type(limiter).__name__}"
        )
    return limiter


class KeyguardMiddleware:
    """Authenticate every ``http`` and ``websocket`` request with an API key.

    Args:
        app: The ASGI app to protect.
        manager: An :class:`~keyguard.AsyncKeyManager` (a sync
            :class:`~keyguard.KeyManager` is for :mod:`keyguard.wsgi`).
        options: A :class:`~keyguard.MiddlewareOptions`; default: all defaults.
        limiter: An :class:`~keyguard.AsyncRateLimiter` for the options' rate limits.
        jwt_verifier: Also accept OAuth access tokens (JWTs) on the same
            header: a :class:`keyguard.oauth.JWTVerifier`. Tokens shaped like a
            JWT go to it, everything else to the key check; both end in the
            same principal, scopes, limits and refusals.

    Raises:
        TypeError: ``manager`` is not an ``AsyncKeyManager``.
        ValueError: An option is invalid.
    """

    def __init__(
        self,
        app: ASGIApp,
        manager: AsyncKeyManager,
        options: MiddlewareOptions | None = None,
        limiter: AsyncRateLimiter | None = None,
        *,
        jwt_verifier: ShapedVerifier | None = None,
    ) -> None:
        if not isinstance(manager, AsyncKeyManager):
            raise TypeError(
                f"the ASGI middleware needs an AsyncKeyManager, got {type(manager).__name__}; "
                f"a KeyManager is for keyguard.wsgi.KeyguardWSGIMiddleware"
            )
        self.app = app
        self.manager = manager
        self.limiter = _checked_limiter(limiter)
        self.pipeline = pipeline_with(manager, options, self.limiter, jwt_verifier)
        self.options = self.pipeline.options
        self.responder = self.pipeline.responder
        self._has_public = bool(self.options._public_exact or self.options._public_starts)
        header = self.options.api_key_header
        self._api_key_name = header.lower().encode("latin-1") if header else None
        #: The header names the request flow reads (api_key_name is never Authorization).
        self._wanted = frozenset(
            name for name in (b"authorization", b"content-type", self._api_key_name) if name
        )

    def __repr__(self) -> str:
        return f"KeyguardMiddleware(app={self.app!r}, options={self.options!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in _AUTHENTICATED_SCOPES:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
            path = path[len(root) :] or "/"
        if self._has_public and self.options.is_public(path):
            scope["user"] = scope["auth"] = ANONYMOUS
            scope[PRINCIPAL_SCOPE_KEY] = None
            await self.app(scope, receive, send)
            return
        authorization = api_key = content_type = None
        wanted, api_key_name = self._wanted, self._api_key_name
        # Most headers are none of the wanted ones, and cost one set lookup.
        for name, value in scope["headers"]:
            if name in wanted:
                if name == b"authorization":
                    authorization = value if authorization is None else authorization + b"," + value
                elif name == api_key_name:
                    api_key = value if api_key is None else api_key + b"," + value
                else:
                    content_type = value if content_type is None else content_type + b"," + value
        pipeline = self.pipeline
        backends = pipeline.backends
        reader = body_type = None
        # The flow reads a body only when no credential header came (to find a key in it).
        if (
            content_type is not None
            and authorization is None
            and api_key is None
            and kind == "http"
        ):
            reader = BodyReader(receive)
            backends = backends.with_body(reader)
            body_type = content_type.decode("latin-1")
        client = scope.get("client")
        host: str | None = client[0] if client else None
        query: bytes = scope.get("query_string", b"")
        method: str = scope.get("method", "WEBSOCKET")
        flow = request_flow(
            pipeline,
            RequestView(
                method,
                path,
                scope.get("scheme", "http"),
                host,
                None if authorization is None else authorization.decode("latin-1"),
                None if api_key is None else api_key.decode("latin-1"),
                query.decode("latin-1") if query else "",
                body_type,
            ),
        )
        if reader is None and pipeline.never_blocks:
            # Only in-memory backends: nothing to await, so no coroutine per step.
            result, decision = drive_sync(flow, backends)
        else:
            result, decision = await drive_async(flow, backends)
        log_decision(method, path, host, result)
        if isinstance(result, Denial):
            await self._refuse(kind, method, send, result)
            return
        scope["user"] = scope["auth"] = ANONYMOUS if result is None else result
        scope[PRINCIPAL_SCOPE_KEY] = result
        if reader is not None and reader.messages:
            receive = reader.replay
        if decision is not None and kind == "http":
            send = adding_headers(
                send, admitted_raw_headers(decision, self.options.legacy_rate_limit_headers)
            )
        await self.app(scope, receive, send)

    async def _refuse(self, kind: str, method: str, send: Send, denial: Denial) -> None:
        if kind == "websocket":
            reason = self.responder.close_reason(denial)
            await send({"type": "websocket.close", "code": 1008, "reason": reason})
            return
        response = self.responder.render(denial)
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": response.raw_headers(),
            }
        )
        body = b"" if method == "HEAD" else response.body
        await send({"type": "http.response.body", "body": body})
