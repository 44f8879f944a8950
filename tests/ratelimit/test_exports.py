"""keyguard.ratelimit exports exactly its public names, sorted."""

from __future__ import annotations

import keyguard
import keyguard.ratelimit


def test_exports_are_sorted_and_complete() -> None:
    names = keyguard.ratelimit.__all__
    assert names == sorted(names, key=lambda n: (not n[0].isupper(), n))
    public = {n for n in vars(keyguard.ratelimit) if not n.startswith("_")}
    modules = {"gcra", "memory", "redis"}  # submodules, once imported
    assert public - modules == set(names)


def test_main_names_are_at_the_top_level() -> None:
    for name in ("AsyncRateLimiter", "MemoryRateLimiter", "RateLimitDecision", "RateLimiter"):
        assert getattr(keyguard, name) is getattr(keyguard.ratelimit, name)
        assert name in keyguard.__all__
