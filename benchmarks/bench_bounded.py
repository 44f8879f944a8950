"""Every bounded structure on the request path evicts in O(1): its cost per operation at
1,000, 100,000 and 1,000,000 distinct keys.

Each structure is sized to hold ``N`` keys and filled with ``N`` distinct keys;
then every timed operation brings a key it has never seen, so each one evicts
the oldest (the worst case: a flood of new keys). Its cost must stay flat
from a thousand keys to a million.

- the token memo (``TokenMemo.remember``),
- the verified-secret cache (``VerifiedSecretCache.remember``, a failure: the
  half an attacker fills),
- the lookup cache (``CachedKeyStore.get``, a miss that stores the record
  fetched from a store that answers at once),
- the memory rate limiter (``MemoryRateLimiter.hit``; the failure budget is
  the same limiter, keyed by address),
- the blocked addresses (``RateLimits.block``, which holds 10,000: here the
  addresses blocked before, not its size, are ``N``).

Beside them, the floor (a bare ``OrderedDict`` insert and ``popitem``: what
a million entries cost in CPU caches alone, a few times a thousand's) and
the reference for O(n) (evicting the oldest by a scan). Sizes are timed
interleaved, and each row is the best of several rounds. The garbage
collector is paused while a structure is filled and timed: the rows are the
structures' own cost (a full collection over a million entries is the
tail-latency benchmark's subject).
"""

from __future__ import annotations

import gc
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from _harness import Row

from keyguard import MiddlewareOptions, Policy, Principal, TokenMemo, VerifiedSecretCache
from keyguard._limits import RateLimits
from keyguard._verify import Verified
from keyguard.ratelimit import MemoryRateLimiter
from keyguard.stores import CachedKeyStore
from keyguard.testing import sample_record

GROUP = "bounded structures"
SIZES = (1_000, 100_000, 1_000_000)
#: Timed rounds per structure: each times BLOCK new keys at every size, interleaved, and a
#: size's row is its best round (the machine is shared: the best round is the least disturbed).
ROUNDS = 5
BLOCK = 2_000


class InstantStore:
    """A key store that answers every lookup at once with the same record."""

    def __init__(self) -> None:
        self.record = sample_record()

    def get(self, key_id: str) -> Any:
        return self.record

    def add(self, record: Any) -> None: ...
    def update(self, key_id: str, changes: Any) -> Any: ...
    def revoke(self, key_id: str, at: Any) -> Any: ...
    def list_keys(self, owner: str | None = None) -> Any: ...
    def touch(self, last_used: Any) -> None: ...
    def close(self) -> None: ...


def _ordered_dict(size: int) -> Callable[[str], object]:
    entries: OrderedDict[str, int] = OrderedDict()

    def insert(key: str) -> None:
        entries[key] = 1
        if len(entries) > size:
            entries.popitem(last=False)

    return insert


def _scan(size: int) -> Callable[[str], object]:
    """The reference for what O(n) looks like: evict the oldest by scanning for it."""
    entries: dict[str, int] = {}
    clock = iter(range(1 << 62))

    def insert(key: str) -> None:
        entries[key] = next(clock)
        if len(entries) > size:
            del entries[min(entries, key=entries.__getitem__)]

    return insert


def _structures() -> dict[str, Callable[[int], Callable[[str], object]]]:
    """Per structure, a maker of one sized to hold ``size`` keys, as its operation on a key."""
    verified = Verified(Principal.from_record(sample_record()), None)
    verifier: Any = None
    policies = (Policy("default", 1_000_000, 60.0),)

    def memo(size: int) -> Callable[[str], object]:
        made = TokenMemo(max_size=size)
        return lambda k: made.remember(k.encode(), verifier, verified)

    def secrets(size: int) -> Callable[[str], object]:
        made = VerifiedSecretCache(max_size=size)
        return lambda k: made.remember(k, "$2b$stored", "wrong", ok=False)

    def cache(size: int) -> Callable[[str], object]:
        return CachedKeyStore(InstantStore(), max_size=size, ttl=10.0).get

    def limiter(size: int) -> Callable[[str], object]:
        made = MemoryRateLimiter(max_keys=size)
        return lambda k: made.hit(k, policies)

    def blocked(size: int) -> Callable[[str], object]:
        made = RateLimits(MiddlewareOptions(), time.monotonic)
        return lambda k: made.block(k, 60.0)

    return {
        "TokenMemo.remember": memo,
        "VerifiedSecretCache.remember (a failure)": secrets,
        "CachedKeyStore.get (a miss, then stored)": cache,
        "MemoryRateLimiter.hit": limiter,
        "RateLimits.block (holds 10,000)": blocked,
        "floor: OrderedDict insert + popitem": _ordered_dict,
    }


def _best_costs(
    make: Callable[[int], Callable[[str], object]], keys: list[str], block: int, rounds: int
) -> dict[int, float]:
    """µs per operation on a new key at each size: the best of ``rounds`` interleaved blocks."""
    gc.collect()
    gc.disable()
    try:
        operations = {}
        for size in SIZES:
            operation = operations[size] = make(size)
            for key in keys[:size]:
                operation(key)
        best = dict.fromkeys(SIZES, float("inf"))
        fresh = iter(keys[max(SIZES) :])
        for _ in range(rounds):
            for size in SIZES:
                batch = [next(fresh) for _ in range(block)]
                operation = operations[size]
                started = time.perf_counter()
                for key in batch:
                    operation(key)
                best[size] = min(best[size], (time.perf_counter() - started) / block * 1e6)
        del operations
    finally:
        gc.enable()
        gc.collect()
    return best


def rows() -> Iterator[Row]:
    keys = [f"key{i:08d}" for i in range(max(SIZES) + len(SIZES) * ROUNDS * BLOCK)]
    for name, make in _structures().items():
        costs = _best_costs(make, keys, BLOCK, ROUNDS)
        for size in SIZES:
            yield Row(GROUP, f"{name}, {size:,} keys", costs[size])
        yield Row(
            GROUP,
            f"{name}: at 1,000,000 / at 1,000",
            costs[SIZES[-1]] / costs[SIZES[0]],
            unit="x",
            note="O(1): as the floor's",
        )
    costs = _best_costs(_scan, keys, 2, 1)
    for size in SIZES:
        yield Row(GROUP, f"reference O(n): evict by a scan, {size:,} keys", costs[size])
