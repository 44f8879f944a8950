"""Rate limits declared beside FastAPI routes (``openapi_extra=keyguard.limit("10/minute")``).

A declaration is an OpenAPI extension on the route's operation, ``x-keyguard-rate-limits``:
a list of ``{"name", "quota", "window", "burst"}`` objects (``name`` and ``burst`` only when
given). :func:`declaration` checks the policies where the route is declared, so that a bad
spec fails at import time. When the app's middleware is built (at the first request, every
route declared), :func:`route_table` walks the app's routes in the order the router tries
them and :class:`DeclaredRouteLimits` counts a request against the policies of the route
that will serve it, together with the key's (or the default) policy and ``route_limits``,
all or nothing, before the app runs.

A string policy is named after its route: its methods and path template
(``GET /invoices/{id}`` -> ``"GET-invoices-id"``), as ``route_limits`` names its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import fastapi.routing
from starlette.routing import Host, Mount, Route, compile_path

from .._limits import RateLimits
from .._options import _ROUTE_NAME_RE, MiddlewareOptions
from ..ratelimit import Policy

# FastAPI >= 0.16x keeps included routers as they are, their prefixes aside, and lists their
# routes in place with iter_route_contexts; an older one copies them into the app, prefixed.
_route_contexts: Callable[[list[Any]], Iterator[Any]] | None = getattr(
    fastapi.routing, "iter_route_contexts", None
)

__all__ = [
    "EXTENSION",
    "DeclaredRouteLimits",
    "RouteEntry",
    "checked_names",
    "declaration",
    "declared_json",
    "flat_routes",
    "method_tables",
    "route_table",
]

#: The OpenAPI extension of an operation that declares rate limits.
EXTENSION = "x-keyguard-rate-limits"
_NAMED_GROUP = re.compile(r"\(\?P<\w+>")

#: One route as the router tries it: its methods (None: every method), its path regex, its
#: path template and the policies it declares (possibly none).
RouteEntry = tuple[frozenset[str] | None, str, str, tuple[Policy, ...]]


def _as_json(policy: Policy, named: bool = True) -> dict[str, Any]:
    item: dict[str, Any] = {"name": policy.name} if named else {}
    item["quota"] = policy.quota
    item["window"] = policy.window
    if policy.burst is not None:
        item["burst"] = policy.burst
    return item


def declaration(policies: Sequence[Policy | str]) -> dict[str, Any]:
    """The ``openapi_extra`` declaring ``policies`` for a route.

    Raises:
        TypeError: A policy is neither a ``Policy`` nor a string.
        ValueError: No policy, a malformed spec, or two policies named alike.
    """
    if not policies:
        raise ValueError("a route limit needs at least one policy, such as '10/minute'")
    items = []
    for given in policies:
        if isinstance(given, Policy):
            items.append(_as_json(given))
        elif isinstance(given, str):
            try:
                parsed = Policy.parse(given, name="route")
            except ValueError as exc:
                raise ValueError(f"route limit {given!r}: {exc}") from None
            items.append(_as_json(parsed, named=False))
        else:
            raise TypeError(f"a route limit is a Policy or a spec such as '10/minute': {given!r}")
    names = [item["name"] for item in items if "name" in item]
    if len(set(names)) != len(names):
        raise ValueError(f"the limits of one route share a name: {names!r}")
    return {EXTENSION: items}


def route_name(methods: frozenset[str] | None, template: str) -> str:
    """The name of a route's first unnamed policy: ``"GET-invoices-id"``."""
    verbs = sorted((methods or frozenset()) - {"HEAD"}) or sorted(methods or ())
    return _ROUTE_NAME_RE.sub("-", " ".join([*verbs, template])).strip("-")[:64] or "root"


def declared_policies(
    extra: object, methods: frozenset[str] | None, template: str
) -> tuple[Policy, ...]:
    """The policies a route's ``openapi_extra`` declares, named."""
    if not isinstance(extra, Mapping):
        return ()
    items = extra.get(EXTENSION)
    if not items:
        return ()
    base = route_name(methods, template)
    policies = tuple(
        Policy(
            item.get("name") or (base if i == 0 else f"{base}-{i + 1}"),
            item["quota"],
            item["window"],
            item.get("burst"),
        )
        for i, item in enumerate(items)
    )
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise ValueError(f"the limits of route {template!r} share a name: {names!r}")
    return policies


def declared_json(route: Any) -> list[dict[str, Any]] | None:
    """The extension as the OpenAPI document shows it for ``route``: every policy named."""
    methods = getattr(route, "methods", None)
    policies = declared_policies(
        getattr(route, "openapi_extra", None),
        None if methods is None else frozenset(methods),
        route.path_format,
    )
    return [_as_json(policy) for policy in policies] if policies else None


def flat_routes(routes: Sequence[Any]) -> Iterator[Any]:
    """The routes in the order the router tries them, included routers' routes in place."""
    if _route_contexts is None:  # pragma: no cover (older FastAPI)
        yield from routes
    else:
        yield from _route_contexts(list(routes))


