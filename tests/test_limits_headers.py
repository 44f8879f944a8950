"""The middleware's RateLimit headers (each policy's text made once) equal the reference,
keyguard.ratelimit.rate_limit_headers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from keyguard._limits import admitted_headers, admitted_raw_headers, headers_of
from keyguard.ratelimit import Policy, PolicyState, RateLimitDecision

_policies = st.builds(
    Policy,
    name=st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True),
    quota=st.integers(1, 10**6),
    window=st.sampled_from([0.25, 1, 1.5, 60, 3600, 86400]),
    burst=st.one_of(st.none(), st.integers(1, 1000)),
)


@st.composite
def _decisions(draw: st.DrawFn) -> RateLimitDecision:
    policies = draw(st.lists(_policies, min_size=1, max_size=3, unique_by=lambda p: p.name))
    states = tuple(
        PolicyState(
            p,
            draw(st.integers(0, p.effective_burst)),
            draw(st.floats(0, 10**6, allow_nan=False).map(lambda x: round(x, 3))),
        )
        for p in policies
    )
    return RateLimitDecision(True, states)


@settings(max_examples=300)
@given(_decisions(), st.booleans())
def test_admitted_headers_equal_the_reference(decision: RateLimitDecision, legacy: bool) -> None:
    expected = headers_of(decision, legacy)
    assert admitted_headers(decision, legacy) == expected
    assert admitted_raw_headers(decision, legacy) == [
        (k.encode("latin-1"), v.encode("latin-1")) for k, v in expected
    ]
