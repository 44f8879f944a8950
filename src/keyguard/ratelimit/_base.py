"""The rate-limiter protocols and the decision they return."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ._policy import Policy

__all__ = ["AsyncRateLimiter", "PolicyState", "RateLimitDecision", "RateLimiter"]


@dataclass(frozen=True, slots=True)
class PolicyState:
    """Where one policy stands after a hit: what the ``RateLimit`` header reports.

    Attributes:
        policy: The policy.
        remaining: Requests that could be made right now, back to back.
        reset_after: Seconds until the quota is fully available again.
    """

    policy: Policy
    remaining: int
    reset_after: float


@dataclass(frozen=True, slots=True)
class RateLimitDecision:
    """The outcome of one hit against every policy that applies, all or nothing.

    Attributes:
        allowed: True when every policy admitted the request (then each
            consumed it); False when any refused (then none consumed anything).
        states: One entry per policy, in the order given.
        retry_after: Seconds to wait before the request would be admitted;
            0 when allowed.
    """

    allowed: bool
    states: tuple[PolicyState, ...]
    retry_after: float = 0.0


@runtime_checkable
class RateLimiter(Protocol):
    """**Protocol**: a synchronous rate limiter."""

    def hit(self, key: str, policies: Sequence[Policy], cost: int = 1) -> RateLimitDecision:
        """Count one request (of ``cost``) for ``key`` against all ``policies`` at once.

        ``key`` is a key_id or a client address, never a token.

        Raises:
            RateLimitBackendError: The backend failed.
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
