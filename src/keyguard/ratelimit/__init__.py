"""Rate limiting: policies, the limiter protocols, their decision, and the HTTP headers.

:class:`MemoryRateLimiter` is the embedded default (one process). The Redis
limiter, for one exact limit across processes and machines, lives in
``keyguard.ratelimit.redis`` (extra ``redis``). The algorithm (GCRA) is in
``keyguard.ratelimit.gcra``; ``docs/rate-limiting.md`` explains its semantics.
"""

from ._base import (
    AsyncRateLimiter,
    BackendErrorMode,
    PolicyState,
    RateLimitDecision,
    RateLimiter,
)
from ._headers import denial_status, rate_limit_headers, retry_after_seconds, sf_string
from ._policy import Policy
from ._select import applicable_policies
from .memory import MemoryRateLimiter

__all__ = [
    "AsyncRateLimiter",
    "BackendErrorMode",
    "MemoryRateLimiter",
    "Policy",
    "PolicyState",
    "RateLimitDecision",
    "RateLimiter",
    "applicable_policies",
    "denial_status",
    "rate_limit_headers",
    "retry_after_seconds",
    "sf_string",
]
