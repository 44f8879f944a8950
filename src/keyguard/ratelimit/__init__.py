"""Rate limiting: policies, the limiter protocols and their decision."""

from ._base import AsyncRateLimiter, PolicyState, RateLimitDecision, RateLimiter
from ._policy import Policy

__all__ = ["AsyncRateLimiter", "Policy", "PolicyState", "RateLimitDecision", "RateLimiter"]
