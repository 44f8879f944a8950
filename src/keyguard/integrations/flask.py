"""Flask integration: the :class:`Keyguard` extension and the :func:`require_scopes` decorator.

Install with ``pip install 'keyguard-auth[flask]'``::

    app = Flask(__name__)
    Keyguard(app, KeyManager(store), public_paths=["/health"])

    @app.get("/invoices")
    @require_scopes("billing:read")
    def invoices():
        return {"owner": g.keyguard_principal.owner}

The extension wraps ``app.wsgi_app`` in :class:`~keyguard.wsgi.KeyguardWSGIMiddleware`,
so every request is authenticated before Flask routes it, with no event loop.
The principal of the request is ``flask.g.keyguard_principal`` (``None`` on
public paths and for anonymous requests with ``optional=True``), also returned
by :func:`current_principal`.

Given ``authorization_server=`` (an :class:`keyguard.oauth.AuthorizationServer`
over a ``KeyManager``), the extension also serves its token endpoint
(``/oauth/token`` by default), its RFC 8414 metadata and its JWKS, in front of
the middleware: token requests need no key. Unless ``jwt_verifier=`` says
otherwise, the API then accepts that server's tokens (for its first audience).

Proxy headers: apply werkzeug's ``ProxyFix`` *after* ``init_app``
(``app.wsgi_app = ProxyFix(app.wsgi_app, ...)``), so that it runs first and the
middleware sees the real scheme and client address.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, Unpack, cast

try:
    from flask import Flask, current_app, g, request
    from flask import Response as FlaskResponse
except ImportError as exc:  # pragma: no cover (the extra is installed in tests)
    raise ImportError(
        "keyguard.integrations.flask needs Flask: pip install 'keyguard-auth[flask]'"
    ) from exc

from .._denials import Denial
from .._http import Responder
from .._manager import KeyManager
from .._options import MiddlewareOptions, MiddlewareOptionsFields
from .._pipeline import MISSING_KEY, ShapedVerifier
from .._records import Principal
from .._verify import scope_denial
from ..ratelimit import RateLimiter
from ..wsgi import PRINCIPAL_ENVIRON_KEY, KeyguardWSGIMiddleware

if TYPE_CHECKING:
    from ..oauth import AuthorizationServer

__all__ = ["G_ATTRIBUTE", "Keyguard", "current_principal", "require_scopes"]

#: The attribute of ``flask.g`` that holds the request's principal.
G_ATTRIBUTE = "keyguard_principal"
_EXTENSION = "keyguard"
_ABSENT = object()

F = TypeVar("F", bound=Callable[..., Any])


class Keyguard:
    """The Flask extension.

    Args:
        app: The app; or call :meth:`init_app` later (application factories).
        manager: The :class:`~keyguard.KeyManager`.
        limiter: A :class:`~keyguard.ratelimit.RateLimiter` for the options'
            rate limits (``MemoryRateLimiter``, ``RedisRateLimiter``).
        options: A :class:`~keyguard.MiddlewareOptions`.
        **kwargs: Or the fields of ``MiddlewareOptions`` as keyword arguments
            (typed by :class:`~keyguard.MiddlewareOptionsFields`), not both.
        jwt_verifier: Also accept OAuth access tokens: a
            :class:`keyguard.oauth.JWTVerifier`, passed to the middleware.
        authorization_server: Serve this
            :class:`keyguard.oauth.AuthorizationServer` (token endpoint,
            metadata, JWKS) in front of the middleware. Without
            ``jwt_verifier``, the API accepts its tokens: a ``JWTVerifier``
            for its issuer, its first audience and its keys.

    Raises:
        TypeError: ``manager`` is not a ``KeyManager``, the authorization
            server's manager is not one, or options were given both ways.
    """

    def __init__(
        self,
        app: Flask | None = None,
        manager: KeyManager | None = None,
        *,
        limiter: RateLimiter | None = None,
        options: MiddlewareOptions | None = None,
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
        if jwt_verifier is None and authorization_server is not None:
            from ..oauth import JWTVerifier  # noqa: PLC0415 (the oauth extra, needed only here)

            jwt_verifier = JWTVerifier(
                issuer=authorization_server.issuer,
                audience=authorization_server.audiences[0],
                keys=authorization_server.keys,
                clock=authorization_server.manager.clock,
            )
        self.jwt_verifier = jwt_verifier
        self.authorization_server = authorization_server
        self.options = options
        self.responder = Responder(options.realm)
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return f"Keyguard(options={self.options!r})"

    def init_app(self, app: Flask) -> None:
        """Wrap ``app.wsgi_app`` in the middleware (and the authorization server, when
        given) and expose the principal on ``flask.g``."""
        if not isinstance(self.manager, KeyManager):
            raise TypeError("Keyguard needs manager=KeyManager(...) (the synchronous manager)")
        middleware = KeyguardWSGIMiddleware(
            app.wsgi_app,
            self.manager,
            options=self.options,
            limiter=self.limiter,
            jwt_verifier=self.jwt_verifier,
        )
        if self.authorization_server is None:
            app.wsgi_app = middleware  # type: ignore[method-assign]
        else:
            from ..oauth.wsgi import AuthorizationServerWSGIApp  # noqa: PLC0415 (oauth extra)

            # In front of the middleware: token requests never reach it.
            app.wsgi_app = AuthorizationServerWSGIApp(  # type: ignore[method-assign]
                self.authorization_server, app=middleware
            )
        app.extensions[_EXTENSION] = self
        app.before_request(_load_principal)


def _load_principal() -> None:
    setattr(g, G_ATTRIBUTE, request.environ.get(PRINCIPAL_ENVIRON_KEY))


def current_principal() -> Principal | None:
    """The principal of the current request, or ``None`` when it is anonymous."""
    principal = request.environ.get(PRINCIPAL_ENVIRON_KEY)
    return cast("Principal | None", principal)


def _refusal(required: tuple[str, ...]) -> FlaskResponse | None:
    principal = request.environ.get(PRINCIPAL_ENVIRON_KEY, _ABSENT)
    if principal is _ABSENT:
        raise RuntimeError(
            "no keyguard middleware ran for this request: use Keyguard(app, manager) "
            "or wrap app.wsgi_app in keyguard.wsgi.KeyguardWSGIMiddleware"
        )
    denial: Denial | None
    if principal is None:
        denial = MISSING_KEY
    else:
        granted = cast(Principal, principal)
        denial = scope_denial(granted.key_id, granted.scopes, required)
    if denial is None:
        return None
    extension = current_app.extensions.get(_EXTENSION)
    responder = extension.responder if isinstance(extension, Keyguard) else Responder("api")
    response = responder.render(denial)
    return FlaskResponse(response.body, status=response.status, headers=response.headers)


def require_scopes(*scopes: str) -> Callable[[F], F]:
    """Refuse the view with 403 ``insufficient_scope`` unless the key has every scope.

    An anonymous request (public path, ``optional=True``) gets 401. Works on
    sync and async views.

    Raises:
        TypeError: A scope is not a string (``@require_scopes(["a", "b"])``
            instead of ``@require_scopes("a", "b")``).
    """
    for scope in scopes:
        if not isinstance(scope, str):
            raise TypeError(f"require_scopes takes scopes as arguments: got {scope!r}")

    def decorator(view: F) -> F:
        if inspect.iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                refusal = _refusal(scopes)
                if refusal is not None:
                    return refusal
                return await view(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            refusal = _refusal(scopes)
            if refusal is not None:
                return refusal
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorator
