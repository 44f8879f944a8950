"""Rate limiting inside the request flow: which policies apply, and the brute-force watch.

The request flow (``_request.py``) calls :func:`admit_flow` after a key (or an
anonymous request) has been accepted, and :func:`failure_flow` after a key
was refused; both ask the limiter with ``Call("limiter", "hit", ...)``, so
the ASGI middleware awaits ``limiter.ahit`` and the WSGI one calls
``limiter.hit``. The limiter itself (GCRA, memory or Redis) and the header
format live in :mod:`keyguard.ratelimit`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ._errors import StorageError
from ._flow import Call, Denial, DenialReason, Flow
from ._options import MiddlewareOptions
from .ratelimit import Policy, RateLimitDecision, applicable_policies, rate_limit_headers

__all__ = [
    "FAILURE_REASONS",
    "RateLimits",
    "admit_flow",
    "blocked_denial",
    "failure_flow",
    "headers_of",
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
_NO_HEADERS: Headers = ()
_MAX_BLOCKED = 10_000


class RateLimits:
    """The rate-limit side of one middleware: its policies and the addresses it blocks.

    An address whose failure budget ran out is remembered here until the
    limiter said it may try again, so that while it is blocked its requests
    cost neither a limiter call nor a key lookup.
    """

    __slots__ = ("_blocked", "_monotonic", "default", "failure", "legacy", "options")

    def __init__(self, options: MiddlewareOptions, monotonic: Callable[[], float]) -> None:
        self.options = options
        self.default = options._default_policy
        self.failure = options._failure_policy
        self.legacy = options.legacy_rate_limit_headers
        self._monotonic = monotonic
        self._blocked: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"RateLimits(default={self.default!r}, failure={self.failure!r})"

    def policies(self, key_policy: Policy | None, method: str, path: str) -> tuple[Policy, ...]:
        routes = self.options.route_policies(method, path) if self.options._routes else ()
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


def _limited(decision: RateLimitDecision, headers: Headers, key_id: str | None) -> Denial:
    if decision.degraded == "closed":
        return Denial(
            DenialReason.STORE_UNAVAILABLE,
            "the rate limiter is unavailable; try again shortly",
            key_id=key_id,
            retry_after=decision.retry_after,
            headers=tuple(headers),
        )
    return Denial(
        DenialReason.RATE_LIMITED,
        f"rate limit exceeded; retry after {max(1, math.ceil(decision.retry_after))} s",
        key_id=key_id,
        retry_after=decision.retry_after,
        headers=tuple(headers),
    )


def admit_flow(
    limits: RateLimits,
    key: str,
    key_id: str | None,
    key_policy: Policy | None,
    method: str,
    path: str,
) -> Flow[tuple[Denial | None, Headers]]:
    """Count an accepted request against its policies: (refusal or None, headers to send)."""
    policies = limits.policies(key_policy, method, path)
    if not policies:
        return None, _NO_HEADERS
    try:
        decision: RateLimitDecision = yield Call("limiter", "hit", (key, policies))
    except StorageError:
        # keyguard's limiters answer with on_backend_error instead; another one may raise.
        return Denial(
            DenialReason.STORE_UNAVAILABLE,
            "the rate limiter is unavailable; try again shortly",
            key_id=key_id,
            retry_after=1,
        ), _NO_HEADERS
    headers = headers_of(decision, limits.legacy)
    if decision.allowed:
        return None, headers
    return _limited(decision, headers, key_id), _NO_HEADERS


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
        decision: RateLimitDecision = yield Call(
            "limiter", "hit", ("auth-failures:" + address, (limits.failure,))
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
