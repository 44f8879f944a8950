"""The headers, read back by an independent Structured Field parser (http_sfv)."""

from __future__ import annotations

import http_sfv
import pytest

from keyguard.ratelimit import (
    MemoryRateLimiter,
    Policy,
    PolicyState,
    RateLimitDecision,
    denial_status,
    rate_limit_headers,
    retry_after_seconds,
    sf_string,
)
from keyguard.testing import FakeClock


def parse_list(value: str) -> list[tuple[str, dict[str, object]]]:
    """Each member's value (which must be a String, not a Token) and parameters."""
    field = http_sfv.List()
    field.parse(value.encode("ascii"))
    members = []
    for item in field:
        assert type(item.value) is str, f"{item.value!r} must be a String, not a Token"
        members.append((item.value, dict(item.params)))
    return members


def test_the_example_of_the_draft() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock.monotonic)
    policy = Policy("default", quota=100, window=60)
    for _ in range(3):
        decision = limiter.hit("k", [policy])
    headers = rate_limit_headers(decision)
    assert headers == [
        ("RateLimit-Policy", '"default";q=100;w=60'),
        ("RateLimit", '"default";r=97;t=2'),
    ]
    assert parse_list(headers[0][1]) == [("default", {"q": 100, "w": 60})]
    assert parse_list(headers[1][1]) == [("default", {"r": 97, "t": 2})]


def test_several_policies_and_a_denial() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock.monotonic)
    policies = [
        Policy("default", 100, 60),
        Policy("burst.writes", 2, 1.5),
        Policy("d:ay", 5, 86400),
    ]
    limiter.hit("k", policies, cost=2)
    decision = limiter.hit("k", policies)
    assert not decision.allowed
    headers = dict(rate_limit_headers(decision))
    assert parse_list(headers["RateLimit-Policy"]) == [
        ("default", {"q": 100, "w": 60}),
        ("burst.writes", {"q": 2}),  # a window of 1.5 s cannot be an sf-integer
        ("d:ay", {"q": 5, "w": 86400}),
    ]
    assert parse_list(headers["RateLimit"]) == [
        ("default", {"r": 98, "t": 2}),
        ("burst.writes", {"r": 0, "t": 2}),
        ("d:ay", {"r": 3, "t": 34560}),
    ]
    assert headers["Retry-After"] == "1"  # 0.75 s, rounded up
    assert denial_status(decision) == 429
    assert "X-RateLimit-Limit" not in headers


def test_legacy_headers_only_when_asked() -> None:
    decision = RateLimitDecision(
        False,
        (
            PolicyState(Policy("a", 10, 60), 4, 36.0),
            PolicyState(Policy("b", 3, 1), 0, 0.2),
        ),
        retry_after=0.2,
    )
    headers = rate_limit_headers(decision, legacy=True)
    assert headers[2:] == [
        ("Retry-After", "1"),
        ("X-RateLimit-Limit", "3"),
        ("X-RateLimit-Remaining", "0"),
        ("X-RateLimit-Reset", "1"),
    ]
    assert not any(name.startswith("X-") for name, _ in rate_limit_headers(decision))


@pytest.mark.parametrize(
    ("seconds", "header"),
    [
        pytest.param(0.0, 1, id="zero-is-one"),
        pytest.param(0.001, 1, id="a-millisecond"),
        pytest.param(1.0, 1, id="whole"),
        pytest.param(1.001, 2, id="just-over"),
        pytest.param(59.5, 60, id="half"),
    ],
)
def test_retry_after_rounds_up(seconds: float, header: int) -> None:
    assert retry_after_seconds(seconds) == header


def test_degraded_decisions() -> None:
    closed = RateLimitDecision(False, (), 2.5, "closed")
    assert denial_status(closed) == 503
    assert rate_limit_headers(closed) == [("Retry-After", "3")]
    assert rate_limit_headers(RateLimitDecision(True, (), 0.0, "open")) == []
    assert denial_status(RateLimitDecision(False, (), 1.0, "local")) == 429


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("default", id="plain"),
        pytest.param('say "hi"', id="quotes"),
        pytest.param("back\\slash", id="backslash"),
        pytest.param("", id="empty"),
        pytest.param(" ~!#$%&'()*+,-./:;<=>?@[]^_`{|}", id="punctuation"),
    ],
)
def test_sf_string_round_trips(value: str) -> None:
    field = http_sfv.Item()
    field.parse(sf_string(value).encode("ascii"))
    assert field.value == value
    assert type(field.value) is str


@pytest.mark.parametrize(
    "value", [pytest.param("tab\there", id="tab"), pytest.param("é", id="utf8")]
)
def test_sf_string_refuses_what_it_cannot_carry(value: str) -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        sf_string(value)


def test_decision_is_true_when_allowed() -> None:
    assert RateLimitDecision(True, ())
    assert not RateLimitDecision(False, (), 1.0)
