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
from collections.abc import Callable, Sequence

from ._errors import StorageError
from ._flow import Denial, DenialReason, Flow
from ._options import MiddlewareOptions
from .ratelimit import (
    Policy,
    PolicyState,
    RateLimitDecision,
    applicable_policies,
    rate_limit_headers,
)

__all__ = [
    "FAILURE_REASONS",
    "HeaderRenderer",
    "RateLimits",
    "blocked_denial",
    "failure_flow",
    "headers_of",
    "limited_denial",
    "limiter_unavailable",
]

Headers = Sequence[tuple[str, str]]

#: Refusals that count against the failure budget of the client's address.
FAILURE_REASONS = frozenset(
    {
        DenialReason.MALFORMED_KEY,
        DenialReason.UNKNOWN_KEY,
        DenialReason.WRONG_SECRET,
        DenialReason.WRONG_ENVIRONMENT,
        DenialReason.REVOKED,
        DenialReason.EXPIRED,
    }
)
_MAX_BLOCKED = 10_000
_MAX_POLICIES = 4096


class RateLimits:
    """The rate-limit side of one middleware: its policies and the addresses it blocks.

    An address whose failure budget ran out is remembered here until the
    limiter said it may try again, so that while it is blocked its requests
    cost neither a limiter call nor a key lookup.
    """

    __slots__ = (
        "_blocked",
        "_default_only",
        "_has_routes",
        "_monotonic",
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
        self._blocked: dict[str, float] = {}
        #: The policies of a request with neither a key policy nor route policies.
        self._default_only: tuple[Policy, ...] = () if self.default is None else (self.default,)
        self._has_routes = bool(options._routes)

    def __repr__(self) -> str:
        return f"RateLimits(default={self.default!r}, failure={self.failure!r})"

    def policies(self, key_policy: Policy | None, method: str, path: str) -> tuple[Policy, ...]:
        if not self._has_routes:
            return self._default_only if key_policy is None else (key_policy,)
        routes = self.options.route_policies(method, path)
        try:
            return applicable_policies(self.default, key_policy, routes)
        except ValueError:
            # A key's own policy named like a route's: the key's wins, the clash is dropped.
            base = key_policy if key_policy is not None else self.default
            return applicable_policies(
                self.default, key_policy, [r for r in routes if base is None or r.name != base.name]
            )

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
        now = self._monotonic()
        blocked = self._blocked
        if len(blocked) >= _MAX_BLOCKED:
            for stale in [a for a, until in blocked.items() if until <= now]:
                blocked.pop(stale, None)
            while len(blocked) >= _MAX_BLOCKED:
                blocked.pop(next(iter(blocked)), None)
        blocked[address] = now + seconds


def headers_of(decision: RateLimitDecision, legacy: bool) -> list[tuple[str, str]]:
    """The rate-limit headers of ``decision``, names in lowercase (as ASGI wants them)."""
    return [(name.lower(), value) for name, value in rate_limit_headers(decision, legacy=legacy)]


#: A policy's constant header parts: the policy, its RateLimit-Policy value, the RateLimit
#: value up to ``r=`` (text and bytes), and the RateLimit-Policy header as ASGI bytes.
_Parts = tuple[Policy | None, str, str, bytes, tuple[bytes, bytes]]


class HeaderRenderer:
    """The rate-limit headers of an admitted request, as :func:`headers_of` makes them,
    with each policy's constant parts made once: this runs on every limited response.

    Args:
        legacy: Also the ``X-RateLimit-*`` headers (then every decision takes
            the general path).
    """

    __slots__ = ("_last", "_legacy", "_policies")

    def __init__(self, legacy: bool) -> None:
        self._legacy = legacy
        # The parts of the last policy looked up (one tuple, so threads never mix two):
        # text() and raw() check it before _parts().
        self._last: _Parts = (None, "", "", b"", (b"", b""))
        self._policies: dict[int, _Parts] = {}

    def __repr__(self) -> str:
        return f"HeaderRenderer(legacy={self._legacy})"

    def _parts(self, policy: Policy) -> _Parts:
        cached = self._policies.get(id(policy))
        if cached is not None and cached[0] is policy:
            self._last = cached
            return cached
        if len(self._policies) >= _MAX_POLICIES:
            self._policies.clear()
        [(_, policy_field), (_, limit_field)] = rate_limit_headers(
            RateLimitDecision(True, (PolicyState(policy, 0, 0.0),))
        )
        prefix = limit_field[: limit_field.rindex(";r=")]
        parts = (
            policy,
            policy_field,
            prefix + ";r=",
            (prefix + ";r=").encode("latin-1"),
            (b"ratelimit-policy", policy_field.encode("latin-1")),
        )
        self._policies[id(policy)] = self._last = parts
        return parts

    def text(self, decision: RateLimitDecision) -> list[tuple[str, str]]:
        """Lowercase ``(name, value)`` string pairs (WSGI)."""
        states = decision.states
        if len(states) != 1 or self._legacy:
            return headers_of(decision, self._legacy)
        policy, remaining, reset = states[0]
        last = self._last
        parts = last if last[0] is policy else self._parts(policy)
        limit = f"{parts[2]}{remaining};t={math.ceil(reset)}"
        return [("ratelimit-policy", parts[1]), ("ratelimit", limit)]

    def raw(self, decision: RateLimitDecision) -> list[tuple[bytes, bytes]]:
        """Lowercase ``(name, value)`` byte pairs (ASGI)."""
        states = decision.states
        if len(states) != 1 or self._legacy:
            return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.text(decision)]
        policy, remaining, reset = states[0]
        last = self._last
        parts = last if last[0] is policy else self._parts(policy)
        return [parts[4], (b"ratelimit", b"%b%d;t=%d" % (parts[3], remaining, math.ceil(reset)))]


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
        f"rate limit exceeded; retry after {max(1, math.ceil(decision.retry_after))} s",
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
    wait = max(1, math.ceil(seconds))
    return Denial(
        DenialReason.RATE_LIMITED,
        f"too many failed authentications from this address; retry after {wait} s",
        retry_after=seconds,
    )


def failure_flow(limits: RateLimits, address: str, denial: Denial) -> Flow[Denial]:
    """Count a refused key against its address's failure budget; 429 once it is used up."""
    if limits.failure is None or denial.reason not in FAILURE_REASONS:
        return denial
    try:
        decision: RateLimitDecision = yield (
            "limiter",
            "hit",
            ("auth-failures:" + address, (limits.failure,)),
        )
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
