"""The configuration both middlewares share: :class:`MiddlewareOptions`.

One object, read by the ASGI middleware, the WSGI middleware and the framework
integrations alike, so that the two kinds of app can never drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field

__all__ = ["DEFAULT_QUERY_PARAM_NAMES", "MiddlewareOptions", "options_for"]

#: Query-string (and form-body) parameter names that are refused with 400,
#: because a key sent that way ends up in access logs, proxies and browser history.
DEFAULT_QUERY_PARAM_NAMES = ("api_key", "apikey", "key", "access_token", "token")

_TCHAR_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_REALM_RE = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{1,200}")


def _paths(name: str, paths: Collection[str]) -> tuple[str, ...]:
    if isinstance(paths, str):
        raise TypeError(f"{name} must be a collection of paths, not the single string {paths!r}")
    result = tuple(paths)
    for path in result:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"{name}: every path must start with '/', got {path!r}")
    return result


@dataclass(frozen=True, slots=True)
class MiddlewareOptions:
    """How the middleware treats requests; every field has a safe default.

    Args:
        realm: The ``realm`` of the ``WWW-Authenticate`` challenge; printable
            ASCII without ``"`` or ``\\``.
        public_paths: Paths served without a key, matched exactly
            (``"/health"``).
        public_prefixes: Path prefixes served without a key, matched on a
            segment boundary: ``"/docs"`` covers ``/docs`` and ``/docs/x`` but
            not ``/docsx``. A path with ``.`` or ``..`` segments is never public.
        optional: Let requests without any credential through as anonymous
            (no principal). A credential that is sent is still checked, and a
            bad one is still refused: it is never downgraded to anonymous.
        environment: Accept only keys of this environment (``"live"``); a key
            of another environment is refused before any lookup. Default: the
            key manager's ``environment``.
        required_scopes: Scopes every protected request needs (403 without);
            per-route scopes belong in the framework integration.
        require_https: Refuse a key sent over plain ``http``/``ws`` from a
            client that is not on this machine. It is a security issue to turn
            this off on a public network: the key crossed it in clear text.
            Behind a TLS-terminating proxy, make the server trust the proxy's
            ``X-Forwarded-Proto`` instead (see docs/middleware.md).
        api_key_header: Also accept the key in this header (``"X-API-Key"``);
            off by default. Sending it and ``Authorization`` together is a 400.
        query_param_names: Query-string and form-body parameters that are
            refused with 400 on protected paths (names compared
            case-insensitively). ``()`` turns the check off.
        max_form_bytes: A form body (``application/x-www-form-urlencoded``)
            sent without a credential header is inspected for a key only up
            to this size.

    Raises:
        ValueError: A value is malformed (the message says which).
        TypeError: A collection was given as a single string.
    """

    realm: str = "api"
    public_paths: Collection[str] = ()
    public_prefixes: Collection[str] = ()
    optional: bool = False
    environment: str | None = None
    required_scopes: Collection[str] = ()
    require_https: bool = True
    api_key_header: str | None = None
    query_param_names: Collection[str] = DEFAULT_QUERY_PARAM_NAMES
    max_form_bytes: int = 64 * 1024
    _public_exact: frozenset[str] = field(init=False, repr=False, compare=False)
    _public_starts: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _param_names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        if not isinstance(self.realm, str) or not _REALM_RE.fullmatch(self.realm):
            raise ValueError(
                f"realm must be 1 to 200 printable ASCII characters without '\"' or '\\', "
                f"got {self.realm!r}"
            )
        exact = _paths("public_paths", self.public_paths)
        prefixes = _paths("public_prefixes", self.public_prefixes)
        setattr_(self, "public_paths", exact)
        setattr_(self, "public_prefixes", prefixes)
        setattr_(
            self,
            "_public_exact",
            frozenset(exact) | {p.rstrip("/") or "/" for p in prefixes},
        )
        setattr_(self, "_public_starts", tuple(p if p.endswith("/") else p + "/" for p in prefixes))
        if isinstance(self.required_scopes, str):
            raise TypeError(
                f"required_scopes must be a collection of scopes, "
                f"not the single string {self.required_scopes!r}"
            )
        scopes = frozenset(self.required_scopes)
        for scope in scopes:
            if not isinstance(scope, str) or not scope or any(c.isspace() for c in scope):
                raise ValueError(
                    f"a scope must be a non-empty string without spaces, got {scope!r}"
                )
        setattr_(self, "required_scopes", scopes)
        header = self.api_key_header
        if header is not None:
            if not isinstance(header, str) or not _TCHAR_RE.fullmatch(header):
                raise ValueError(f"api_key_header must be an HTTP header name, got {header!r}")
            if header.lower() == "authorization":
                raise ValueError("api_key_header must not be Authorization, which is always read")
        if isinstance(self.query_param_names, str):
            raise TypeError(
                f"query_param_names must be a collection of names, "
                f"not the single string {self.query_param_names!r}"
            )
        names = tuple(self.query_param_names)
        for name in names:
            if not isinstance(name, str) or not name:
                raise ValueError(f"query_param_names: a name must be a non-empty string: {name!r}")
        setattr_(self, "query_param_names", names)
        setattr_(self, "_param_names", frozenset(n.lower() for n in names))
        if (
            isinstance(self.max_form_bytes, bool)
            or not isinstance(self.max_form_bytes, int)
            or self.max_form_bytes < 0
        ):
            raise ValueError(f"max_form_bytes must be a whole number >= 0: {self.max_form_bytes!r}")

    def is_public(self, path: str) -> bool:
        """Return whether ``path`` is served without a key."""
        if path in self._public_exact:
            return True
        if not path.startswith(self._public_starts):
            return False
        # "/docs/../admin" must not ride on the "/docs" prefix, whatever normalises it later.
        return not ("/./" in path or "/../" in path or path.endswith(("/.", "/..")))


def options_for(
    manager: object, options: MiddlewareOptions | None
) -> tuple[MiddlewareOptions, str | None]:
    """The options (default: all defaults) and the environment keys must be of."""
    if options is None:
        options = MiddlewareOptions()
    elif not isinstance(options, MiddlewareOptions):
        raise TypeError(f"options must be a MiddlewareOptions, not {type(options).__name__}")
    environment = options.environment or getattr(manager, "environment", None)
    key_format = getattr(manager, "key_format", None)
    if (
        environment is not None
        and key_format is not None
        and environment not in key_format.environments
    ):
        raise ValueError(f"environment {environment!r} is not one of {key_format.environments!r}")
    return options, environment
