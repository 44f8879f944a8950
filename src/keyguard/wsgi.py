"""The WSGI middleware: :class:`KeyguardWSGIMiddleware`.

A plain WSGI middleware over the synchronous :class:`~keyguard.KeyManager`:
no event loop, no threads, no bridging. It drives the same request flow as
the ASGI middleware (see ``_request.py``)::

    app.wsgi_app = KeyguardWSGIMiddleware(app.wsgi_app, KeyManager(store))

The app finds the :class:`~keyguard.Principal` (or ``None`` on public paths and
anonymous optional requests) in ``environ["keyguard.principal"]``.

The scheme and client address are read from ``wsgi.url_scheme`` and
``REMOTE_ADDR``: behind a proxy, wrap this middleware in one that sets them
from trusted proxy headers (werkzeug's ``ProxyFix``, waitress's
``trusted_proxy``), or every key looks as if it came over plain HTTP.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

from ._denials import Denial
from ._drive import drive_sync
from ._limits import admitted_headers
from ._manager import KeyManager
from ._options import MiddlewareOptions
from ._pipeline import RequestView, ShapedVerifier, log_decision, pipeline_with, request_flow
from ._types import StartResponse, WSGIApp, WSGIEnviron
from .ratelimit import RateLimiter

__all__ = ["PRINCIPAL_ENVIRON_KEY", "KeyguardWSGIMiddleware"]

#: Where the principal (or ``None``) is put in the WSGI environ.
PRINCIPAL_ENVIRON_KEY = "keyguard.principal"


def _checked_limiter(limiter: object) -> RateLimiter | None:
    if limiter is not None and not isinstance(limiter, RateLimiter):
        raise TypeError(
            f"the WSGI middleware needs a RateLimiter (with hit), got {type(limiter).__name__}"
        )
    return limiter


def _adding_headers(start_response: StartResponse, headers: list[tuple[str, str]]) -> StartResponse:
    """``start_response``, adding ``headers`` to the response the app starts."""

    def start(status: str, app_headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return start_response(status, [*app_headers, *headers], exc_info)

    return start


class _BodyReader:
    """Reads a form body for the flow and puts it back for the app, as a fresh stream."""

    __slots__ = ("_environ",)

    def __init__(self, environ: WSGIEnviron) -> None:
        self._environ = environ

    def read_form(self, limit: int) -> bytes | None:
        environ = self._environ
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            return None
        # Without a length the stream may block or run past the body (PEP 3333).
        if length < 0 or length > limit:
            return None
        data: bytes = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(data)
        return data


class KeyguardWSGIMiddleware:
    """Authenticate every request to a WSGI app with an API key.

    Args:
        app: The WSGI app to protect.
        manager: A :class:`~keyguard.KeyManager` (an
            :class:`~keyguard.AsyncKeyManager` is for :mod:`keyguard.asgi`).
        options: A :class:`~keyguard.MiddlewareOptions`; default: all defaults.
        limiter: A :class:`~keyguard.RateLimiter` for the options' rate limits.
        jwt_verifier: Also accept OAuth access tokens (JWTs) on the same
            header: a :class:`keyguard.oauth.JWTVerifier` (see
            :class:`~keyguard.KeyguardMiddleware`).

    Raises:
        TypeError: ``manager`` is not a ``KeyManager``.
        ValueError: An option is invalid.
    """

    def __init__(
        self,
        app: WSGIApp,
        manager: KeyManager,
        options: MiddlewareOptions | None = None,
        limiter: RateLimiter | None = None,
        *,
        jwt_verifier: ShapedVerifier | None = None,
    ) -> None:
        if not isinstance(manager, KeyManager):
            raise TypeError(
                f"the WSGI middleware needs a KeyManager, got {type(manager).__name__}; "
                f"an AsyncKeyManager is for keyguard.asgi.KeyguardMiddleware"
            )
        self.app = app
        self.manager = manager
        self.limiter = _checked_limiter(limiter)
        self.pipeline = pipeline_with(manager, options, self.limiter, jwt_verifier)
        self.options = self.pipeline.options
        self.responder = self.pipeline.responder
        header = self.options.api_key_header
        self._api_key_key = "HTTP_" + header.upper().replace("-", "_") if header else None

    def __repr__(self) -> str:
        return f"KeyguardWSGIMiddleware(app={self.app!r}, options={self.options!r})"

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO") or "/"
        if self.options.is_public(path):
            environ[PRINCIPAL_ENVIRON_KEY] = None
            return self.app(environ, start_response)
        authorization: str | None = environ.get("HTTP_AUTHORIZATION")
        api_key: str | None = environ.get(self._api_key_key) if self._api_key_key else None
        content_type: str | None = None
        backends = self.pipeline.backends
        # The flow reads a body only when no credential header came (to find a key in it).
        if authorization is None and api_key is None:
            content_type = environ.get("CONTENT_TYPE") or None
            if content_type is not None:
                backends = backends.with_body(_BodyReader(environ))
        client: str | None = environ.get("REMOTE_ADDR") or None
        method: str = environ.get("REQUEST_METHOD", "GET")
        result, decision = drive_sync(
            request_flow(
                self.pipeline,
                RequestView(
                    method,
                    path,
                    environ.get("wsgi.url_scheme", "http"),
                    client,
                    authorization,
                    api_key,
                    environ.get("QUERY_STRING", ""),
                    content_type,
                ),
            ),
            backends,
        )
        log_decision(method, path, client, result)
        if isinstance(result, Denial):
            response = self.responder.render(result)
            start_response(response.status_line, response.headers)
            return [b"" if method == "HEAD" else response.body]
        environ[PRINCIPAL_ENVIRON_KEY] = result
        if decision is not None:
            start_response = _adding_headers(
                start_response, admitted_headers(decision, self.options.legacy_rate_limit_headers)
            )
        return self.app(environ, start_response)
