"""Rate limiting inside the request flow: which policies apply, and the brute-force watch.

The request flow (``_request.py``) counts an accepted request (a key, or an
anonymous one) against :meth:`RateLimits.policies`, and calls
:func:`failure_flow` after a key was refused; both ask the limiter with
``("limiter", "hit", ...)`` calls, so
the ASGI middleware awaits ``limiter.ahit`` and the WSGI one calls
``limiter.hit``. The limiter itself (GCRA, memory or Redis) and the header
format live in :mod:`keyguard.ratelimit`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from contextlib import suppress

from ._denials import RULES, Denial, DenialReason, retry_after_seconds
from ._drive import Flow
from ._errors import StorageError
from ._options import MiddlewareOptions
from ._steps import HitLimit
from .ratelimit import Policy, RateLimitDecision, applicable_policies, rate_limit_headers
from .ratelimit._base import DistinctPolicies

__all__ = [
    "RateLimits",
    "admitted_headers",
    "admitted_raw_headers",
    "blocked_denial",
    "failure_flow",
    "headers_of",
    "limited_denial",
    "limiter_unavailable",
]

_MAX_BLOCKED = 10_000


class RateLimits:
    """The rate-limit side of one middleware: its policies and the addresses it blocks.

    An address whose failure budget ran out is remembered here until the
    limiter said it may try again, so that while it is blocked its requests
    cost neither a limiter call nor a key lookup.
    """

    __slots__ = (
        "_blocked",
        "_default_only",
        "_monotonic",
        "_routes",
        "default",
        "failure",
        "legacy",
        "options",
    )

    def __init__(self, options: MiddlewareOptions, monotonic: Callable[[], float]) -> None:
        self.options = options
        self.default = options._default_policy
        self.failure = options._failure_policy
        self.legacy = options.legacy_rate_limit_headers
        self._monotonic = monotonic
        self._blocked: OrderedDict[str, float] = OrderedDict()
        #: The policies of a request with neither a key policy nor route policies.
        self._default_only: tuple[Policy, ...] = () if self.default is None else (self.default,)
        #: Per route, longest first: (method or None, path, path + "/", its own policies, and
        #: those with the default): what a request needs is found once, not put together.
        self._routes = tuple(
            (
                method,
                path,
                path if path.endswith("/") else path + "/",
                own,
                DistinctPolicies(applicable_policies(self.default, None, own)),
            )
            for method, path, own in options._routes
        )

    def __repr__(self) -> str:
        return f"RateLimits(default={self.default!r}, failure={self.failure!r})"

    def policies(self, key_policy: Policy | None, method: str, path: str) -> tuple[Policy, ...]:
        """The policies of a request: the key's own or the default, and the route's
        (``applicable_policies``, with the longest route of ``options.route_limits``)."""
        for route_method, route_path, prefix, own, with_default in self._routes:
            if (route_method is None or route_method == method) and (
                path == route_path or path.startswith(prefix)
            ):
                if key_policy is None:
                    return with_default
                # A key's own policy named like a route's: the key's wins, the clash is dropped.
                name = key_policy.name
                return (key_policy, *[r for r in own if r.name != name])
        return self._default_only if key_policy is None else (key_policy,)

    def blocked_for(self, address: str) -> float:
        """Seconds ``address`` stays blocked; 0 when it is not."""
        if not self._blocked:
            return 0.0
        until = self._blocked.get(address)
        if until is None:
            return 0.0
        left = until - self._monotonic()
        if left <= 0:
            self._blocked.pop(address, None)
            return 0.0
        return left

    def block(self, address: str, seconds: float) -> None:
        """Block ``address`` for ``seconds``; past the bound, the oldest block goes, in O(1)."""
        blocked = self._blocked
        blocked[address] = self._monotonic() + seconds
        blocked.move_to_end(address)
        if len(blocked) > _MAX_BLOCKED:
            with suppress(KeyError):  # emptied by another thread meanwhile
                blocked.popitem(last=False)


def headers_of(decision: RateLimitDecision, legacy: bool) -> list[tuple[str, str]]:
    """The rate-limit headers of ``decision``, names in lowercase (as ASGI wants them)."""
    return [(name.lower(), value) for name, value in rate_limit_headers(decision, legacy=legacy)]


def admitted_headers(decision: RateLimitDecision, legacy: bool) -> list[tuple[str, str]]:
    """The rate-limit headers of an admitted request, names in lowercase, as
    :func:`~keyguard.ratelimit.rate_limit_headers` makes them: this runs on every limited
    response, so each policy's constant text was made with the policy."""
    states = decision.states
    if legacy or not states:
        return headers_of(decision, legacy)
    ceil = math.ceil
    if len(states) == 1:
        policy, remaining, reset = states[0]
        return [
            ("ratelimit-policy", policy._header_item),
            ("ratelimit", f"{policy._state_prefix}{remaining};t={ceil(reset)}"),
        ]
    items = []
    values = []
    for policy, remaining, reset in states:
        items.append(policy._header_item)
        values.append(f"{policy._state_prefix}{remaining};t={ceil(reset)}")
    return [("ratelimit-policy", ", ".join(items)), ("ratelimit", ", ".join(values))]


