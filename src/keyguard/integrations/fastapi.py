"""FastAPI integration: :class:`Keyguard`, a security dependency that returns the Principal.

Install with ``pip install 'keyguard-auth[fastapi]'``::

    keyguard = Keyguard(AsyncKeyManager(store), public_paths=["/health"])
    app = FastAPI()
    keyguard.init_app(app)

    @app.get("/invoices")
    async def invoices(principal: Principal = Security(keyguard, scopes=["billing:read"])): ...

``init_app`` adds :class:`~keyguard.asgi.KeyguardMiddleware` (which
authenticates every request, including the docs' own: ``/docs``, ``/redoc``
and ``/openapi.json`` are made public unless ``public_docs=False``) and a
handler that renders refusals as ``application/problem+json``. The dependency
then enforces the route's scopes (403 ``insufficient_scope``) and returns the
:class:`~keyguard.Principal`. Because it is a FastAPI security scheme
(HTTP bearer), the generated OpenAPI document lists it and Swagger UI's
*Authorize* button sends ``Authorization: Bearer <key>``.

Given ``authorization_server=`` (an :class:`keyguard.oauth.AuthorizationServer`
over an ``AsyncKeyManager``), ``init_app`` also serves its token endpoint
(``/oauth/token`` by default), its RFC 8414 metadata and its JWKS, in front of
the middleware: token requests need no key and no public path. Unless
``jwt_verifier=`` says otherwise, the API then accepts that server's tokens
(for its first audience).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

try:
    from fastapi import FastAPI, HTTPException, WebSocketException
    from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
    from fastapi.responses import Response as FastAPIResponse
    from fastapi.security import SecurityScopes
    from fastapi.security.base import SecurityBase
    from starlette.requests import HTTPConnection, Request
except ImportError as exc:  # pragma: no cover (the extra is installed in tests)
    raise ImportError(
        "keyguard.integrations.fastapi needs FastAPI: pip install 'keyguard-auth[fastapi]'"
    ) from exc

from .._http import Responder, Response
from .._manager import AsyncKeyManager
from .._options import MiddlewareOptions
from .._pipeline import MISSING_KEY, ShapedVerifier
from .._records import Principal
from .._types import ASGIApp
from .._verify import scope_denial
from ..asgi import PRINCIPAL_SCOPE_KEY, KeyguardMiddleware
from ..ratelimit import AsyncRateLimiter

if TYPE_CHECKING:
    from ..oauth import AuthorizationServer
    from ..oauth.asgi import AuthorizationServerApp

__all__ = ["Keyguard", "KeyguardHTTPException", "problem_response"]

_ABSENT = object()


class KeyguardHTTPException(HTTPException):
    """A refusal raised by the dependency; carries the rendered problem response.

    It is an ``HTTPException``, so even without :func:`problem_response`
    installed the status and headers (``WWW-Authenticate``, ``Cache-Control``)
    are right; the handler adds the ``application/problem+json`` body.
    """

    def __init__(self, response: Response, detail: str) -> None:
        headers = {k: v for k, v in response.headers if k not in ("content-type", "content-length")}
        super().__init__(status_code=response.status, detail=detail, headers=headers)
        self.response = response


async def problem_response(request: Request, exc: Exception) -> FastAPIResponse:
    """Exception handler rendering :class:`KeyguardHTTPException` as problem+json."""
    if not isinstance(exc, KeyguardHTTPException):  # pragma: no cover (registered for it only)
        raise exc
    response = exc.response
    return FastAPIResponse(
        response.body,
        status_code=response.status,
        headers={k: v for k, v in response.headers if k != "content-length"},
    )


def _verifier_of(server: AuthorizationServer) -> ShapedVerifier:
    """A verifier of ``server``'s own tokens, for the API beside it."""
    from ..oauth import JWTVerifier  # noqa: PLC0415 (the oauth extra, needed only here)

    return JWTVerifier(
        issuer=server.issuer,
        audience=server.audiences[0],
        keys=server.keys,
        clock=server.manager.clock,
    )


def _serve_authorization(app: ASGIApp, server: AuthorizationServer) -> AuthorizationServerApp:
    """Starlette's middleware factory: the authorization server in front of ``app``."""
    from ..oauth.asgi import AuthorizationServerApp  # noqa: PLC0415 (the oauth extra)

    return AuthorizationServerApp(server, app=app)


