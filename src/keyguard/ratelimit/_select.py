"""Which policies apply to a request: the default or the key's own, plus the route's."""

from __future__ import annotations

from collections.abc import Sequence

from ._policy import Policy

__all__ = ["applicable_policies"]


def applicable_policies(
    default: Policy | None,
    key_policy: Policy | None = None,
    route_policies: Sequence[Policy] = (),
) -> tuple[Policy, ...]:
    """The policies one request is checked against, in one call, all or nothing.

    A key's own policy (``KeyRecord.rate_limit``) replaces the default for
    that key; route policies apply on top of whichever of the two applies.
    State is kept per key and policy *name*: routes whose policies share a
    name share one budget, so give each route's policy its own name when
    each route should have its own.

    Args:
        default: The middleware's policy for every key, or None for no default.
        key_policy: The key's override, or None.
        route_policies: Extra policies of the route being called.

    Raises:
        ValueError: Two of the policies share a name.
    """
    base = key_policy if key_policy is not None else default
    if not route_policies:
        return () if base is None else (base,)
    policies = tuple(route_policies) if base is None else (base, *route_policies)
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise ValueError(
            f"policy names must differ within one request, got {names}: rename the route "
            f"policy that repeats the default's or the key's name"
        )
    return policies
