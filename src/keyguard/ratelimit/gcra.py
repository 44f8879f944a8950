"""GCRA, the generic cell rate algorithm, as pure integer math shared by every backend.

A policy of ``quota`` requests per ``window`` with ``burst`` ``b`` admits a
request of cost ``n`` at time ``now`` when the client's *theoretical arrival
time* (TAT) is not too far ahead::

    T        = window / quota               the emission interval
    backlog  = max(TAT - now, 0)            how far the client is ahead of its rate
    admitted   iff  backlog + n*T <= b*T
    then       TAT' = now + backlog + n*T   (nothing changes when refused)

So an idle client may send ``b`` requests back to back, after which one
request is admitted every ``T``: the sustained rate is ``quota / window``.
In any span of ``d`` seconds, at most ``b + d / T`` requests are admitted.

Everything is counted in integers so that every backend (Python here, Lua in
Redis) decides exactly alike, without rounding drift:

- time is whole milliseconds (``now_ms``);
- a backlog is in *units* of ``1/quota`` ms, so ``T`` is exactly
  ``window_ms`` units and ``b*T`` is ``capacity = burst * window_ms`` units;
- the stored state is the TAT as ``(tat_ms, tat_frac)``, meaning
  ``tat_ms + tat_frac / quota`` ms. Absolute time stays in milliseconds, so
  the numbers fit the 53 bits Lua can count exactly (a policy is limited to
  ``capacity < 2**50``, checked by :class:`~keyguard.ratelimit.Policy`).

A stored TAT further ahead than the policy's burst (the policy was made
stricter under the same name) is kept as it is: the client waits until it
is back within the burst, as the new policy's ``retry_ms`` says. Its
``remaining`` is then 0, never negative.

The Lua script in :mod:`keyguard.ratelimit.redis` is a line-by-line
transcription of :func:`check` below (:func:`check_one` per policy, then
:func:`combine`); the test suite runs both on the same
request schedules and requires identical answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from ._policy import Params, Policy

__all__ = [
    "Outcome",
    "Params",
    "Result",
    "check",
    "check_costs",
    "check_one",
    "combine",
    "cost_error",
    "params",
]


#: What :func:`check_one` returns: ``(allowed, retry_ms, remaining, reset_ms, new_tat, ahead)``.
Result = tuple[bool, int, int, int, tuple[int, int] | None, int]


class Outcome(NamedTuple):
    """What :func:`check` decided.

    ``results`` has one :func:`check_one` result per policy, in the order
    given. When the request is refused, each reports its policy as if the
    request had not been made, and none has a state to store (a refused
    request consumes nothing).
    """

    allowed: bool
    retry_ms: int
    results: list[Result]


_new_outcome = tuple.__new__


def params(policy: Policy) -> Params:
    """The integers :func:`check` needs for ``policy`` (made once, when the policy is)."""
    return policy._params


def cost_error(cost: int, policy: Params) -> ValueError:
    """The error for a ``cost`` above the policy's burst, which no wait would ever admit."""
    return ValueError(
        f"a request of cost {cost} can never pass policy {policy.name!r} "
        f"(burst {policy.capacity // policy.window_ms})"
    )


def check_costs(cost: int, policies: Sequence[Params]) -> None:
    """Refuse, before anything is counted, a ``cost`` above the burst of any of ``policies``.

    Raises:
        ValueError: ``cost`` exceeds a policy's burst (:func:`cost_error`).
    """
    for policy in policies:
        if cost * policy.window_ms > policy.capacity:
            raise cost_error(cost, policy)


def check_one(now_ms: int, cost: int, policy: Params, tat: tuple[int, int] | None) -> Result:
    """Decide one request of ``cost`` against one policy: the whole of GCRA.

    Args:
        now_ms: The current time in whole milliseconds (monotonic or Redis TIME).
        cost: What the request counts for, 0 or more (0 reports the state only).
        policy: The policy, from :func:`params`.
        tat: The client's stored state for this policy (None: none yet).

    Returns:
        ``(allowed, retry_ms, remaining, reset_ms, new_tat, ahead)``: whether
        the request is admitted; when refused, the ms to wait (rounded up);
        the requests left; the ms until the full burst is available again
        (rounded up); the state to store (None when nothing is to be written:
        refused, or cost 0); and the backlog before this request, in units.
        A refused request is reported as if it had not been made.

    Raises:
        ValueError: ``cost`` exceeds the policy's burst: no wait would ever
            let such a request through.
    """
    _, quota, window_ms, capacity = policy
    need = cost * window_ms
    if need > capacity:
        raise cost_error(cost, policy)
    # The backlog: how far the stored TAT is ahead of now, in units (0 when behind).
    # A fraction stored under a larger quota (the policy changed) is cut to what
    # this quota can hold: less than 1 ms of difference.
    if tat is None or tat[0] < now_ms:
        ahead = 0
        after = need
    else:
        tat_ms, frac = tat
        ahead = (tat_ms - now_ms) * quota + (frac if frac < quota else quota - 1)
        after = ahead + need
    if after > capacity:
        return (
            False,
            -((capacity - after) // quota),
            max(0, (capacity - ahead) // window_ms),
            -(-ahead // quota),
            None,
            ahead,
        )
    # Admitted (the common case, so no negative floor divisions): the new TAT is
    # now + after units, split into whole ms and a fraction; reset_ms rounds it up.
    whole = after // quota
    frac = after - whole * quota
    return (
        True,
        0,
        (capacity - after) // window_ms,
        whole + 1 if frac else whole,
        (now_ms + whole, frac) if cost else None,
        ahead,
    )


def check(
    now_ms: int, cost: int, policies: Sequence[Params], tats: Sequence[tuple[int, int] | None]
) -> Outcome:
    """Decide one request of ``cost`` against every policy at once, all or nothing.

    Each policy is decided by :func:`check_one`, and the results by :func:`combine`.

    Raises:
        ValueError: ``cost`` exceeds a policy's burst.
    """
    if len(policies) != len(tats):
        raise ValueError("one stored state (or None) per policy")
    results = [check_one(now_ms, cost, p, tat) for p, tat in zip(policies, tats, strict=False)]
    return combine(cost, policies, results)


def combine(cost: int, policies: Sequence[Params], results: list[Result]) -> Outcome:
    """All or nothing: the decision of one request over the :func:`check_one` result of
    each of ``policies`` (in the same order; ``results`` is reused).

    The request is admitted only when every policy admits it; otherwise it
    consumes nothing anywhere, and must wait for the policy that needs the
    longest.
    """
    for result in results:
        if not result[0]:
            break
    else:  # every policy admitted it (the common case)
        return _new_outcome(Outcome, (True, 0, results))
    retry_ms = max([result[1] for result in results])
    for i, (allowed, _, left, _, _, ahead) in enumerate(results):
        if allowed:
            # This policy would have admitted it: report it without this request.
            results[i] = (False, 0, left + cost, -(-ahead // policies[i].quota), None, ahead)
    return Outcome(False, retry_ms, results)
