"""The HTTP side of a decision: ``RateLimit-Policy``, ``RateLimit``, ``Retry-After``, status.

The fields follow draft-ietf-httpapi-ratelimit-headers-10: both are
Structured Field Lists (RFC 9651) whose members are the policy names as
Strings, with parameters::

    RateLimit-Policy: "default";q=100;w=60
    RateLimit: "default";r=57;t=2

``q`` is the quota, ``w`` the window in seconds (left out when the window is
not a whole number of seconds, since the field only takes integers), ``r``
the requests left now (at most the burst) and ``t`` the seconds, rounded up,
until the full burst is available again. With several policies, each is one
member of each list, in the order they were checked.
"""

from __future__ import annotations

import math
import re

from ._base import PolicyState, RateLimitDecision

__all__ = ["denial_status", "rate_limit_headers", "retry_after_seconds", "sf_string"]

_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]")


def sf_string(value: str) -> str:
    """``value`` serialized as a Structured Field String (RFC 9651, section 4.1.6).

    Raises:
        ValueError: ``value`` has a character outside printable ASCII.
    """
    if _NOT_PRINTABLE_ASCII.search(value):
        raise ValueError(f"a Structured Field String takes printable ASCII only, got {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _state_item(state: PolicyState) -> str:
    return f"{state.policy._state_prefix}{state.remaining};t={math.ceil(state.reset_after)}"


def retry_after_seconds(seconds: float) -> int:
    """Whole seconds for ``Retry-After``: rounded up, at least 1.

    Rounding down would tell the client to come back before it can succeed.
    """
    return max(1, math.ceil(seconds))


def denial_status(decision: RateLimitDecision) -> int:
    """The HTTP status of a refused request: 429, or 503 when the backend was
    unreachable and ``on_backend_error="closed"`` refused it."""
    return 503 if decision.degraded == "closed" else 429


def rate_limit_headers(
    decision: RateLimitDecision, *, legacy: bool = False
) -> list[tuple[str, str]]:
    """The response headers for ``decision``.

    ``RateLimit-Policy`` and ``RateLimit`` for every policy the decision
    reports, and ``Retry-After`` when the request is refused. A decision made
    without the backend under ``on_backend_error="open"`` or ``"closed"``
    reports no policies (nothing was counted), so it gets none of the first
    two.

    Args:
        decision: What the limiter decided.
        legacy: Also add ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and
            ``X-RateLimit-Reset`` (seconds from now) for the policy with the
            fewest requests left, for clients written against those.

    Returns:
        ``(name, value)`` pairs, names in their usual case (lowercase them for ASGI).
    """
    headers: list[tuple[str, str]] = []
    states = decision.states
    if len(states) == 1:
        headers.append(("RateLimit-Policy", states[0].policy._header_item))
        headers.append(("RateLimit", _state_item(states[0])))
    elif states:
        headers.append(("RateLimit-Policy", ", ".join([s.policy._header_item for s in states])))
        headers.append(("RateLimit", ", ".join([_state_item(s) for s in states])))
    if not decision.allowed:
        headers.append(("Retry-After", str(retry_after_seconds(decision.retry_after))))
    if legacy and states:
        tightest = min(states, key=lambda s: s.remaining)
        headers.append(("X-RateLimit-Limit", str(tightest.policy.quota)))
        headers.append(("X-RateLimit-Remaining", str(tightest.remaining)))
        headers.append(("X-RateLimit-Reset", str(math.ceil(tightest.reset_after))))
    return headers
