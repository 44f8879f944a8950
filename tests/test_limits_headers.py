"""The middleware's rate limits equal their references: its RateLimit headers (each policy's
text made once) keyguard.ratelimit.rate_limit_headers, and its policies of a request (made
once per route) applicable_policies over the options' routes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from keyguard import MiddlewareOptions
from keyguard._limits import RateLimits, admitted_headers, admitted_raw_headers, headers_of
from keyguard.ratelimit import Policy, PolicyState, RateLimitDecision, applicable_policies

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


def reference_policies(
    options: MiddlewareOptions, key_policy: Policy | None, method: str, path: str
) -> tuple[Policy, ...]:
    """The policies of a request as the options define them, put together on each call."""
    routes = options.route_policies(method, path)
    default = options._default_policy
    base = key_policy if key_policy is not None else default
    # A key's own policy named like a route's: the key's wins, the clash is dropped.
    kept = [r for r in routes if base is None or r.name != base.name]
    return applicable_policies(default, key_policy, kept)


#: Policies with few names, so that names clash (a key's own policy named like a route's).
_few_names = st.builds(
    Policy,
    name=st.sampled_from(["default", "a", "b", "c"]),
    quota=st.integers(1, 100),
    window=st.sampled_from([1, 60]),
)
_ROUTES = ["/", "/invoices", "/invoices/", "GET /invoices", "POST /invoices/items", "/reports"]
_PATHS = ["/", "/invoices", "/invoices/1", "/invoices/items", "/invoicesx", "/reports/daily"]


@settings(max_examples=300)
@given(
    default=st.one_of(st.none(), _few_names),
    routes=st.dictionaries(
        st.sampled_from(_ROUTES),
        st.lists(_few_names, min_size=1, max_size=2, unique_by=lambda p: p.name),
    ),
    key_policy=st.one_of(st.none(), _few_names),
    method=st.sampled_from(["GET", "POST"]),
    path=st.sampled_from(_PATHS),
)
def test_policies_of_a_request_equal_the_reference(
    default: Policy | None,
    routes: dict[str, list[Policy]],
    key_policy: Policy | None,
    method: str,
    path: str,
) -> None:
    try:
        options = MiddlewareOptions(rate_limit=default, route_limits=routes)
    except ValueError:  # a route's policy named like the default's, or like another's
        return
    limits = RateLimits(options, lambda: 0.0)
    assert limits.policies(key_policy, method, path) == reference_policies(
        options, key_policy, method, path
    )
