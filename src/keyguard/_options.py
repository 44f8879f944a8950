"""The configuration both middlewares share: :class:`MiddlewareOptions`.

One object, read by the ASGI middleware, the WSGI middleware and the framework
integrations alike, so that the two kinds of app can never drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypedDict

from .ratelimit._policy import Policy

__all__ = [
    "DEFAULT_FAILURE_LIMIT",
    "DEFAULT_QUERY_PARAM_NAMES",
    "MiddlewareOptions",
    "MiddlewareOptionsFields",
    "checked_param_names",
    "options_for",
]

#: Query-string (and form-body) parameter names that are refused with 400,
#: because a key sent that way ends up in access logs, proxies and browser history.
DEFAULT_QUERY_PARAM_NAMES = ("api_key", "apikey", "key", "access_token", "token")

_TCHAR_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_ROUTE_NAME_RE = re.compile(r"[^A-Za-z0-9_.:-]+")
#: Failed authentications allowed per client address, before 429.
DEFAULT_FAILURE_LIMIT = "30/minute"
_REALM_RE = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{1,200}")


def checked_param_names(names: Collection[str]) -> tuple[str, ...]:
    """``query_param_names`` as a tuple, once checked (the options' and ``RedactKeys``').

    Raises:
        TypeError: ``names`` is a single string.
        ValueError: A name is not a non-empty string.
    """
    if isinstance(names, str):
        raise TypeError(
            f"query_param_names must be a collection of names, not the single string {names!r}"
        )
    checked = tuple(names)
    for name in checked:
        if not isinstance(name, str) or not name:
            raise ValueError(f"query_param_names: a name must be a non-empty string: {name!r}")
    return checked


def _policy(option: str, given: Policy | str | None, name: str) -> Policy | None:
    if given is None or isinstance(given, Policy):
        return given
    if isinstance(given, str):
        try:
            return Policy.parse(given, name=name)
        except ValueError as exc:
            raise ValueError(f"{option}: {exc}") from None
    raise TypeError(f"{option} must be a Policy or a spec such as '100/minute', got {given!r}")


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
        rate_limit: The policy every key gets, such as ``"100/minute"`` or a
            :class:`~keyguard.Policy` (a string becomes a policy named
            ``"default"``). A key's own policy (``KeyRecord.rate_limit``)
            replaces it. Applies only when the middleware has a limiter.
        route_limits: Extra policies per route, on top of the key's:
            ``{"POST /invoices": "10/minute", "/reports": Policy(...)}``. A
            route is ``[METHOD ]/path``, matched like ``public_prefixes``; the
            longest match wins. A string becomes a policy named after the
            route (``"POST-invoices"``).
        failure_limit: The stricter policy for failed authentications per
            client address (brute-force defence): once an address has used
            it up, its requests with a key are refused with 429 until it
            recovers, without being checked. ``None`` turns it off. Clients
            behind one NAT share an address, and so this budget.
        legacy_rate_limit_headers: Also send ``X-RateLimit-Limit``,
            ``-Remaining`` and ``-Reset``.

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
    rate_limit: Policy | str | None = None
    route_limits: Mapping[str, Policy | str | Sequence[Policy | str]] = field(default_factory=dict)
    failure_limit: Policy | str | None = DEFAULT_FAILURE_LIMIT
    legacy_rate_limit_headers: bool = False
    _public_exact: frozenset[str] = field(init=False, repr=False, compare=False)
    _public_starts: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _param_names: frozenset[str] = field(init=False, repr=False, compare=False)
    _default_policy: Policy | None = field(init=False, repr=False, compare=False)
    _failure_policy: Policy | None = field(init=False, repr=False, compare=False)
    _routes: tuple[tuple[str | None, str, tuple[Policy, ...]], ...] = field(
        init=False, repr=False, compare=False
    )

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
        names = checked_param_names(self.query_param_names)
        setattr_(self, "query_param_names", names)
        setattr_(self, "_param_names", frozenset(n.lower() for n in names))
        if (
            isinstance(self.max_form_bytes, bool)
            or not isinstance(self.max_form_bytes, int)
            or self.max_form_bytes < 0
        ):
            raise ValueError(f"max_form_bytes must be a whole number >= 0: {self.max_form_bytes!r}")
        self._set_rate_limits()

    def _set_rate_limits(self) -> None:
        setattr_ = object.__setattr__
        default = _policy("rate_limit", self.rate_limit, "default")
        failure = _policy("failure_limit", self.failure_limit, "auth-failures")
        setattr_(self, "_default_policy", default)
        setattr_(self, "_failure_policy", failure)
        if not isinstance(self.route_limits, Mapping):
            raise TypeError("route_limits must be a mapping of '[METHOD ]/path' to policies")
        routes = []
        for route, given in self.route_limits.items():
            method, _, path = route.rpartition(" ")
            if not path.startswith("/") or (method and not _TCHAR_RE.fullmatch(method)):
                raise ValueError(f"route_limits: a route is '[METHOD ]/path', got {route!r}")
            name = _ROUTE_NAME_RE.sub("-", route).strip("-")[:64] or "root"
            items = [given] if isinstance(given, Policy | str) else list(given)
            policies = tuple(
                _policy("route_limits", item, name if i == 0 else f"{name}-{i + 1}")
                for i, item in enumerate(items)
            )
            names = [p.name for p in policies if p is not None]
            if default is not None and default.name in names:
                raise ValueError(
                    f"route_limits: the policy of {route!r} is named {default.name!r} like "
                    f"the default policy; give it its own name"
                )
            if len(set(names)) != len(names):
                raise ValueError(f"route_limits: the policies of {route!r} share a name")
            routes.append((method.upper() or None, path, policies))
        # Longest path first, and a route with a method before the same path without one.
        routes.sort(key=lambda r: (-len(r[1]), r[0] is None))
        setattr_(self, "_routes", tuple(routes))
        setattr_(self, "route_limits", dict(self.route_limits))

    def route_policies(self, method: str, path: str) -> tuple[Policy, ...]:
        """The route policies for a request, from the longest matching route."""
        for route_method, route_path, policies in self._routes:
            if (route_method is None or route_method == method) and (
                path == route_path
                or path.startswith(route_path if route_path.endswith("/") else route_path + "/")
            ):
                return policies
        return ()

    def is_public(self, path: str) -> bool:
        """Return whether ``path`` is served without a key."""
        if path in self._public_exact:
            return True
        if not path.startswith(self._public_starts):
            return False
        # "/docs/../admin" must not ride on the "/docs" prefix, whatever normalises it later.
        return not ("/./" in path or "/../" in path or path.endswith(("/.", "/..")))


class MiddlewareOptionsFields(TypedDict, total=False):
    """The fields of :class:`MiddlewareOptions`, as the keyword arguments the framework
    integrations take in its place (``Keyguard(manager, public_paths=["/health"])``):
    typed, so that editors complete them and type checkers check them. Each means
    what the field of the same name means."""

    realm: str
    public_paths: Collection[str]
    public_prefixes: Collection[str]
    optional: bool
    environment: str | None
    required_scopes: Collection[str]
    require_https: bool
    api_key_header: str | None
    query_param_names: Collection[str]
    max_form_bytes: int
    rate_limit: Policy | str | None
    route_limits: Mapping[str, Policy | str | Sequence[Policy | str]]
    failure_limit: Policy | str | None
    legacy_rate_limit_headers: bool


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