def route_table(routes: Sequence[Any], prefix: str = "") -> list[RouteEntry]:
    """Every route that may serve an HTTP request, in the order the router tries them; the
    routes of mounted apps in the mount's place, followed by the mount itself (which takes
    every path under it, so no later route sees them).

    Raises:
        ValueError: A route under a ``Host`` declares limits (which requests reach it depends
            on the Host header, which keyguard does not match).
    """
    entries: list[RouteEntry] = []
    for route in flat_routes(routes):
        kind = getattr(route, "original_route", route)
        if isinstance(kind, Route):
            given = getattr(route, "methods", None)
            methods = None if not given else frozenset(given)
            template = prefix + route.path_format
            pattern = compile_path(prefix + route.path)[0].pattern if prefix else None
            policies = declared_policies(getattr(route, "openapi_extra", None), methods, template)
            entries.append((methods, pattern or route.path_regex.pattern, template, policies))
        elif isinstance(kind, Mount):
            inner = prefix + route.path
            entries.extend(route_table(list(route.routes), inner))
            catch_all = compile_path(inner + "/{path:path}")[0].pattern
            entries.append((None, catch_all, inner + "/{path}", ()))
        elif isinstance(kind, Host) and any(e[3] for e in route_table(list(route.routes))):
            raise ValueError(
                f"a route under Host({route.host!r}) declares rate limits, which keyguard "
                f"cannot match by host: use MiddlewareOptions(route_limits=...) there"
            )
    return entries


def _alternative(index: int, pattern: str) -> str:
    body = _NAMED_GROUP.sub("(", pattern.removeprefix("^").removesuffix("$"))
    return f"(?P<r{index}>{body})"


#: Per method: one regex trying the method's routes in order, and each route's policies by
#: the name of its group.
Tables = dict[str, tuple[re.Pattern[str], dict[str, tuple[Policy, ...]]]]


def method_tables(entries: list[RouteEntry]) -> Tables:
    """Per method that some declared route takes: a regex of the routes the router would try
    for it, up to the last declared one (a later route can never take the request from it)."""
    methods = {m for entry in entries if entry[3] for m in entry[0] or ()}
    tables: Tables = {}
    for method in sorted(methods):
        candidates = [e for e in entries if e[0] is None or method in e[0]]
        last = max(i for i, e in enumerate(candidates) if e[3])
        candidates = candidates[: last + 1]
        regex = re.compile("|".join(_alternative(i, e[1]) for i, e in enumerate(candidates)))
        tables[method] = (regex, {f"r{i}": e[3] for i, e in enumerate(candidates)})
    return tables


def checked_names(entries: list[RouteEntry], options: MiddlewareOptions) -> frozenset[str]:
    """The names of the declared policies, once each clash is refused.

    Policy names identify the stored state, so a name means one policy: routes may share
    one (and its budget) only by declaring the same ``Policy``.

    Raises:
        ValueError: A declared policy is named like the default policy, like one of
            ``route_limits``, or like a different policy of another route.
    """
    taken = {p.name: f"route_limits {route!r}" for route, p in _route_limit_policies(options)}
    default = options._default_policy
    if default is not None:
        taken[default.name] = "the default policy (rate_limit)"
    seen: dict[str, tuple[Policy, str]] = {}
    for methods, _, template, policies in entries:
        where = " ".join([*sorted(methods or ()), template])
        for policy in policies:
            if policy.name in taken:
                raise ValueError(
                    f"the rate limit of {where} is named {policy.name!r} like "
                    f"{taken[policy.name]}; give it its own name (Policy(name=...))"
                )
            other = seen.setdefault(policy.name, (policy, where))
            if other[0] != policy:
                raise ValueError(
                    f"the rate limits of {other[1]} and {where} are both named "
                    f"{policy.name!r} but differ; name them apart, or declare the same Policy "
                    f"to share one budget"
                )
    return frozenset(seen)


def _route_limit_policies(options: MiddlewareOptions) -> Iterator[tuple[str, Policy]]:
    for method, path, policies in options._routes:
        for policy in policies:
            yield " ".join(filter(None, (method, path))), policy


class DeclaredRouteLimits(RateLimits):
    """:class:`~keyguard._limits.RateLimits` that also counts the limits declared beside
    routes: a request gets the policies of ``RateLimits`` (the key's or the default, and
    ``route_limits``) and those of the route that will serve it."""

    __slots__ = ("_names", "_tables")

    def __init__(
        self,
        options: MiddlewareOptions,
        monotonic: Callable[[], float],
        tables: Tables,
        names: frozenset[str],
    ) -> None:
        super().__init__(options, monotonic)
        self._tables = tables
        self._names = names

    def policies(self, key_policy: Policy | None, method: str, path: str) -> tuple[Policy, ...]:
        found = RateLimits.policies(self, key_policy, method, path)
        table = self._tables.get(method)
        if table is None:
            return found
        match = table[0].fullmatch(path)
        if match is None:
            return found
        own = table[1][match.lastgroup]  # type: ignore[index]
        if not own:
            return found
        if key_policy is not None and key_policy.name in self._names:
            # A key's own policy named like a route's: the key's wins, as with route_limits.
            own = tuple(p for p in own if p.name != key_policy.name)
        return (*found, *own)
