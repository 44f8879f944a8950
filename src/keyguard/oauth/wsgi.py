"""The authorization server as a WSGI app: :class:`AuthorizationServerWSGIApp`.

The same flow as :mod:`keyguard.oauth.asgi`, driven synchronously over a
:class:`~keyguard.KeyManager`: no event loop, no threads. It serves the token
endpoint, the RFC 8414 metadata and the JWKS; any other request goes to
``app`` (404 without one).

The scheme and client address are read from ``wsgi.url_scheme`` and
``REMOTE_ADDR``: behind a proxy, wrap this app in one that sets them from
trusted proxy headers (werkzeug's ``ProxyFix``, waitress's ``trusted_proxy``).
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus

from .._drive import drive_sync
from .._manager import KeyManager
from .._types import StartResponse, WSGIApp, WSGIEnviron
from ..ratelimit import RateLimiter
from ._server import AuthorizationServer, OAuthResponse, TokenRequest, token_flow

__all__ = ["AuthorizationServerWSGIApp"]


class _BodyReader:
    __slots__ = ("_environ",)

    def __init__(self, environ: WSGIEnviron) -> None:
        self._environ = environ

    def read_form(self, limit: int) -> bytes | None:
        try:
            length = int(self._environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            return None
        # Without a length the stream may block or run past the body (PEP 3333).
        if length < 0 or length > limit:
            return None
        data: bytes = self._environ["wsgi.input"].read(length)
        return data


class AuthorizationServerWSGIApp:
    """Serve an :class:`~keyguard.oauth.AuthorizationServer` over WSGI.

    Args:
        server: The authorization server; its manager must be a
            :class:`~keyguard.KeyManager`, its limiter (if any) a
            :class:`~keyguard.RateLimiter`.
        app: Where every other request goes; None answers them 404.

    Raises:
        TypeError: The manager or limiter is an async one.
    """

    def __init__(self, server: AuthorizationServer, app: WSGIApp | None = None) -> None:
        if not isinstance(server.manager, KeyManager):
            raise TypeError(
                "the WSGI authorization server needs a KeyManager; an AsyncKeyManager is for "
                "keyguard.oauth.asgi.AuthorizationServerApp"
            )
        if server.limiter is not None and not isinstance(server.limiter, RateLimiter):
            raise TypeError("the WSGI authorization server needs a RateLimiter (with hit)")
        self.server = server
        self.app = app

    def __repr__(self) -> str:
        return f"AuthorizationServerWSGIApp({self.server!r}, app={self.app!r})"

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        server = self.server
        path: str = environ.get("PATH_INFO") or "/"
        method: str = environ.get("REQUEST_METHOD", "GET")
        response: OAuthResponse | None
        if path == server.token_path:
            request = TokenRequest(
                method,
                environ.get("wsgi.url_scheme", "http"),
                environ.get("REMOTE_ADDR") or None,
                environ.get("HTTP_AUTHORIZATION"),
                environ.get("CONTENT_TYPE") or None,
                environ.get("QUERY_STRING", ""),
            )
            response = drive_sync(
                token_flow(server, request), server.backends.with_body(_BodyReader(environ))
            )
        else:
            response = server.route(method, path)
            if response is None:
                if self.app is not None:
                    return self.app(environ, start_response)
                start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
                return [b"Not Found"]
        status = f"{response.status} {HTTPStatus(response.status).phrase}"
        start_response(status, list(response.headers))
        return [b"" if method == "HEAD" else response.body]
