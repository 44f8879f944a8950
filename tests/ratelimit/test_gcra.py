"""GCRA's guarantees, for any request schedule (hypothesis, on a fake clock)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyguard.ratelimit import MemoryRateLimiter, Policy, PolicyState, RateLimitDecision, gcra
from keyguard.testing import FakeClock

PROPERTIES = settings(max_examples=150, deadline=None)


@st.composite
def policies(draw: st.DrawFn, name: str = "p") -> Policy:
    quota = draw(st.integers(1, 60))
    window_ms = draw(st.integers(1, 5000))
    burst = draw(st.none() | st.integers(1, 2 * quota))
    return Policy(name, quota=quota, window=window_ms / 1000, burst=burst)


@st.composite
def schedules(draw: st.DrawFn, burst: int, *checked: Policy) -> list[tuple[int, int]]:
    """(ms since the previous request, cost) pairs; gaps of 0 are back-to-back requests.

    Gaps are drawn around the policies' emission intervals, where the edges are.
    """
    intervals = [-(-p.window_ms // p.quota) for p in checked]
    gaps = st.one_of(
        st.just(0),
        st.integers(0, 3),
        *(st.integers(0, 2 * t) for t in intervals),
        st.integers(0, 2 * max(p.window_ms for p in checked)),
    )
    return draw(st.lists(st.tuples(gaps, st.integers(0, burst)), max_size=60))


def run(
    schedule: Sequence[tuple[int, int]], policy_list: Sequence[Policy], key: str = "k"
) -> Iterator[tuple[int, int, RateLimitDecision]]:
    clock = FakeClock(monotonic_start=5000.0)
    limiter = MemoryRateLimiter(clock=clock.monotonic)
    now_ms = 0
    for gap_ms, cost in schedule:
        clock.advance(gap_ms / 1000)
        now_ms += gap_ms
        yield now_ms, cost, limiter.hit(key, policy_list, cost)


def admitted_within_bounds(admitted: Sequence[tuple[int, int]], policy: Policy) -> None:
    """No span of time admits more than burst + span / T (in integers: units of 1/quota ms)."""
    quota, window_ms, burst = policy.quota, policy.window_ms, policy.effective_burst
    for i, (start, _) in enumerate(admitted):
        total = 0
        for end, cost in admitted[i:]:
            total += cost
            assert total * window_ms <= burst * window_ms + (end - start) * quota, (
                f"{total} admitted between {start} and {end} ms exceeds {policy}"
            )


@PROPERTIES
@given(data=st.data())
def test_admitted_never_exceed_the_policy(data: st.DataObject) -> None:
    policy = data.draw(policies())
    schedule = data.draw(schedules(policy.effective_burst, policy))
    admitted = [(t, cost) for t, cost, d in run(schedule, [policy]) if d.allowed]
    admitted_within_bounds(admitted, policy)


@PROPERTIES
@given(data=st.data())
def test_several_policies_each_hold(data: st.DataObject) -> None:
    first, second = data.draw(policies("first")), data.draw(policies("second"))
    burst = min(first.effective_burst, second.effective_burst)
    schedule = data.draw(schedules(burst, first, second))
    admitted = [(t, cost) for t, cost, d in run(schedule, [first, second]) if d.allowed]
    admitted_within_bounds(admitted, first)
    admitted_within_bounds(admitted, second)


@PROPERTIES
@given(data=st.data())
def test_a_steady_client_under_the_rate_is_never_refused(data: st.DataObject) -> None:
    policy = data.draw(policies())
    cost = data.draw(st.integers(1, policy.effective_burst))
    # One request of `cost` every cost * T or slower (T = window / quota, in whole ms here).
    interval = -(-cost * policy.window_ms // policy.quota)
    gaps = data.draw(st.lists(st.integers(interval, interval + 50), min_size=1, max_size=60))
    decisions = [d for _, _, d in run([(g, cost) for g in gaps], [policy])]
    assert all(d.allowed for d in decisions), decisions
    # ...and right after an idle period it may use its whole burst at once.
    burst = [d for _, _, d in run([(0, 1)] * policy.effective_burst, [policy])]
    assert all(d.allowed for d in burst)


@PROPERTIES
@given(data=st.data())
def test_a_refused_request_consumes_nothing(data: st.DataObject) -> None:
    """Leaving out the refused requests changes nothing for the admitted ones."""
    checked = [data.draw(policies("first"))]
    if data.draw(st.booleans()):
        checked.append(data.draw(policies("second")))
    burst = min(p.effective_burst for p in checked)
    schedule = data.draw(schedules(burst, *checked))
    full = list(run(schedule, checked))
    kept: list[tuple[int, int]] = []
    carried = 0
    for (gap, cost), (_, _, decision) in zip(schedule, full, strict=True):
        carried += gap
        if decision.allowed:
            kept.append((carried, cost))
            carried = 0
    again = [d for _, _, d in run(kept, checked)]
    assert again == [d for _, _, d in full if d.allowed]


@PROPERTIES
@given(data=st.data())
def test_waiting_retry_after_is_enough(data: st.DataObject) -> None:
    """A refused client that waits exactly retry_after is admitted (rounded up to the ms)."""
    policy = data.draw(policies())
    schedule = data.draw(schedules(policy.effective_burst, policy))
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock.monotonic)
    for gap_ms, cost in schedule:
        clock.advance(gap_ms / 1000)
        decision = limiter.hit("k", [policy], cost)
        if not decision.allowed:
            assert decision.retry_after > 0
            clock.advance(decision.retry_after - 0.001)
            assert not limiter.hit("k", [policy], cost).allowed, "retry_after is the least wait"
            clock.advance(0.001)
            assert limiter.hit("k", [policy], cost).allowed


@PROPERTIES
@given(data=st.data())
def test_check_of_one_policy_is_check_one(data: st.DataObject) -> None:
    policy = gcra.params(data.draw(policies()))
    now = data.draw(st.integers(0, 10**12))
    tat = data.draw(st.none() | st.tuples(st.integers(0, 10**12 + 10**6), st.integers(0, 100)))
    cost = data.draw(st.integers(0, policy.capacity // policy.window_ms))
    one = gcra.check_one(now, cost, policy, tat)
    assert gcra.check(now, cost, [policy], [tat]) == gcra.Outcome(one[0], one[1], [one])


def test_the_documented_bound_is_reached() -> None:
    """The bound of the properties above is tight: a burst, then one per T."""
    policy = Policy("p", quota=10, window=1, burst=5)  # T = 100 ms
    schedule = [(0, 1)] * 5 + [(100, 1)] * 10
    decisions = [d for _, _, d in run(schedule, [policy])]
    assert all(d.allowed for d in decisions)
    *_, last = run([*schedule, (99, 1)], [policy])
    assert not last[2].allowed


@pytest.mark.parametrize(
    ("quota", "window", "expected_interval_units"),
    [
        pytest.param(100, 60, 60_000, id="whole-ms-interval"),
        pytest.param(3, 1, 1000, id="one-third-second"),
        pytest.param(3000, 1, 1000, id="sub-millisecond"),
    ],
)
def test_params_are_integers(quota: int, window: float, expected_interval_units: int) -> None:
    params = gcra.params(Policy("p", quota=quota, window=window))
    assert params == gcra.Params(
        "p", quota, expected_interval_units, quota * expected_interval_units
    )
    assert all(isinstance(v, int) for v in params[1:])


def test_cost_above_burst_is_an_error() -> None:
    params = gcra.params(Policy("p", quota=10, window=1, burst=3))
    with pytest.raises(ValueError, match="can never pass policy 'p' \\(burst 3\\)"):
        gcra.check_one(0, 4, params, None)


def test_remaining_never_negative_after_a_stricter_policy() -> None:
    loose, strict = gcra.params(Policy("p", 1000, 1)), gcra.params(Policy("p", 1, 1))
    allowed, _, _, _, tat, _ = gcra.check_one(0, 1000, loose, None)
    assert allowed
    assert tat is not None
    refused = gcra.check_one(0, 1, strict, tat)
    assert refused[:4] == (False, 1000, 0, 1000)


def test_counts_stay_exact_at_large_times() -> None:
    """Redis TIME is ~1.7e12 ms; the math must not lose a unit there (no floats)."""
    params = gcra.params(Policy("p", quota=7, window=3))  # T = 428.57 ms
    now = 1_780_000_000_123
    tat = None
    for step in itertools.count():
        allowed, _, remaining, _, new_tat, _ = gcra.check_one(now, 1, params, tat)
        if not allowed:
            break
        tat = new_tat
        assert remaining == 6 - step
    assert step == 7
    assert tat == (now + 3000, 0)


def reference_hits(
    schedule: Sequence[tuple[int, int]], policy_list: Sequence[Policy]
) -> Iterator[RateLimitDecision]:
    """What a limiter must answer, straight from gcra.check: the reference model."""
    now_ms = 5_000_000
    tats: dict[str, tuple[int, int] | None] = {p.name: None for p in policy_list}
    for gap_ms, cost in schedule:
        now_ms += gap_ms
        params = [gcra.params(p) for p in policy_list]
        outcome = gcra.check(now_ms, cost, params, [tats[p.name] for p in policy_list])
        if outcome.allowed and cost:
            for policy, result in zip(policy_list, outcome.results, strict=True):
                tats[policy.name] = result[4]
        yield RateLimitDecision(
            outcome.allowed,
            tuple(
                PolicyState(policy, result[2], result[3] / 1000)
                for policy, result in zip(policy_list, outcome.results, strict=True)
            ),
            outcome.retry_ms / 1000,
        )


@PROPERTIES
@given(data=st.data())
def test_several_policies_answer_as_the_reference(data: st.DataObject) -> None:
    """The memory limiter's path for several policies decides exactly as gcra.check."""
    checked = [data.draw(policies(name)) for name in ("first", "second", "third")]
    checked = checked[: data.draw(st.integers(2, 3))]
    burst = min(p.effective_burst for p in checked)
    schedule = data.draw(schedules(burst, *checked))
    got = [d for _, _, d in run(schedule, checked)]
    assert got == list(reference_hits(schedule, checked))
    assert all(type(d) is RateLimitDecision and d.degraded is None for d in got)
    assert all(type(s) is PolicyState for d in got for s in d.states)


@PROPERTIES
@given(data=st.data())
def test_combine_is_the_all_or_nothing_of_check_one(data: st.DataObject) -> None:
    checked = [gcra.params(data.draw(policies(n))) for n in ("a", "b", "c")]
    now = data.draw(st.integers(0, 10**9))
    tats = [
        data.draw(st.none() | st.tuples(st.integers(0, 10**9 + 10**6), st.integers(0, 100)))
        for _ in checked
    ]
    cost = data.draw(st.integers(0, min(p.capacity // p.window_ms for p in checked)))
    ones = [gcra.check_one(now, cost, p, t) for p, t in zip(checked, tats, strict=True)]
    outcome = gcra.combine(cost, checked, list(ones))
    assert outcome == gcra.check(now, cost, checked, tats)
    assert outcome.allowed == all(one[0] for one in ones)
    if outcome.allowed:
        assert outcome.results == ones
    else:
        assert outcome.retry_ms == max(one[1] for one in ones)
        assert all(result[4] is None for result in outcome.results)  # nothing consumed
