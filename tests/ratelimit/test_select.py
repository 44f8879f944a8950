"""Which policies apply: the default or the key's own, plus the route's."""

from __future__ import annotations

import pytest

from keyguard import KeyRecord
from keyguard.ratelimit import Policy, applicable_policies
from keyguard.testing import sample_record

DEFAULT = Policy("default", 100, 60)
ROUTE = Policy("writes", 10, 60)


def test_the_key_policy_replaces_the_default() -> None:
    record: KeyRecord = sample_record()
    assert record.rate_limit is not None
    assert applicable_policies(DEFAULT, record.rate_limit) == (record.rate_limit,)
    assert applicable_policies(DEFAULT, None) == (DEFAULT,)
    assert applicable_policies(None) == ()


def test_route_policies_add_to_it() -> None:
    own = Policy("per-key", 5, 1)
    assert applicable_policies(DEFAULT, None, [ROUTE]) == (DEFAULT, ROUTE)
    assert applicable_policies(DEFAULT, own, [ROUTE]) == (own, ROUTE)
    assert applicable_policies(None, None, [ROUTE]) == (ROUTE,)


def test_names_must_differ() -> None:
    with pytest.raises(ValueError, match="policy names must differ"):
        applicable_policies(DEFAULT, None, [Policy("default", 1, 1)])
