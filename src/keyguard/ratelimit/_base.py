"""The rate-limiter protocols and the decision they return."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple, Protocol, runtime_checkable

from ._policy import Policy

__all__ = [
    "AsyncRateLimiter",
    "BackendErrorMode",
    "DistinctPolicies",
    "PolicyState",
    "RateLimitDecision",
    "RateLimiter",
    "check_request",
]

#: What a limiter does while its backend is unreachable; see ``docs/rate-limiting.md``.
#: ``"open"`` allows every request unlimited, ``"closed"`` refuses every request
#: (the middleware answers 503), ``"local"`` limits in this process's memory.
BackendErrorMode = Literal["open", "closed", "local"]


class PolicyState(NamedTuple):
    """Where one policy stands after a hit: what the ``RateLimit`` header reports.

    A named tuple (immutable, and cheap to make on every request).

    Attributes:
        policy: The policy.
        remaining: Requests that could be made right now, back to back.
        reset_after: Seconds until the quota is fully available again.
    """

    policy: Policy
    remaining: int
    reset_after: float


class RateLimitDecision(NamedTuple):
    """The outcome of one hit against every policy that applies, all or nothing.

    A named tuple (immutable, and cheap to make on every request); true in a
    boolean context exactly when ``allowed``.

    Attributes:
        allowed: True when every policy admitted the request (then each
            consumed it); False when any refused (then none consumed anything).
        states: One entry per policy, in the order given.
        retry_after: Seconds to wait before the request would be admitted;
            0 when allowed.
        degraded: None when the backend decided. Otherwise the backend failed
            and the limiter's ``on_backend_error`` mode decided instead:
            ``"open"`` (allowed, no ``states``: nothing was counted),
            ``"closed"`` (refused, no ``states``: answer 503, not 429) or
            ``"local"`` (decided by an in-process limiter; the limit then
            applies per process, not across processes).
    """

    allowed: bool
    states: tuple[PolicyState, ...]
    retry_after: float = 0.0
    degraded: BackendErrorMode | None = None

    def __bool__(self) -> bool:
        return self.allowed


@runtime_checkable
class RateLimiter(Protocol):
    """**Protocol**: a synchronous rate limiter."""

    def hit(self, key: str, policies: Sequence[Policy], cost: int = 1) -> RateLimitDecision:
        """Count one request (of ``cost``) for ``key`` against all ``policies`` at once.

        ``key`` is a key_id or a client address, never a token: backends
        store it in plain text (in Redis, inside the key name).

        A refused request consumes nothing from any policy. ``cost`` 0
        reports the state without counting anything.

        Raises:
            ValueError: ``key`` is empty, ``cost`` is negative, two policies
                share a name, or ``cost`` exceeds a policy's burst (such a
                request could never be admitted).
            RateLimitBackendError: The backend failed. keyguard's own
                limiters never raise it: the Redis limiter answers with its
                ``on_backend_error`` mode instead (see ``decision.degraded``).
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class AsyncRateLimiter(Protocol):
    """**Protocol**: an asynchronous rate limiter; see :class:`RateLimiter`."""

    async def ahit(self, key: str, policies: Sequence[Policy], cost: int = 1) -> RateLimitDecision:
        """See :meth:`RateLimiter.hit`."""
        ...

    async def aclose(self) -> None:
        """See :meth:`RateLimiter.close`."""
        ...


def _check_names(policies: Sequence[Policy]) -> None:
    if len(policies) > 1 and len({p.name for p in policies}) != len(policies):
        raise ValueError(
            "two policies of one request share a name; names identify the stored state "
            f"and the header entries, so they must differ: {[p.name for p in policies]}"
        )


class DistinctPolicies(tuple[Policy, ...]):
    """Policies whose names differ, checked once, when made.

    A tuple cannot change, so a limiter given one need not check the names
    again on every hit (the middleware makes one per route, once).

    Raises:
        ValueError: Two policies share a name.
    """

    __slots__ = ()

    def __new__(cls, policies: Iterable[Policy]) -> DistinctPolicies:
        made = super().__new__(cls, policies)
        _check_names(made)
        return made


def check_request(key: object, policies: Sequence[Policy], cost: object) -> None:
    """The argument checks every limiter makes before counting anything.

    Raises:
        ValueError: ``key`` is empty, ``cost`` negative, or two policies share a name.
    """
    if not key or not isinstance(key, str):
        raise ValueError("a rate-limit key must be a non-empty string (a key_id or an address)")
    if isinstance(cost, bool) or not isinstance(cost, int) or cost < 0:
        raise ValueError(f"cost must be a whole number of at least 0, got {cost!r}")
    _check_names(policies)
