"""Policy: validated on construction, parsed from text."""

from __future__ import annotations

import math
from typing import Any

import pytest

from keyguard.ratelimit import Policy


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"name": ""}, "policy name", id="empty-name"),
        pytest.param({"name": "has space"}, "policy name", id="space-in-name"),
        pytest.param({"name": 'quo"te'}, "policy name", id="quote-in-name"),
        pytest.param({"name": "x" * 65}, "policy name", id="name-too-long"),
        pytest.param({"name": 7}, "policy name", id="name-not-text"),
        pytest.param({"quota": 0}, "quota", id="zero-quota"),
        pytest.param({"quota": -5}, "quota", id="negative-quota"),
        pytest.param({"quota": 2.5}, "quota", id="fractional-quota"),
        pytest.param({"quota": True}, "quota", id="bool-quota"),
        pytest.param({"window": 0}, "window", id="zero-window"),
        pytest.param({"window": -60}, "window", id="negative-window"),
        pytest.param({"window": math.nan}, "window", id="nan-window"),
        pytest.param({"window": math.inf}, "window", id="infinite-window"),
        pytest.param({"window": "60"}, "window", id="text-window"),
        pytest.param({"window": 0.0004}, "whole number of milliseconds", id="sub-ms-window"),
        pytest.param({"window": 1.0005}, "whole number of milliseconds", id="half-ms-window"),
        pytest.param({"burst": 0}, "burst", id="zero-burst"),
        pytest.param({"burst": 1.5}, "burst", id="fractional-burst"),
        pytest.param({"burst": False}, "burst", id="bool-burst"),
        pytest.param(
            {"quota": 10**9, "window": 86400 * 365}, "too large to count exactly", id="huge"
        ),
    ],
)
def test_bad_policies(kwargs: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {"name": "default", "quota": 100, "window": 60}
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Policy(**fields)


@pytest.mark.parametrize(
    ("spec", "quota", "window", "burst"),
    [
        pytest.param("100/minute", 100, 60, None, id="minute"),
        pytest.param("100/m", 100, 60, None, id="short-unit"),
        pytest.param("10/5minutes", 10, 300, None, id="several-units"),
        pytest.param(" 5 / second ", 5, 1, None, id="spaces"),
        pytest.param("1000/day", 1000, 86400, None, id="day"),
        pytest.param("100/60s;burst=10", 100, 60, 10, id="to-spec-form"),
        pytest.param("3/0.5s", 3, 0.5, None, id="half-second"),
    ],
)
def test_parse(spec: str, quota: int, window: float, burst: int | None) -> None:
    policy = Policy.parse(spec)
    assert (policy.name, policy.quota, policy.window, policy.burst) == (
        "default",
        quota,
        window,
        burst,
    )
    assert Policy.parse(policy.to_spec()) == policy


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param("", id="empty"),
        pytest.param("100", id="no-window"),
        pytest.param("100/fortnight", id="unknown-unit"),
        pytest.param("-1/minute", id="negative"),
        pytest.param("0/minute", id="zero"),
        pytest.param("1/0.0001s", id="sub-millisecond"),
    ],
)
def test_parse_refuses(spec: str) -> None:
    with pytest.raises(ValueError, match=r"rate limit must look like|policy"):
        Policy.parse(spec)


def test_derived_values() -> None:
    assert Policy("p", 100, 60).effective_burst == 100
    assert Policy("p", 100, 60, burst=7).effective_burst == 7
    assert Policy("p", 3, 0.1 * 3).window_ms == 300  # float noise is not a fraction of a ms
    assert Policy("p", 1, 1.5).window_ms == 1500