def admitted_raw_headers(decision: RateLimitDecision, legacy: bool) -> list[tuple[bytes, bytes]]:
    """:func:`admitted_headers` as the byte pairs ASGI sends, from each policy's bytes."""
    states = decision.states
    if legacy or not states:
        return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers_of(decision, legacy)]
    ceil = math.ceil
    if len(states) == 1:
        policy, remaining, reset = states[0]
        return [
            (b"ratelimit-policy", policy._header_item_raw),
            (b"ratelimit", b"%b%d;t=%d" % (policy._state_prefix_raw, remaining, ceil(reset))),
        ]
    items = []
    values = []
    for policy, remaining, reset in states:
        items.append(policy._header_item_raw)
        values.append(b"%b%d;t=%d" % (policy._state_prefix_raw, remaining, ceil(reset)))
    return [(b"ratelimit-policy", b", ".join(items)), (b"ratelimit", b", ".join(values))]


def limited_denial(decision: RateLimitDecision, legacy: bool, key_id: str | None) -> Denial:
    """The refusal of a request the limiter did not admit: 429, or 503 when the limiter's
    ``on_backend_error`` is ``"closed"`` and its backend failed."""
    headers = tuple(headers_of(decision, legacy))
    if decision.degraded == "closed":
        return Denial(
            DenialReason.STORE_UNAVAILABLE,
            "the rate limiter is unavailable; try again shortly",
            key_id=key_id,
            retry_after=decision.retry_after,
            headers=headers,
        )
    return Denial(
        DenialReason.RATE_LIMITED,
        f"rate limit exceeded; retry after {retry_after_seconds(decision.retry_after)} s",
        key_id=key_id,
        retry_after=decision.retry_after,
        headers=headers,
    )


def limiter_unavailable(key_id: str | None) -> Denial:
    """The 503 for a limiter that raised instead of answering (keyguard's never do)."""
    return Denial(
        DenialReason.STORE_UNAVAILABLE,
        "the rate limiter is unavailable; try again shortly",
        key_id=key_id,
        retry_after=1,
    )


def blocked_denial(seconds: float) -> Denial:
    """The 429 for an address that is still blocked after too many failures."""
    wait = retry_after_seconds(seconds)
    return Denial(
        DenialReason.RATE_LIMITED,
        f"too many failed authentications from this address; retry after {wait} s",
        retry_after=seconds,
    )


def failure_flow(limits: RateLimits, address: str, denial: Denial) -> Flow[Denial]:
    """Count a refused credential against its address's failure budget, when its reason
    spends it (see ``_denials.RULES``); 429 once the budget is used up."""
    if limits.failure is None or not RULES[denial.reason].spends_budget:
        return denial
    try:
        decision = yield from HitLimit("auth-failures:" + address, (limits.failure,))
    except StorageError:
        return denial
    if decision.allowed or decision.degraded is not None:
        return denial
    limits.block(address, decision.retry_after)
    refusal = blocked_denial(decision.retry_after)
    return Denial(
        refusal.reason,
        refusal.detail,
        key_id=denial.key_id,
        retry_after=refusal.retry_after,
        headers=tuple(headers_of(decision, limits.legacy)),
    )
