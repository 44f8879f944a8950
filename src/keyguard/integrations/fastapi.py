"""FastAPI integration: :class:`Keyguard`, route scopes checked after routing, and a security
dependency that returns the Principal.

Install with ``pip install 'keyguard-auth[fastapi]'``::

    keyguard = Keyguard(AsyncKeyManager(store), public_paths=["/health"])
    app = FastAPI()
    keyguard.init_app(app)

    @app.get("/invoices", openapi_extra=keyguard.requires("billing:read"))
    async def invoices(request: Request): ...

    @app.post("/invoices")
    async def create(principal: Principal = Security(keyguard, scopes=["billing:write"])): ...

``init_app`` adds :class:`~keyguard.asgi.KeyguardMiddleware` (which
authenticates every request, including the docs' own: ``/docs``, ``/redoc``
and ``/openapi.json`` are made public unless ``public_docs=False``), a
handler that renders refusals as ``application/problem+json``, and makes
:attr:`Keyguard.route_class` the app's route class.

A route's scopes are declared beside it in two ways:

- ``openapi_extra=keyguard.requires(...)``: the route's OpenAPI security
  requirement, which the route (a :class:`KeyguardRoute`) checks after
  routing, before its endpoint runs. FastAPI resolves nothing for it, so it
  costs about a microsecond; the endpoint finds the principal in
  ``request.scope["keyguard.principal"]`` (or ``request.user``).
- ``Security(keyguard, scopes=[...])``: a FastAPI dependency that enforces
  the scopes and returns the :class:`~keyguard.Principal` as a parameter;
  it costs what any dependency costs FastAPI to resolve.

Both refuse with 401 (no key) or 403 ``insufficient_scope``, and both put
the security requirement in the OpenAPI document, whose HTTP-bearer scheme
makes Swagger UI's *Authorize* button send ``Authorization: Bearer <key>``.

Given ``authorization_server=`` (an :class:`keyguard.oauth.AuthorizationServer`
over an ``AsyncKeyManager``), ``init_app`` also serves its token endpoint
(``/oauth/token`` by default), its RFC 8414 metadata and its JWKS, in front of
the middleware: token requests need no key and no public path. Unless
``jwt_verifier=`` says otherwise, the API then accepts that server's tokens
(for its first audience).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar, Unpack, cast

try:
    from fastapi import FastAPI, HTTPException, WebSocketException
    from fastapi.encoders import jsonable_encoder
    from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
    from fastapi.responses import Response as FastAPIResponse
    from fastapi.routing import APIRoute
    from fastapi.security import SecurityScopes
    from fastapi.security.base import SecurityBase
    from starlette.requests import HTTPConnection, Request
except ImportError as exc:  # pragma: no cover (the extra is installed in tests)
    raise ImportError(
        "keyguard.integrations.fastapi needs FastAPI: pip install 'keyguard-auth[fastapi]'"
    ) from exc

from .._denials import Denial
from .._http import Responder, Response
from .._manager import AsyncKeyManager
from .._options import MiddlewareOptions, MiddlewareOptionsFields
from .._pipeline import MISSING_KEY, ShapedVerifier
from .._records import Principal
from .._types import ASGIApp, Receive, Scope, Send
from .._verify import scope_denial
from ..asgi import PRINCIPAL_SCOPE_KEY, KeyguardMiddleware
from ..ratelimit import AsyncRateLimiter, Policy
from ._route_limits import (
    EXTENSION,
    DeclaredRouteLimits,
    checked_names,
    declaration,
    declared_json,
    flat_routes,
    method_tables,
    route_table,
)

if TYPE_CHECKING:
    from ..oauth import AuthorizationServer
    from ..oauth.asgi import AuthorizationServerApp

__all__ = ["Keyguard", "KeyguardHTTPException", "KeyguardRoute", "problem_response"]

_ABSENT = object()
_NO_MIDDLEWARE = (
    "no keyguard middleware ran for this request: call Keyguard.init_app(app) "
    "or add keyguard.asgi.KeyguardMiddleware"
)


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


def _denial_of(principal: object, required: frozenset[str] | list[str]) -> Denial | None:
    """Why the request with ``principal`` (the middleware's verdict) may not use a route
    that needs ``required``; None when it may."""
    if principal is _ABSENT:
        raise RuntimeError(_NO_MIDDLEWARE)
    if principal is None:
        return MISSING_KEY
    granted = cast(Principal, principal)
    return scope_denial(granted.key_id, granted.scopes, required) if required else None


class KeyguardRoute(APIRoute):
    """A route that checks its keyguard scopes after routing, before its endpoint runs.

    The scopes are the route's OpenAPI security requirement for keyguard's
    scheme, as :meth:`Keyguard.requires` writes it into ``openapi_extra``.
    FastAPI resolves nothing for them: the check reads the principal the
    middleware put in the scope. A route without them behaves as any
    ``APIRoute``. Use the class of a :class:`Keyguard` (its
    :attr:`~Keyguard.route_class`, which knows the scheme and the responses):
    ``init_app`` makes it the app's route class, and an ``APIRouter`` takes
    it as ``APIRouter(route_class=keyguard.route_class)``.
    """

    #: The Keyguard whose scheme and responses this route class uses.
    keyguard: ClassVar[Keyguard]
    #: The scopes the route needs (possibly none), or None when keyguard checks nothing here.
    keyguard_scopes: frozenset[str] | None

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if getattr(type(self), "keyguard", None) is None:
            raise TypeError("use the route class of a Keyguard: keyguard.route_class")
        super().__init__(path, endpoint, **kwargs)
        self.keyguard_scopes = self.keyguard.scopes_of(self.openapi_extra)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        required = self.keyguard_scopes
        if required is not None:
            denial = _denial_of(scope.get(PRINCIPAL_SCOPE_KEY, _ABSENT), required)
            if denial is not None:
                response = self.keyguard.responder.render(denial)
                message = {"type": "http.response.start", "status": response.status}
                await send({**message, "headers": response.raw_headers()})
                body = b"" if scope.get("method") == "HEAD" else response.body
                await send({"type": "http.response.body", "body": body})
                return
        await super().handle(scope, receive, send)


def _routes(routes: list[Any]) -> Iterator[Any]:
    """Every route of an app, those of included routers and mounts too."""
    for route in routes:
        yield route
        inner = getattr(route, "original_router", None) or route  # FastAPI >= 0.13x
        yield from _routes(list(getattr(inner, "routes", ())))


class _FastAPIMiddleware(KeyguardMiddleware):
    """The middleware of :meth:`Keyguard.init_app`; built by Starlette at the first request,
    when every route is declared, it refuses to serve when a route declares keyguard scopes
    that nothing would check, and counts the rate limits routes declare."""

    def __init__(
        self,
        app: ASGIApp,
        manager: AsyncKeyManager,
        options: MiddlewareOptions | None = None,
        limiter: AsyncRateLimiter | None = None,
        *,
        jwt_verifier: ShapedVerifier | None = None,
        keyguard: Keyguard,
        fastapi_app: FastAPI,
    ) -> None:
        super().__init__(app, manager, options, limiter, jwt_verifier=jwt_verifier)
        for route in _routes(list(fastapi_app.routes)):
            if isinstance(route, KeyguardRoute) and route.keyguard is keyguard:
                continue
            extra = getattr(route, "openapi_extra", None)
            if keyguard.scopes_of(extra) is not None:
                raise RuntimeError(
                    f"route {getattr(route, 'path', route)!r} declares keyguard scopes in "
                    f"openapi_extra, but nothing checks them: declare it after "
                    f"Keyguard.init_app(app), or in APIRouter(route_class=keyguard.route_class)"
                )
        self._count_declared_limits(fastapi_app)

    def _count_declared_limits(self, fastapi_app: FastAPI) -> None:
        entries = route_table(list(fastapi_app.routes))
        declared = [entry for entry in entries if entry[3]]
        if not declared:
            return
        limits = self.pipeline.limits
        if limits is None:
            methods, _, template, _ = declared[0]
            raise RuntimeError(
                f"route {' '.join([*sorted(methods or ()), template])!r} declares a rate "
                f"limit, but the middleware has no limiter to count it: "
                f"Keyguard(limiter=MemoryRateLimiter()) or another AsyncRateLimiter"
            )
        names = checked_names(entries, self.options)
        self.pipeline.limits = DeclaredRouteLimits(
            limits.options, limits._monotonic, method_tables(entries), names
        )


def _name_declared_limits(schema: dict[str, Any], app: FastAPI) -> None:
    """Show each declared rate limit in the OpenAPI document with the name the
    middleware counts it under (a string spec is named after its route)."""
    paths = schema.get("paths", {})
    for route in flat_routes(list(app.routes)):
        if not isinstance(getattr(route, "openapi_extra", None), Mapping):
            continue
        shown = declared_json(route)
        if shown is None:
            continue
        for method in route.methods or ():
            operation = paths.get(route.path_format, {}).get(method.lower())
            if operation is not None and EXTENSION in operation:
                operation[EXTENSION] = shown


class Keyguard(SecurityBase):
    """API-key authentication for a FastAPI app: middleware installer and security dependency.

    Args:
        manager: The :class:`~keyguard.AsyncKeyManager`; needed by
            :meth:`init_app`, not by the dependency itself (which reads what
            the middleware put in the scope).
        limiter: An :class:`~keyguard.ratelimit.AsyncRateLimiter` for the
            options' rate limits (``MemoryRateLimiter``, ``RedisRateLimiter``).
        options: A :class:`~keyguard.MiddlewareOptions`.
        **kwargs: Or the fields of ``MiddlewareOptions`` as keyword arguments
            (typed by :class:`~keyguard.MiddlewareOptionsFields`), not both.
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
        **kwargs: Unpack[MiddlewareOptionsFields],
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
        #: The route class that checks :meth:`requires` scopes after routing.
        self.route_class: type[KeyguardRoute] = type(
            "KeyguardRoute", (KeyguardRoute,), {"keyguard": self, "__module__": __name__}
        )

    def requires(
        self, *scopes: str, limit: Policy | str | Sequence[Policy | str] | None = None
    ) -> dict[str, Any]:
        """The ``openapi_extra`` of a route that needs a key with ``scopes`` (none: any key).

        ``@app.get("/invoices", openapi_extra=keyguard.requires("billing:read"))``: the
        route's OpenAPI security requirement, checked by the route after routing
        (see :class:`KeyguardRoute`). Merge it with other ``openapi_extra`` as a dict.
        ``limit=`` also declares the route's rate limits, as :meth:`limit` does.

        Raises:
            TypeError: A scope is not a string (``requires(["a"])`` for ``requires("a")``).
            ValueError: A scope is empty or has a space; a limit is malformed.
        """
        for scope in scopes:
            if not isinstance(scope, str):
                raise TypeError(f"requires takes scopes as arguments: got {scope!r}")
            if not scope or any(c.isspace() for c in scope):
                raise ValueError(f"a scope must be a non-empty string without spaces: {scope!r}")
        extra: dict[str, Any] = {"security": [{self.scheme_name: sorted(set(scopes))}]}
        if limit is not None:
            given = [limit] if isinstance(limit, Policy | str) else list(limit)
            extra.update(declaration(given))
        return extra

    def limit(self, *policies: Policy | str) -> dict[str, Any]:
        """The ``openapi_extra`` of a route limited to ``policies``, beside the key's own.

        ``@app.post("/invoices", openapi_extra=keyguard.limit("10/minute"))``: the
        middleware counts each request to the route against these policies and the
        key's (or the default) policy at once, all or nothing, before the app runs,
        as it counts ``route_limits``; the OpenAPI operation shows them as
        ``x-keyguard-rate-limits``. A string becomes a policy named after the route
        (``"POST-invoices"``); name one with ``Policy.parse("10/minute", name=...)``.
        Merge it with :meth:`requires` as dicts, or pass ``requires(..., limit=...)``.
        The middleware needs a limiter (``Keyguard(limiter=...)``): without one it
        refuses to start. A route needs no keyguard route class for its limits.

        Raises:
            TypeError: A policy is neither a ``Policy`` nor a string.
            ValueError: No policy, a malformed spec, or two policies of the same name.
        """
        return declaration(policies)

    def scopes_of(self, openapi_extra: Mapping[str, Any] | None) -> frozenset[str] | None:
        """The scopes ``openapi_extra`` requires of this scheme, or None when it names none.

        Raises:
            ValueError: The scheme is in several alternatives of the requirement (OpenAPI's
                "either ... or"), which keyguard does not check; use one requirement.
        """
        if not openapi_extra:
            return None
        found = [
            requirement[self.scheme_name]
            for requirement in openapi_extra.get("security", ())
            if isinstance(requirement, Mapping) and self.scheme_name in requirement
        ]
        if not found:
            return None
        if len(found) > 1:
            raise ValueError(
                f"openapi_extra names the security scheme {self.scheme_name!r} in "
                f"{len(found)} alternatives; give keyguard one requirement (Keyguard.requires)"
            )
        return frozenset(found[0])

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
            _FastAPIMiddleware,
            manager=self.manager,
            options=options,
            limiter=self.limiter,
            jwt_verifier=self.jwt_verifier,
            keyguard=self,
            fastapi_app=app,
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
        if app.router.route_class is APIRoute:  # a route class of the app's own is left alone
            app.router.route_class = self.route_class
        document = app.openapi

        def openapi() -> dict[str, Any]:
            """The app's OpenAPI document, with this scheme among its security schemes
            (FastAPI lists only the schemes of dependencies)."""
            schema = document()
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            if self.scheme_name not in schemes:
                scheme = jsonable_encoder(self.model, by_alias=True, exclude_none=True)
                schemes[self.scheme_name] = scheme
            _name_declared_limits(schema, app)
            return schema

        app.openapi = openapi  # type: ignore[method-assign]

    async def __call__(
        self, connection: HTTPConnection, security_scopes: SecurityScopes
    ) -> Principal | None:
        principal = connection.scope.get(PRINCIPAL_SCOPE_KEY, _ABSENT)
        if principal is None and not self.auto_error:
            return None
        denial = _denial_of(principal, security_scopes.scopes)
        if denial is None:
            return cast(Principal, principal)
        if connection.scope["type"] == "websocket":
            raise WebSocketException(code=1008, reason=self.responder.close_reason(denial))
        raise KeyguardHTTPException(self.responder.render(denial), denial.detail)