class Keyguard(SecurityBase):
    """API-key authentication for a FastAPI app: middleware installer and security dependency.

    Args:
        manager: The :class:`~keyguard.AsyncKeyManager`; needed by
            :meth:`init_app`, not by the dependency itself (which reads what
            the middleware put in the scope).
        limiter: An :class:`~keyguard.ratelimit.AsyncRateLimiter` for the
            options' rate limits (``MemoryRateLimiter``, ``RedisRateLimiter``).
        options: A :class:`~keyguard.MiddlewareOptions`, or its fields as
            keyword arguments.
        scheme_name: The security scheme's name in the OpenAPI document.
        description: Its description there.
        auto_error: When false, the dependency returns ``None`` for an
            anonymous request (on a public path or with ``optional=True``)
            instead of answering 401.
        public_docs: Let ``init_app`` make the app's docs and OpenAPI URLs
            public, so that Swagger UI loads before anyone has a key.
        jwt_verifier: Also accept OAuth access tokens: a
            :class:`keyguard.oauth.JWTVerifier`, passed to the middleware.
        authorization_server: Serve this
            :class:`keyguard.oauth.AuthorizationServer` (token endpoint,
            metadata, JWKS) in front of the middleware. Without
            ``jwt_verifier``, the API accepts its tokens: a ``JWTVerifier``
            for its issuer, its first audience and its keys.
    """

    def __init__(
        self,
        manager: AsyncKeyManager | None = None,
        *,
        limiter: AsyncRateLimiter | None = None,
        options: MiddlewareOptions | None = None,
        scheme_name: str = "APIKey",
        description: str | None = "An API key, sent as Authorization: Bearer <key>.",
        auto_error: bool = True,
        public_docs: bool = True,
        jwt_verifier: ShapedVerifier | None = None,
        authorization_server: AuthorizationServer | None = None,
        **kwargs: Any,
    ) -> None:
        if options is None:
            options = MiddlewareOptions(**kwargs)
        elif kwargs:
            raise TypeError("pass either options=MiddlewareOptions(...) or keyword options")
        self.manager = manager
        self.limiter = limiter
        self.options = options
        self.auto_error = auto_error
        self.public_docs = public_docs
        if jwt_verifier is None and authorization_server is not None:
            jwt_verifier = _verifier_of(authorization_server)
        self.jwt_verifier = jwt_verifier
        self.authorization_server = authorization_server
        self.responder = Responder(options.realm)
        self.model = HTTPBearerModel(bearerFormat="API key", description=description)
        self.scheme_name = scheme_name

    def __repr__(self) -> str:
        return f"Keyguard(scheme_name={self.scheme_name!r}, options={self.options!r})"

    def init_app(self, app: FastAPI) -> None:
        """Add the middleware and the problem+json handler to ``app``.

        Raises:
            TypeError: No ``AsyncKeyManager`` was given, or the authorization
                server's manager is not one.
        """
        if not isinstance(self.manager, AsyncKeyManager):
            raise TypeError("Keyguard.init_app needs Keyguard(manager=AsyncKeyManager(...))")
        options = self.options
        if self.public_docs:
            oauth2_redirect = app.swagger_ui_oauth2_redirect_url
            urls = (app.docs_url, app.redoc_url, app.openapi_url, oauth2_redirect)
            extra = [url for url in urls if url and url not in options.public_paths]
            if extra:
                options = replace(options, public_paths=(*options.public_paths, *extra))
        app.add_middleware(
            KeyguardMiddleware,
            manager=self.manager,
            options=options,
            limiter=self.limiter,
            jwt_verifier=self.jwt_verifier,
        )
        server = self.authorization_server
        if server is not None and not isinstance(server.manager, AsyncKeyManager):
            raise TypeError(
                "Keyguard(authorization_server=...) needs an AuthorizationServer over an "
                "AsyncKeyManager"
            )
        if server is not None:
            # Added last, so it runs first: token requests never reach the middleware.
            app.add_middleware(_serve_authorization, server=server)
        app.add_exception_handler(KeyguardHTTPException, problem_response)

    async def __call__(
        self, connection: HTTPConnection, security_scopes: SecurityScopes
    ) -> Principal | None:
        principal = connection.scope.get(PRINCIPAL_SCOPE_KEY, _ABSENT)
        if principal is _ABSENT:
            raise RuntimeError(
                "no keyguard middleware ran for this request: call Keyguard.init_app(app) "
                "or add keyguard.asgi.KeyguardMiddleware"
            )
        if principal is None:
            if not self.auto_error:
                return None
            denial = MISSING_KEY
        else:
            granted = cast(Principal, principal)
            found = scope_denial(granted.key_id, granted.scopes, security_scopes.scopes)
            if found is None:
                return granted
            denial = found
        if connection.scope["type"] == "websocket":
            raise WebSocketException(code=1008, reason=self.responder.close_reason(denial))
        raise KeyguardHTTPException(self.responder.render(denial), denial.detail)
